"""What the dashboard shows that no single query answers: depth over time and recent failures.

A :class:`Monitor` runs two daemon threads for a router:

- a *sampler* that calls ``Queue.stats()`` every ``interval`` seconds (default 5) and keeps the
  counts in a ring of ``size`` samples (default 720: one hour), so a page opened now draws the
  last hour at once instead of starting from an empty chart. ``stats()`` walks partial indexes
  (milliseconds at tens of thousands of tasks), so one call every few seconds costs little;
- a *watcher*: one ``events.watch`` stream over every queue. It keeps the latest failed attempts
  (a task re-queued with an error, or moved to the dead letter) in a ring of ``failures`` entries,
  counts outcomes per queue and type since the monitor started, and hands every event, and every
  depth sample, to the subscribers of the global live stream (``WS /queue/ws``, SSE
  ``/queue/events``). One stream serves them all, however many pages are open.

Both report errors to the ``prismq_queue.web`` logger and carry on (a busy database, a queue
closed under them ends them quietly). ``start()`` is idempotent; ``stop()`` joins the threads, so
a caller may close the queue right after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Optional

log = logging.getLogger("prismq_queue.web")

Subscriber = Callable[[str, Any], None]

# Outcome counters kept per (queue, type) since the monitor started.
OUTCOMES = ("completed", "failed", "cancelled", "retried")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Monitor:
    def __init__(
        self,
        queue: Any,
        *,
        interval: float = 5.0,
        size: int = 720,
        failures: int = 200,
        events_interval: float = 1.0,
    ) -> None:
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"history_interval must be a positive number of seconds, got {interval!r}")
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"history_size must be an integer >= 2, got {size!r}")
        if not isinstance(failures, int) or failures < 1:
            raise ValueError(f"failures must be an integer >= 1, got {failures!r}")
        self.queue = queue
        self.interval = float(interval)
        self.size = size
        self.events_interval = events_interval
        self.started_at: Optional[int] = None  # ms since the epoch
        self._samples: deque[dict[str, Any]] = deque(maxlen=size)
        # task id -> the latest failure of that task; oldest first, so the ring drops the oldest.
        self._failures: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._max_failures = failures
        self._outcomes: dict[tuple[str, str], dict[str, int]] = {}
        self._queues_seen: set[str] = set()
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stream: Any = None

    # ------------------------------------------------------------------ life
    @property
    def running(self) -> bool:
        return bool(self._threads) and not self._stopping.is_set()

    def start(self) -> None:
        with self._lock:
            if self._threads or self._stopping.is_set():  # running, or being stopped
                return
            self.started_at = _now_ms()
            # The stream's cursor is taken here, in the caller's thread: an outcome committed
            # after start() returns is counted, however late the watch thread gets to run.
            from ..events import watch

            try:
                self._stream = watch(self.queue, interval=self.events_interval)
            except Exception as e:  # noqa: BLE001 - the watch thread tries again
                log.warning("dashboard event stream could not start, the monitor tries again: %s", e)
            self._threads = [
                threading.Thread(target=self._sample_loop, name="prismq-web-history", daemon=True),
                threading.Thread(target=self._watch_loop, name="prismq-web-monitor", daemon=True),
            ]
            threads = list(self._threads)
        for t in threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()  # its waiting iteration returns within milliseconds
            except Exception:  # noqa: BLE001
                log.debug("closing the monitor's event stream failed", exc_info=True)
        with self._lock:
            threads, self._threads = self._threads, []
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self._publish("end", None)  # live connections end their streams
        self._stream = None
        self._stopping.clear()  # start() may run it again (an app served twice)

    # ------------------------------------------------------------------ reading
    def history(self, since_ms: Optional[int] = None) -> list[dict[str, Any]]:
        with self._lock:
            samples = list(self._samples)
        if since_ms is not None:
            samples = [s for s in samples if s["at"] > since_ms]
        return samples

    def failures(self) -> list[dict[str, Any]]:
        """The latest failed attempts seen, newest first (one entry per task: its latest)."""
        with self._lock:
            return [dict(f) for f in reversed(self._failures.values())]

    def outcomes(self) -> dict[tuple[str, str], dict[str, int]]:
        with self._lock:
            return {k: dict(v) for k, v in self._outcomes.items()}

    def queues_seen(self) -> set[str]:
        with self._lock:
            return set(self._queues_seen)

    # ------------------------------------------------------------------ the global stream
    def subscribe(self, callback: Subscriber) -> None:
        """``callback(kind, item)`` from the monitor's threads: ``("event", events.Event)``,
        ``("depth", sample)``, and ``("end", None)`` when the monitor stops. It must not block
        (hand the item to a loop and return)."""
        self.start()
        with self._lock:
            self._subscribers.add(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(callback)

    def _publish(self, kind: str, item: Any) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for cb in subscribers:
            try:
                cb(kind, item)
            except Exception:  # noqa: BLE001 - one broken subscriber must not stop the others
                log.debug("a live subscriber failed", exc_info=True)

    # ------------------------------------------------------------------ threads
    def _sample(self) -> None:
        s = self.queue.stats()
        sample = {
            "at": _now_ms(),
            "queued": s["queued"],
            "scheduled": s.get("scheduled", 0),
            "running": s["running"],
            "completed": s["completed"],
            "failed": s["failed"],
            "cancelled": s["cancelled"],
            "total": s["total"],
        }
        with self._lock:
            self._samples.append(sample)
        self._publish("depth", sample)

    def _sample_loop(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._sample()
            except Exception as e:  # noqa: BLE001 - logged; the next sample tries again
                if self._queue_closed(e):
                    return
                log.warning("dashboard depth sample failed: %s", e)
            self._stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _watch_loop(self) -> None:
        from ..events import watch

        backoff = 0.5
        while not self._stopping.is_set():
            try:
                if self._stream is None:  # the first one was made by start()
                    self._stream = watch(self.queue, interval=self.events_interval)
                if self._stopping.is_set():  # stop() ran while the stream was being made
                    self._stream.close()
                    return
                backoff = 0.5
                for ev in self._stream:
                    self._record(ev)
                    self._publish("event", ev)
            except Exception as e:  # noqa: BLE001 - logged; watched again after a pause
                if self._queue_closed(e) or self._stopping.is_set():
                    return
                log.warning("dashboard event stream failed, watching again in %.1fs: %s", backoff, e)
            finally:
                if self._stream is not None:
                    self._stream.close()
                    self._stream = None
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _queue_closed(self, e: BaseException) -> bool:
        # The app closes its queue at shutdown; whatever failed after that is no news.
        return bool(getattr(self.queue, "closed", False))

    def _record(self, ev: Any) -> None:
        if ev.queue is None:
            return
        with self._lock:
            self._queues_seen.add(ev.queue)
            if ev.kind != "task.status":
                return
            data = ev.data or {}
            attempts = data.get("attempts") or 0
            # A failed attempt shows as a task back in `queued` with an error and attempts > 0
            # (retry() resets attempts to 0 and keeps the old error: not a failure), or as a
            # dead letter (`failed`).
            failed = ev.status == "failed" or (ev.status == "queued" and attempts > 0 and data.get("error"))
            outcome = "retried" if ev.status == "queued" and failed else ev.status
            if outcome in OUTCOMES:
                counts = self._outcomes.setdefault((ev.queue, ev.type or ""), dict.fromkeys(OUTCOMES, 0))
                counts[outcome] += 1
            if not failed:
                return
            self._failures.pop(ev.task_id, None)
            self._failures[ev.task_id] = {
                "task_id": ev.task_id,
                "queue": ev.queue,
                "type": ev.type,
                "failed_at": int(ev.at.timestamp() * 1000),
                "error": data.get("error"),
                "attempts": attempts,
                "max_attempts": data.get("max_attempts"),
                "worker": data.get("worker"),
                "dead": ev.status == "failed",
            }
            while len(self._failures) > self._max_failures:
                self._failures.popitem(last=False)
