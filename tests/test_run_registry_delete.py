"""RunRegistry.delete_run (the task manager adapter's run registry): one run is forgotten, the
others stay, and a second delete says there was nothing to delete; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from prismq_queue import InvalidArgument, Queue, RunRegistry
from prismq_queue.manager.runs import Run, RunStatus


def test_delete_run_forgets_one_run_and_says_whether_there_was_one(queue_url):
    with Queue(queue_url) as q:
        registry = RunRegistry(q)
        registry.add_run(Run(run_id="keep", module_id="m"))
        registry.add_run(Run(run_id="gone", module_id="m", status=RunStatus.RUNNING))
        assert registry.delete_run("gone") is True
        assert registry.get_run("gone") is None
        assert registry.get_run("keep") is not None
        assert [r.run_id for r in registry.get_runs_by_module("m")] == ["keep"]
        assert registry.get_active_runs() == [registry.get_run("keep")]
        assert registry.delete_run("gone") is False
        assert registry.delete_run("never-there") is False
        # Another handle on the same database sees the same runs.
        with Queue(queue_url) as again:
            assert RunRegistry(again).get_run("gone") is None
            assert RunRegistry(again).get_run("keep").module_id == "m"


def test_delete_run_refuses_an_id_that_is_not_text(queue_url):
    with Queue(queue_url) as q:
        registry = RunRegistry(q)
        registry.add_run(Run(run_id="1", module_id="m"))
        with pytest.raises(InvalidArgument, match="run_id"):
            registry.delete_run(1)  # type: ignore[arg-type]
        assert registry.get_run("1") is not None
