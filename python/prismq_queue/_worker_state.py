"""The worker's parts that need no Worker: the tasks it holds, the results waiting to be
acknowledged, a database outage, the threads that run sync handlers, its option checks, its stop
signals, and how errors and outcomes are described and logged."""

from __future__ import annotations

import inspect
import logging
import os
import queue as _stdqueue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

from ._prismq_queue import Task
from .errors import DatabaseError, InvalidArgument
from .task_context import TaskContext

log = logging.getLogger("prismq_queue.worker")


class HeldTask:
    """One task this worker holds. (Plain class with slots: one is made per task.)"""

    __slots__ = ("ctx", "deadline", "lease_renew_at", "finished", "started")

    def __init__(self, ctx: TaskContext, deadline: float | None, lease_renew_at: float, started: float) -> None:
        self.ctx = ctx
        self.deadline = deadline  # monotonic time after which the attempt has timed out
        self.lease_renew_at = lease_renew_at
        self.finished = False  # acknowledged (or handed back): late results are ignored
        self.started = started


class FailedAttempt(NamedTuple):
    """A failed attempt to acknowledge: its error line and the handler's traceback, if any."""

    run: HeldTask
    error: str
    retry: bool
    traceback: str | None


class HandlerResult(NamedTuple):
    running: HeldTask
    ok: bool
    value: Any  # result, or the exception
    cancelled: bool = False


class Outage:
    """The database refuses this worker's writes: since when, how often it failed, when to try again."""

    __slots__ = ("since", "attempts", "next_try", "error")

    def __init__(self, since: float, error: DatabaseError) -> None:
        self.since = since
        self.attempts = 0
        self.next_try = since
        self.error = error


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10000}"


class HandlerThreads:
    """Threads that run sync handlers. Lighter than concurrent.futures (no Future per task): a
    handler reports through the worker's done-queue itself. Daemon threads, so a handler that
    never returns cannot keep the process alive after shutdown."""

    def __init__(self, size: int, name: str) -> None:
        self._jobs: _stdqueue.SimpleQueue[Any] = _stdqueue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, arg1, arg2 = job
            fn(arg1, arg2)

    def submit(self, fn: Callable[[Any, Any], None], arg1: Any, arg2: Any) -> None:
        self._jobs.put((fn, arg1, arg2))

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def is_async_handler(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    inner = getattr(handler, "func", None)  # functools.partial
    if inner is not None and inspect.iscoroutinefunction(inner):
        return True
    # An object whose __call__ is async: that method is inspected, not whether it is callable.
    return inspect.iscoroutinefunction(getattr(handler, "__call__", None))  # noqa: B004


def describe_exception(exc: BaseException) -> str:
    name = type(exc).__name__
    msg = str(exc)
    return f"{name}: {msg}" if msg else name


def first_line(text: str, limit: int = 500) -> str:
    """A message for one log line: its first line, cut at ``limit`` characters."""
    first, _, rest = text.strip().partition("\n")
    if rest or len(first) > limit:
        return first[:limit] + " ..."
    return first


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def install_stop_signals(stop: Callable[[str], None], hold_seconds: float) -> Callable[[], None] | None:
    """SIGTERM, SIGINT and Ctrl-Break call ``stop`` with the signal's name; on Windows a console
    close, logoff or shutdown (a service's stop) too, and the process is held up to
    ``hold_seconds`` until the returned function, which puts the previous handlers back, runs.
    None off the main thread, where Python cannot install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        stop(signal_name(signum))

    from ._console import on_console_end

    console = on_console_end(lambda event: on_signal(event, None), hold_seconds)
    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):  # SIGBREAK: Ctrl-Break on Windows
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except (ValueError, OSError):
            pass

    def restore() -> None:
        if console is not None:
            console.finished()
        for sig, handler in previous.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):
                pass

    return restore


def check_worker_options(
    concurrency: int,
    lease: float,
    poll_interval: float,
    heartbeat_interval: float,
    shutdown_grace: float,
    strategy: str,
) -> None:
    """InvalidArgument, saying what is allowed, for a Worker option out of range."""
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise InvalidArgument(f"concurrency must be an integer >= 1, got {concurrency!r}")
    for name, value, low in (
        ("lease", lease, 0.0),
        ("poll_interval", poll_interval, 0.0),
        ("heartbeat_interval", heartbeat_interval, 0.0),
    ):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > low:
            raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
    if not isinstance(shutdown_grace, (int, float)) or shutdown_grace < 0:
        raise InvalidArgument(f"shutdown_grace must be a number of seconds >= 0, got {shutdown_grace!r}")
    if strategy not in ("fifo", "lifo", "priority", "weighted_random"):
        raise InvalidArgument(f"unknown strategy {strategy!r}: use 'fifo', 'lifo', 'priority' or 'weighted_random'")


def traceback_text(exc: BaseException, skip_file: str) -> str | None:
    """The handler's exception as Python prints it, chained exceptions included, without the
    worker's own frames (those of ``skip_file``) that called the handler; None for one that was
    never raised."""
    tb = exc.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None and tb.tb_frame.f_code.co_filename == skip_file:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def log_completions(completes: list[tuple[HeldTask, Any]], done: Sequence[bool]) -> None:
    """At debug level, a line per committed completion, or per result the queue dropped."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    now = time.monotonic()
    for (run, _), ok in zip(completes, done):
        t = run.ctx.task
        if ok:
            log.debug("task %s (%s) completed in %.3fs", t.id, t.type, now - run.started)
        else:
            log.debug("task %s (%s): result dropped: the task was cancelled, or taken over after its "
                      "lease expired, or already settled", t.id, t.type)


def log_failure(task: Task, error: str, retry: bool) -> None:
    """A line per committed failed attempt: to be retried, or dead-lettered."""
    if retry and task.attempts < task.max_attempts:
        log.warning("task %s (%s) failed, attempt %d of %d, will be retried: %s",
                    task.id, task.type, task.attempts, task.max_attempts, first_line(error))
    else:
        log.warning("task %s (%s) dead-lettered after attempt %d of %d: %s",
                    task.id, task.type, task.attempts, task.max_attempts, first_line(error))
