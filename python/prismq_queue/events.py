"""Live events: what changes in a queue, including changes made by other processes on the file.

>>> from prismq_queue import Queue
>>> from prismq_queue.events import watch
>>> with Queue(":memory:") as q, watch(q, interval=0.2) as stream:
...     task_id = q.enqueue("email.send", {"to": "ada@example.com"})
...     ev = next(stream)
...     (ev.kind, ev.task_id == task_id, ev.status)
('task.created', True, 'queued')

``watch(queue)`` returns an :class:`EventStream`, iterable both ways:

- ``for ev in stream`` blocks (on a condition variable) until some process commits to the file;
- ``async for ev in stream`` awaits the same wake-up on the event loop (an ``asyncio.Event`` set
  from the waiter thread) and runs each look in a thread (``run_in_executor``): the loop never
  blocks, and a waiting stream holds no thread.

Waiting, without busy polling: one *waiter* thread per queue handle in the process, shared by all
its streams (a web server with a thousand subscribers still has one), sleeps in
``Queue.wait_for_change(since=token)`` with the GIL released. There the core sleeps until this
process commits or the operating system reports a write to the database's WAL file (another
process's commit), with a 50 ms poll as the fallback, and compares this process's commit counter
and SQLite's ``PRAGMA data_version`` (which moves on other processes' commits; a read of the
shared-memory WAL index, no I/O) with the token, sleeping again while both are unchanged. An idle
queue with streams thus costs a small fraction of a percent of a core, however many streams. The waiter exits when the
last stream of its queue closes.

After each wake-up a stream takes one *look*: it diffs the database against what it saw last
(``Queue.changes_since``: new task ids, the set of running tasks, new task log lines, recently
finished tasks; all read from indexes the queue keeps anyway, nothing is written for it) and
emits, in this order:

- ``task.created``: a task that did not exist at the previous look (``status`` is its status now);
- ``task.status``: a task whose status changed, or a running task claimed again (a new attempt);
  ``data`` has ``attempts``, ``max_attempts``, ``worker`` and ``error``;
- ``task.progress``: a running task whose progress, step or message changed;
- ``queue.updated``: one per queue that had task events, with ``data = {"queued": n, "running": n,
  "changes": k}`` (``k``: task events since the previous ``queue.updated`` of that queue).

Guarantees, and what is coalesced or missed:

- Every commit is followed by a look (a commit made while a look runs wakes the stream again).
- Events describe the state *at a look*. Looks happen at most every ``min_gap`` seconds (default
  0.05), so what happens in between collapses to its outcome: two progress reports give one event
  with the second; a task claimed and completed in between gives one ``task.status``
  (``completed``); a task failed and re-queued in between gives one (``queued``). A change that
  undoes itself in between is not seen. Each look reports at most one status event per task.
- ``queue.updated`` is coalesced per queue to at most one per ``interval`` seconds: the first at
  once, later ones at the end of the interval, with the counts of that moment.
- A priority change (``set_priority`` to another value) of a queued task is a ``task.status``
  event with its status unchanged: it reorders the queue. Tasks that existed before ``watch()``
  are only reported when they change afterwards. A line added with ``Queue.log`` to a task that is not
  running may repeat its status.
- A completion whose transaction stayed open for more than 2 s (``FINISHED_MARGIN_MS`` in the
  core) for a task never seen running may be missed.
- A burst larger than one look takes (1000 new tasks) is reported over the next looks, at once,
  in order: nothing is dropped.
- ``at`` is when the row says it happened (creation time for ``task.created``, the row's last
  update otherwise; the look's time for ``queue.updated``), UTC.
- Closing the queue ends its streams with the ``QueueError`` the next look raises.

Use one stream from one consumer at a time (a thread, or one ``async for``); streams are
independent of each other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from ._prismq_queue import Queue
from .errors import QueueError

__all__ = ["Event", "EventStream", "watch", "KINDS"]

KINDS = ("task.created", "task.status", "task.progress", "queue.updated")

#: New tasks reported by one look at most; a larger burst takes several looks, back to back.
LOOK_LIMIT = 1000


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


@dataclass(frozen=True)
class Event:
    """One change. Fields that do not apply to a kind are None (``queue.updated`` has only
    ``queue``, ``at`` and ``data``)."""

    kind: str
    task_id: Optional[int]
    type: Optional[str]
    queue: Optional[str]
    status: Optional[str]
    progress: Optional[float]
    step: Optional[str]
    message: Optional[str]
    at: datetime
    data: Optional[dict[str, Any]] = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``at`` as an ISO 8601 string."""
        return {
            "kind": self.kind,
            "task_id": self.task_id,
            "type": self.type,
            "queue": self.queue,
            "status": self.status,
            "progress": self.progress,
            "step": self.step,
            "message": self.message,
            "at": self.at.isoformat(),
            "data": dict(self.data) if self.data is not None else None,
        }


# ------------------------------------------------------------------------------ the waiter thread


class _Waiter:
    """Waits for commits on one queue handle and wakes every stream of it. ``seq`` counts the
    commits seen (in batches); a stream looks whenever it moved since its last look."""

    #: How long one wait lasts before the waiter checks whether it still has streams.
    TIMEOUT = 0.5

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        # Taken here, by the subscribing stream before watch() returns, not by the thread: a
        # thread that starts late (it waits for the GIL) would take it after the caller's next
        # commits, which its first look may have missed, and sleep through them.
        self.token = queue.change_token()
        self.cond = threading.Condition()
        self.seq = 0
        self.streams = 0
        self.error: Optional[BaseException] = None
        self.async_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.thread = threading.Thread(target=self._run, name="prismq-events", daemon=True)

    def _run(self) -> None:
        try:
            token = self.token
            while True:
                changed = self.queue.wait_for_change(self.TIMEOUT, since=token)
                with _WAITERS_LOCK:
                    if self.streams == 0:
                        _forget(self)
                        return
                if changed:
                    # The new token first, then the wake-up: a commit after this token wakes the
                    # next wait, one before it is seen by the looks this wake-up causes.
                    token = self.queue.change_token()
                    self.wake()
        except BaseException as e:  # noqa: BLE001 - e.g. the queue was closed: streams see it
            with _WAITERS_LOCK:
                _forget(self)
            self.error = e
            self.wake()

    def wake(self) -> None:
        with self.cond:
            self.seq += 1
            self.cond.notify_all()
            waiters = list(self.async_waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop is closed
                pass


_WAITERS: dict[int, _Waiter] = {}
_WAITERS_LOCK = threading.Lock()


def _forget(w: _Waiter) -> None:
    if _WAITERS.get(id(w.queue)) is w:
        del _WAITERS[id(w.queue)]


def _subscribe(queue: Queue) -> _Waiter:
    with _WAITERS_LOCK:
        w = _WAITERS.get(id(queue))
        if w is None or w.queue is not queue:
            w = _Waiter(queue)
            _WAITERS[id(queue)] = w
            w.thread.start()
        w.streams += 1
        return w


def _unsubscribe(w: _Waiter) -> None:
    with _WAITERS_LOCK:
        w.streams -= 1
    if w.thread is threading.current_thread():
        return
    # The waiter's wait holds the queue handle: closed meanwhile, the handle would close its
    # connections only once that wait returned, perhaps after the process had exited, leaving the
    # -wal and -shm behind (and a file deleted and opened again in between meets them). So the
    # last stream wakes it and lets it end, unless a new stream came for it meanwhile.
    deadline = time.monotonic() + 2.0
    while w.streams == 0 and w.thread.is_alive() and time.monotonic() < deadline:
        try:
            w.queue.wake()
        except QueueError:  # closed already: the waiter is ending
            pass
        w.thread.join(0.05)


# ---------------------------------------------------------------------------------- the stream


class EventStream:
    """Events of one queue (or of some of its queues) from the moment it was created. Iterate it
    with ``for`` or ``async for``; ``close()`` (or leaving its ``with`` block) ends it, also from
    another thread: a waiting iteration returns at once."""

    def __init__(
        self,
        queue: Queue,
        *,
        queues: Optional[Iterable[str]] = None,
        interval: float = 1.0,
        min_gap: float = 0.05,
    ) -> None:
        if not (isinstance(interval, (int, float)) and interval > 0):
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if not (isinstance(min_gap, (int, float)) and min_gap >= 0):
            raise ValueError(f"min_gap must be a number of seconds >= 0, got {min_gap!r}")
        if isinstance(queues, str):
            queues = [queues]
        self._queue = queue
        self._queues = list(queues) if queues is not None else None
        self._cursor = queue.change_cursor(queues=self._queues)
        self._interval = float(interval)
        self._min_gap = float(min_gap)
        self._buffer: deque[Event] = deque()
        self._lock = threading.Lock()  # one look at a time
        self._closed = False
        self._more = False
        # The waiter's seq before the last look; None: look first (the waiter may have started
        # after the cursor was taken).
        self._seen: Optional[int] = None
        self._last_look = float("-inf")
        # queue.updated coalescing: task events per queue since its last queue.updated, and when
        # that was (monotonic seconds).
        self._changed: dict[str, int] = {}
        self._last_update: dict[str, float] = {}
        self._waiter = _subscribe(queue)

    # -- the public surface

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cursor.stop()
        w = self._waiter
        with w.cond:
            w.cond.notify_all()
            waiters = list(w.async_waiters)
        for loop, ev in waiters:  # wakes every async stream of the queue: they re-check and wait on
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass
        _unsubscribe(w)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit
            pass

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        while True:
            if self._closed:
                raise StopIteration
            if self._buffer:
                return self._buffer.popleft()
            self._wait_for_events(None)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.popleft()
            await self._await_events()

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Every event available within ``timeout`` seconds (0: what one look finds now)."""
        if not self._buffer and not self._closed:
            self._wait_for_events(timeout)
        out = list(self._buffer)
        self._buffer.clear()
        return out

    # -- looking and waiting

    def _changes_due(self) -> bool:
        """A look is due: the waiter saw a commit since the last look (or a burst is unread)."""
        return self._seen is None or self._more or self._waiter.seq != self._seen or self._waiter.error is not None

    def _wait_budget(self, deadline: float) -> float:
        """Seconds to wait at most: until `deadline`, or until a coalesced queue.updated is due."""
        t = deadline
        if self._changed:
            t = min(t, min(self._last_update.get(q, float("-inf")) + self._interval for q in self._changed))
        return max(0.0, t - time.monotonic())

    def _read_changes(self) -> None:
        """One look now (called in a thread by the async path). Holds the stream's lock."""
        with self._lock:
            if self._closed:
                return
            self._seen = self._waiter.seq
            self._last_look = time.monotonic()
            changes, self._more = self._queue.changes_since(self._cursor, limit=LOOK_LIMIT)
            for c in changes:
                kind, task_id, typ, queue, status, progress, step, message, at_ms = c[:9]
                data = None
                if kind == "task.status":
                    data = {"attempts": c[9], "max_attempts": c[10], "worker": c[11], "error": c[12]}
                event = Event(kind, task_id, typ, queue, status, progress, step, message, _utc(at_ms), data)
                self._buffer.append(event)
                self._changed[queue] = self._changed.get(queue, 0) + 1
            self._queue_updates()

    def _queue_updates(self) -> None:
        now = time.monotonic()
        due = [q for q in self._changed if now - self._last_update.get(q, float("-inf")) >= self._interval]
        if not due:
            return
        depths = self._queue.queue_depths(due)
        at = datetime.now(timezone.utc)
        for q in due:
            d = depths.get(q, {"queued": 0, "running": 0})
            data = {"queued": d["queued"], "running": d["running"], "changes": self._changed.pop(q)}
            self._buffer.append(Event("queue.updated", None, None, q, None, None, None, None, at, data))
            self._last_update[q] = now

    def _seconds_until_next_read(self) -> float:
        return max(0.0, self._last_look + self._min_gap - time.monotonic())

    def _wait_for_events(self, timeout: Optional[float]) -> None:
        """Sync: wait (up to `timeout`, default `interval`) for events and put them in the buffer."""
        deadline = time.monotonic() + (self._interval if timeout is None else timeout)
        w = self._waiter
        while not self._closed and not self._buffer:
            if self._changes_due():
                gap = 0.0 if self._more else self._seconds_until_next_read()
                if gap > 0:
                    with w.cond:
                        w.cond.wait_for(lambda: self._closed, gap)
                    continue
                self._read_changes()
                continue
            budget = self._wait_budget(deadline)
            if budget > 0:
                with w.cond:
                    w.cond.wait_for(lambda: self._closed or self._changes_due(), budget)
            if not self._changes_due():
                with self._lock:
                    self._queue_updates()  # coalesced queue.updated whose interval ended
                if time.monotonic() >= deadline:
                    return

    async def _await_events(self) -> None:
        """Async: the same, waiting on the event loop and looking in a thread."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self._interval
        w = self._waiter
        while not self._closed and not self._buffer:
            if self._changes_due():
                gap = 0.0 if self._more else self._seconds_until_next_read()
                if gap > 0:
                    await asyncio.sleep(gap)
                    continue
                await loop.run_in_executor(None, self._read_changes)
                continue
            budget = self._wait_budget(deadline)
            if budget > 0:
                ev = asyncio.Event()
                entry = (loop, ev)
                with w.cond:
                    w.async_waiters.add(entry)
                try:
                    if not (self._closed or self._changes_due()):  # a wake-up before we registered
                        try:
                            await asyncio.wait_for(ev.wait(), budget)
                        except asyncio.TimeoutError:
                            pass
                finally:
                    with w.cond:
                        w.async_waiters.discard(entry)
            if not self._changes_due() and not self._closed:
                with self._lock:
                    self._queue_updates()
                if time.monotonic() >= deadline:
                    return


def watch(
    queue: Queue,
    *,
    queues: Optional[Iterable[str]] = None,
    interval: float = 1.0,
    min_gap: float = 0.05,
) -> EventStream:
    """Events of ``queue`` from now on (of ``queues`` only, when given), made by any process.

    ``interval``: the coalescing period of ``queue.updated`` per queue, and the longest one
    iteration step waits before it re-checks. ``min_gap``: the shortest time between two looks
    (events in between collapse to their outcome). See the module doc for the events and their
    guarantees.
    """
    return EventStream(queue, queues=queues, interval=interval, min_gap=min_gap)
