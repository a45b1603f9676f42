"""The scheduler's timer: every ``Worker`` (unless ``run_schedules=False``) and ``serve`` call
``Queue.run_schedules()`` about once a second, so periodic tasks are enqueued while anything
runs. Any number of them may: the core enqueues each due time once, in the transaction that
moves the schedule past it (docs/schedules.md)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from .errors import DatabaseError, QueueError

#: Seconds between two passes: a due time is enqueued within about this long.
SCHEDULER_INTERVAL = 1.0

log = logging.getLogger("prismq_queue.scheduler")


class SchedulerTimer:
    """Runs a pass when ``tick`` is called at least ``interval`` after the previous one. A
    ``DatabaseError`` goes to ``on_database_error`` when given (a Worker's outage handling, as
    for its heartbeats); other errors are logged and the next pass retries."""

    def __init__(
        self,
        queue: Any,
        interval: float = SCHEDULER_INTERVAL,
        on_database_error: Optional[Callable[[DatabaseError], None]] = None,
    ) -> None:
        self.queue = queue
        self.interval = interval
        self._on_database_error = on_database_error
        self._next = 0.0
        self._failing = False

    def tick(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.interval
        try:
            n = self.queue.run_schedules()
        except DatabaseError as e:
            if self._on_database_error is None:
                raise
            self._on_database_error(e)
            return
        except QueueError as e:  # the next pass retries; say so once per failing stretch
            if not self._failing:
                log.warning("periodic tasks not enqueued: %s (retried every %.0fs)", e, self.interval)
            self._failing = True
            return
        self._failing = False
        if n:
            log.debug("enqueued %d periodic task(s)", n)


class SchedulerThread:
    """``SchedulerTimer`` on a thread of its own (``serve``), until ``stop()``."""

    def __init__(self, queue: Any, interval: float = SCHEDULER_INTERVAL) -> None:
        self._timer = SchedulerTimer(queue, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prismq-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._timer.tick(time.monotonic())
            except DatabaseError as e:  # serve's maintenance thread logs the database's state
                log.warning("periodic tasks not enqueued: %s", e)
            self._stop.wait(self._timer.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
