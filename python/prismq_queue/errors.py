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


class ScheduleNotFound(QueueError, KeyError):
    """No schedule has this name (``pause_schedule``, ``resume_schedule``): a ``KeyError``, as
    a missing task is, since a name is a key; ``unschedule`` answers ``False`` instead."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class LeaseLost(QueueError):
    """This claim no longer holds the task: its lease expired and it was taken over, or it was
    completed, failed or cancelled meanwhile. Nothing was changed."""


class SchemaVersionError(QueueError):
    """The database was written by a newer prismq_queue than this one."""


class DatabaseError(QueueError):
    """The database could not do what was asked: an unreadable or foreign file, a permission
    problem, a full disk, a lock held past ``busy_timeout``; on PostgreSQL also a server that
    cannot be reached or a connection that was lost.

    ``kind`` says which, so a caller can decide without reading the message:

    - ``"busy"``: another connection held the write lock past ``busy_timeout`` (``DatabaseBusy``);
      on PostgreSQL also every connection of the pool in use past ``pool_timeout``, and a
      statement stopped by ``statement_timeout``, ``lock_timeout`` or a cancel request;
    - ``"disk_full"``: no space left, or a file size or quota limit; writes work again once space
      is freed;
    - ``"read_only"``: the file, its directory or the file system refuses writes; a handle
      recovers by itself once the file is writable again;
    - ``"io_error"``: the operating system reported an input/output error; on PostgreSQL, the
      server cannot be reached or the connection was lost (a restart, ``pg_terminate_backend``):
      the next call connects again. A transaction whose connection died before its COMMIT was
      already run again on a new connection; one lost during the COMMIT may have committed;
    - ``"file_moved"``: the file was deleted or replaced after this handle opened it; its writes
      would be lost, so every further write is refused: open a new ``Queue`` (restart the
      process) against the file that now exists;
    - ``"corrupt"``: a damaged file or a damaged row (run ``integrity_check``, restore a backup);
    - ``"not_a_database"``: the file is not a SQLite database;
    - ``"other"``: anything else (on PostgreSQL: a wrong password, a missing database).
    """

    kind: str = "other"

    def __init__(self, message: str = "", kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class DatabaseBusy(DatabaseError):
    """The write lock stayed held by another connection for longer than ``busy_timeout`` (the
    core retried until then); on PostgreSQL, no pool connection came free within
    ``pool_timeout``, or a statement timeout stopped the call. ``kind`` is ``"busy"``."""

    kind: str = "busy"

    def __init__(self, message: str = "", kind: str = "busy") -> None:
        super().__init__(message, kind)


class Unsupported(QueueError):
    """The backend in use does not have this operation (a file backup on a database server, say);
    the message says what to use instead. ``backend`` and ``operation`` name both."""

    backend: str = ""
    operation: str = ""

    def __init__(self, message: str = "", backend: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.operation = operation


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
    "ScheduleNotFound",
    "LeaseLost",
    "SchemaVersionError",
    "DatabaseError",
    "DatabaseBusy",
    "Unsupported",
    "HandlerAlreadyRegistered",
    "HandlerNotFound",
]
