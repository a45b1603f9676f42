"""Maintenance on a schedule, run by ``prismq-queue serve`` in a thread of its own.

- **sweep** (default every 30 s): expired leases of crashed workers back to the queue. Claims
  already do it, but only when some worker claims; the sweep also covers a queue nobody claims
  from.
- **purge** (10 s after start, then hourly): completed and cancelled tasks (with their logs) that
  finished more than ``retention`` ago (default 7 days), in small batches so that workers never
  wait long for the write lock. Dead letters (``failed``) are kept for an operator to look at,
  retry or purge by hand (``prismq-queue purge --status failed``).
- **analyze** (daily): ``ANALYZE`` and ``PRAGMA optimize``, so the planner's statistics follow
  the data (the hot statements pin their indexes; the operators' listings benefit).
- **checkpoint** (every 5 min): every queue handle already moves the WAL back into the database
  in the background (passive checkpoints, which never wait for anyone); this job runs one more
  and warns when the WAL keeps growing because something stops checkpoints from finishing (a
  long read transaction).

Every job logs what it did under ``prismq_queue.maintenance`` (nothing when there was nothing to
do) and an error never stops the schedule.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ._location import is_url
from ._prismq_queue import Queue

log = logging.getLogger("prismq_queue.maintenance")

__all__ = ["Schedule", "Maintenance"]

#: A WAL larger than this that a checkpoint could not fully copy back earns a warning.
WAL_WARN_BYTES = 256 * 1024 * 1024
PURGE_BATCH = 500


@dataclass(frozen=True)
class Schedule:
    """Intervals in seconds; ``None`` turns a job off. ``retention``: age of finished tasks that
    the purge deletes (``None``: never purge)."""

    sweep: Optional[float] = 30.0
    purge: Optional[float] = 3600.0
    retention: Optional[float] = 7 * 86400.0
    analyze: Optional[float] = 86400.0
    checkpoint: Optional[float] = 300.0
    #: Delay before the first purge: soon after a start, so a server that was down for a while
    #: catches up at once.
    first_purge: float = 10.0


class Maintenance:
    """Runs the jobs of a ``Schedule`` on ``queue`` in a daemon thread until ``stop()``."""

    def __init__(self, queue: Queue, schedule: Schedule = Schedule()) -> None:
        self.queue = queue
        self.schedule = schedule
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        now = time.monotonic()
        jobs: list[tuple[str, float, Callable[[], object], float]] = []
        if schedule.sweep:
            jobs.append(("sweep", schedule.sweep, self.sweep, now + schedule.sweep))
        if schedule.purge and schedule.retention is not None:
            jobs.append(("purge", schedule.purge, self.purge, now + min(schedule.first_purge, schedule.purge)))
        if schedule.analyze:
            jobs.append(("analyze", schedule.analyze, self.analyze, now + schedule.analyze))
        # PostgreSQL has no WAL file of ours to checkpoint (the core refuses it with Unsupported).
        if schedule.checkpoint and not is_url(getattr(queue, "path", "")):
            jobs.append(("checkpoint", schedule.checkpoint, self.checkpoint, now + schedule.checkpoint))
        self._jobs = jobs
        self._next = {name: first for name, _, _, first in jobs}

    def describe(self) -> str:
        def every(seconds: Optional[float]) -> str:
            return "off" if not seconds else f"every {format_duration(seconds)}"

        s = self.schedule
        purge = "off" if not s.purge or s.retention is None else (
            f"{every(s.purge)}, completed/cancelled tasks older than {format_duration(s.retention)}"
        )
        return (f"sweep {every(s.sweep)}; purge {purge}; analyze {every(s.analyze)}; "
                f"checkpoint check {every(s.checkpoint if 'checkpoint' in self._next else None)}")

    # ------------------------------------------------------------------ the thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prismq-maintenance", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for name, interval, job, _ in self._jobs:
                if self._stop.is_set() or now < self._next[name]:
                    continue
                try:
                    job()
                except Exception as e:  # the schedule goes on; the next run may succeed
                    log.warning("maintenance %s failed: %s", name, e)
                self._next[name] = time.monotonic() + interval
            wait = min(self._next.values(), default=now + 3600) - time.monotonic()
            self._stop.wait(max(0.05, min(wait, 3600)))

    # ------------------------------------------------------------------ the jobs
    def sweep(self) -> int:
        n = self.queue.sweep()
        if n:
            log.info("sweep: %d expired leases back to the queue (or to the dead letter)", n)
        return n

    def purge(self) -> int:
        retention = self.schedule.retention
        if retention is None:
            return 0
        started = time.monotonic()
        stop = self._stop

        def stop_when_asked(done: int, total: int) -> None:
            if stop.is_set():  # shutting down: the batches done stay done
                raise _Stopped()

        try:
            n = self.queue.purge(older_than=retention, statuses=["completed", "cancelled"],
                                 batch_size=PURGE_BATCH, progress=stop_when_asked)
        except _Stopped:
            log.info("purge stopped by shutdown")
            return 0
        if n:
            log.info("purge: deleted %d completed/cancelled tasks older than %s in %.1fs", n,
                     format_duration(retention), time.monotonic() - started)
        return n

    def analyze(self) -> None:
        started = time.monotonic()
        self.queue.analyze()
        log.info("analyze: statistics refreshed in %.2fs", time.monotonic() - started)

    def checkpoint(self) -> dict[str, Any]:
        r = self.queue.checkpoint("passive")
        path = self.queue.path
        try:
            wal = os.path.getsize(f"{path}-wal")
        except OSError:
            wal = 0
        pending = r["wal_frames"] - r["checkpointed_frames"]
        if wal > WAL_WARN_BYTES and pending > 0:
            log.warning(
                "the WAL of %s is %.0f MB and %d of its frames could not be checkpointed: a long read "
                "transaction (a backup, a stuck process) is holding checkpoints back",
                path, wal / 1e6, pending,
            )
        return r


class _Stopped(Exception):
    pass


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
