"""The defaults the core applies are exported by the package, so the CLI and the web models
show the same values instead of restating them as literals."""

from __future__ import annotations

import prismq_queue
from prismq_queue import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Unsupported,
)


def test_defaults_are_the_ones_enqueue_applies(queue):
    task = queue.get(queue.enqueue("t", {}))
    assert task.priority == DEFAULT_PRIORITY
    assert task.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert MIN_PRIORITY <= DEFAULT_PRIORITY <= MAX_PRIORITY
    assert DEFAULT_MAX_ATTEMPTS >= 1


def test_defaults_and_unsupported_are_public():
    for name in ("DEFAULT_PRIORITY", "DEFAULT_MAX_ATTEMPTS", "Unsupported"):
        assert name in prismq_queue.__all__
    assert issubclass(Unsupported, prismq_queue.QueueError)


def test_the_run_registrys_old_import_path_still_works():
    from prismq_queue import RunRegistry as top
    from prismq_queue.runs import Run, RunRegistry, RunStatus, utc_now

    assert RunRegistry is top and Run.__name__ == "Run" and RunStatus.COMPLETED.value == "completed"
    assert utc_now().tzinfo is not None
