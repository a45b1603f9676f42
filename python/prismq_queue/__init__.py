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
    DEFAULT_MAX_PAYLOAD_BYTES,
    MAX_PRIORITY,
    MIN_PRIORITY,
    SCHEMA_VERSION,
    Queue,
    Task,
    TaskLog,
    WorkerInfo,
    __version__,
)
from .enums import Status, Strategy
from .errors import (
    DatabaseError,
    InvalidArgument,
    LeaseLost,
    QueueError,
    SchemaVersionError,
    TaskNotFound,
)

__all__ = [
    "Queue",
    "Task",
    "TaskLog",
    "WorkerInfo",
    "Status",
    "Strategy",
    "QueueError",
    "InvalidArgument",
    "TaskNotFound",
    "LeaseLost",
    "SchemaVersionError",
    "DatabaseError",
    "SCHEMA_VERSION",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MIN_PRIORITY",
    "MAX_PRIORITY",
    "__version__",
]
