"""prismq_queue: a persistent task queue on SQLite with a Rust core.

>>> from prismq_queue import Queue
>>> with Queue(":memory:") as q:
...     task_id = q.enqueue("email.send", {"to": "a@example.com"})
...     [task] = q.claim("worker-1")
...     q.complete(task, {"sent": True})
...     q.get(task_id).status
'completed'
"""

from __future__ import annotations

from ._prismq_queue import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_PRIORITY,
    MAX_ATTEMPT_RECORDS,
    MAX_ERROR_BYTES,
    MAX_PRIORITY,
    MAX_TRACEBACK_BYTES,
    MIN_PRIORITY,
    SCHEMA_VERSION,
    SQLITE_COMPILE_OPTIONS,
    SQLITE_VERSION,
    Queue,
    Task,
    TaskAttempt,
    TaskLog,
    WorkerInfo,
    __version__,
    copy_queue,
)
from .dependencies import Group, chain, group
from .enums import Status, Strategy
from .errors import (
    DatabaseBusy,
    DatabaseError,
    HandlerAlreadyRegistered,
    HandlerNotFound,
    InvalidArgument,
    LeaseLost,
    QueueError,
    ScheduleNotFound,
    SchemaVersionError,
    TaskNotFound,
    Unsupported,
)
from .registry import HandlerInfo, TaskHandlerRegistry
from .worker import TaskCancelled, TaskContext, Worker

# Loaded on first use: they pull in pydantic, which plain queue users need not pay for.
_LAZY = {
    "WorkerSettings": "config",
    "Run": "manager",
    "RunStatus": "manager",
    "RunRegistry": "manager",
    "QueuedTaskManager": "manager",
    "BackgroundTaskManager": "manager",
    "create_task_manager": "manager",
    # a submodule: `from prismq_queue import web` or `prismq_queue.web` (needs the `web` extra)
    "web": "web",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prismq_queue' has no attribute {name!r}")
    from importlib import import_module

    loaded = import_module(f".{module}", __name__)
    value = loaded if name == module else getattr(loaded, name)
    globals()[name] = value
    return value


__all__ = [
    "Queue",
    "copy_queue",
    "Task",
    "TaskAttempt",
    "TaskLog",
    "WorkerInfo",
    "Status",
    "Strategy",
    "QueueError",
    "InvalidArgument",
    "TaskNotFound",
    "ScheduleNotFound",
    "LeaseLost",
    "SchemaVersionError",
    "DatabaseError",
    "DatabaseBusy",
    "Unsupported",
    "HandlerAlreadyRegistered",
    "HandlerNotFound",
    "TaskHandlerRegistry",
    "HandlerInfo",
    "Worker",
    "TaskContext",
    "TaskCancelled",
    "chain",
    "group",
    "Group",
    "WorkerSettings",
    "Run",
    "RunStatus",
    "RunRegistry",
    "QueuedTaskManager",
    "BackgroundTaskManager",
    "create_task_manager",
    "SCHEMA_VERSION",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MIN_PRIORITY",
    "MAX_PRIORITY",
    "DEFAULT_PRIORITY",
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_ERROR_BYTES",
    "MAX_TRACEBACK_BYTES",
    "MAX_ATTEMPT_RECORDS",
    "SQLITE_VERSION",
    "SQLITE_COMPILE_OPTIONS",
    "__version__",
]
