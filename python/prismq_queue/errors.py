"""Exceptions raised by prismq_queue. ``QueueError`` is the root of them all.

Each message says what was wrong and what to do about it.
"""

from __future__ import annotations


class QueueError(Exception):
    """Base class of every prismq_queue error."""


class InvalidArgument(QueueError, ValueError):
    """A value the queue cannot accept. Nothing was written."""


class TaskNotFound(QueueError, KeyError):
    """No task has this id (it may have been purged)."""

    def __init__(self, message: str, task_id: int | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LeaseLost(QueueError):
    """This claim no longer holds the task: its lease expired and it was taken over, or it was
    completed, failed or cancelled meanwhile. Nothing was changed."""


class SchemaVersionError(QueueError):
    """The database was written by a newer prismq_queue than this one."""


class DatabaseError(QueueError):
    """SQLite could not do what was asked: an unreadable or foreign file, a permission problem,
    a full disk, or a lock held past ``busy_timeout``."""


class HandlerAlreadyRegistered(QueueError, ValueError):
    """The task type already has a handler; pass ``allow_override=True`` to replace it."""


class HandlerNotFound(QueueError, KeyError):
    """No handler is registered for this task type."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


__all__ = [
    "QueueError",
    "InvalidArgument",
    "TaskNotFound",
    "LeaseLost",
    "SchemaVersionError",
    "DatabaseError",
    "HandlerAlreadyRegistered",
    "HandlerNotFound",
]
