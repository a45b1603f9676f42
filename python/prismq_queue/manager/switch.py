"""The rollback switch: ``create_task_manager`` returns the queue-backed manager or the in-memory one."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Union

from .._prismq_queue import Queue
from ..errors import InvalidArgument
from .base import BackgroundTaskManager
from .queued import QueuedTaskManager

log = logging.getLogger("prismq_queue.manager")

_TRUE = {"1", "true", "yes", "on", "queue"}
_FALSE = {"0", "false", "no", "off", "", "legacy", "memory"}


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidArgument(
        f"{name}={raw!r} is not understood: use 1/true/yes/on for the queue-backed manager, "
        "0/false/no/off for the in-memory one"
    )


def create_task_manager(
    registry: Any,
    *,
    use_queue: Optional[bool] = None,
    queue: Union[Queue, str, os.PathLike[str], None] = None,
    legacy_factory: Optional[Callable[[Any], Any]] = None,
    **options: Any,
) -> Any:
    """The rollback switch: a ``QueuedTaskManager`` or the in-memory manager.

    ``use_queue``: True or False; when None, the environment variable ``PRISMQ_USE_QUEUE``
    decides (1/true/yes/on: queue; 0/false/no/off or unset: in-memory). ``queue``: a ``Queue`` or
    a path; when None, ``PRISMQ_DB`` or ``prismq_queue.db``. ``legacy_factory(registry)`` builds
    the in-memory manager (the app's own class); by default the package's ``BackgroundTaskManager``.
    ``options`` go to ``QueuedTaskManager`` and are ignored by the in-memory one, so one call site
    serves both. Switching back to the in-memory manager loses no durable task: they wait in the
    file until the queue is used again (or a worker process drains them).
    """
    if use_queue is None:
        use_queue = _env_flag("PRISMQ_USE_QUEUE")
    if not use_queue:
        factory = legacy_factory or BackgroundTaskManager
        if options:
            log.debug("in-memory task manager: ignoring queue options %s", sorted(options))
        return factory(registry)
    if queue is None:
        queue = os.environ.get("PRISMQ_DB") or "prismq_queue.db"
    return QueuedTaskManager(queue, registry, **options)
