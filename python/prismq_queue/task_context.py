"""What a handler receives: ``TaskContext`` (the task, its payload, progress, log lines,
cancellation) and ``TaskCancelled``, raised in its calls once the task is cancelled."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ._prismq_queue import Queue, Task
from .errors import DatabaseError, LeaseLost, TaskNotFound

log = logging.getLogger("prismq_queue.worker")

__all__ = ["TaskCancelled", "TaskContext"]


class TaskCancelled(Exception):
    """Raised inside a handler's context calls once its task was cancelled or its lease lost."""


class TaskContext:
    """What a handler receives: the task, its payload, progress/log reporting and cancellation."""

    __slots__ = ("task", "worker_id", "_queue", "_cancelled", "_loop_task", "_dependency_results")

    def __init__(self, task: Task, queue: Queue, worker_id: str) -> None:
        self.task = task
        self.worker_id = worker_id
        self._queue = queue
        # A plain flag, not a threading.Event: one is made per task, and an Event (a Condition and
        # a lock) cost more than a no-op handler. Handlers poll it; nobody waits on it.
        self._cancelled = False
        self._loop_task: asyncio.Future[Any] | None = None
        self._dependency_results: dict[int, Any] | None = None

    @property
    def payload(self) -> Any:
        return self.task.payload

    @property
    def dependency_results(self) -> dict[int, Any]:
        """The results of the tasks this one was enqueued after (``enqueue(..., after=[...])``),
        by task id: those that completed (one that failed or was cancelled, for a task that runs
        anyway, or was purged meanwhile, is absent). Read on first use, then kept."""
        if self._dependency_results is None:
            results: dict[int, Any] = {}
            for dep in self._queue.get(self.task.id).after:
                try:
                    t = self._queue.get(dep)
                except TaskNotFound:
                    continue
                if t.status == "completed":
                    results[dep] = t.result
            self._dependency_results = results
        return self._dependency_results

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled, timed out, or this worker lost its lease: stop soon."""
        return self._cancelled

    def progress(self, percent: float | None = None, step: str | None = None, message: str | None = None) -> None:
        """Persist progress on the task (percent in 0..100, a step name, a message)."""
        try:
            self._queue.progress(self.task, percent, step=step, message=message)
        except LeaseLost:
            self._cancelled = True
        except DatabaseError as e:  # progress is advisory: a database outage must not fail the task
            log.debug("progress of task %s not saved: %s", self.task.id, e)

    def log(self, message: str, level: str = "info", details: Any = None) -> None:
        """Append a line to the task's log (also sent to the ``prismq_queue.task`` logger)."""
        logging.getLogger("prismq_queue.task").log(
            logging.getLevelName(level.upper())
            if isinstance(logging.getLevelName(level.upper()), int)
            else logging.INFO,
            "task %s: %s",
            self.task.id,
            message,
        )
        try:
            self._queue.log(self.task.id, level, message, details)
        except TaskNotFound:
            pass
        except DatabaseError as e:  # the line went to the logger above; the task goes on
            log.debug("log line of task %s not saved: %s", self.task.id, e)

    def _set_cancelled(self) -> None:
        self._cancelled = True
        fut = self._loop_task
        if fut is not None and not fut.done():
            fut.get_loop().call_soon_threadsafe(fut.cancel)
