"""The worker runtime: claims tasks for the types it has handlers for and runs them.

One *engine* thread per worker owns every conversation with the queue: it claims as many tasks
as there are free slots, hands them to the handlers (sync handlers on a thread pool, async ones on
an event loop), and acknowledges finished tasks in batches: many handlers' results are committed
in one transaction, together with the next claim. Handlers never touch the database themselves
except through their context (progress, logs), so a no-op task costs a few tens of microseconds
of Python and a share of one commit.

Idle workers sleep in ``Queue.wait_for_change``: a commit by any process wakes them within a couple
of milliseconds, with the GIL released and no busy polling.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import queue as _stdqueue
import signal
import socket
import threading
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from ._prismq_queue import Queue, Task
from .errors import InvalidArgument, LeaseLost, QueueError, TaskNotFound

log = logging.getLogger("prismq_queue.worker")

__all__ = ["Worker", "TaskContext", "TaskCancelled"]


class TaskCancelled(Exception):
    """Raised inside a handler's context calls once its task was cancelled or its lease lost."""


class TaskContext:
    """What a handler receives: the task, its payload, progress/log reporting and cancellation."""

    __slots__ = ("task", "worker_id", "_queue", "_cancelled", "_loop_task")

    def __init__(self, task: Task, queue: Queue, worker_id: str) -> None:
        self.task = task
        self.worker_id = worker_id
        self._queue = queue
        # A plain flag, not a threading.Event: one is made per task, and an Event (a Condition and
        # a lock) cost more than a no-op handler. Handlers poll it; nobody waits on it.
        self._cancelled = False
        self._loop_task: asyncio.Future[Any] | None = None

    @property
    def payload(self) -> Any:
        return self.task.payload

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

    def log(self, message: str, level: str = "info", details: Any = None) -> None:
        """Append a line to the task's log (also sent to the ``prismq_queue.task`` logger)."""
        logging.getLogger("prismq_queue.task").log(
            logging.getLevelName(level.upper()) if isinstance(logging.getLevelName(level.upper()), int) else logging.INFO,
            "task %s: %s",
            self.task.id,
            message,
        )
        try:
            self._queue.log(self.task.id, level, message, details)
        except TaskNotFound:
            pass

    def _set_cancelled(self) -> None:
        self._cancelled = True
        fut = self._loop_task
        if fut is not None and not fut.done():
            fut.get_loop().call_soon_threadsafe(fut.cancel)


class _Running:
    """One task this worker holds. (Plain class with slots: one is made per task.)"""

    __slots__ = ("ctx", "deadline", "lease_renew_at", "finished")

    def __init__(self, ctx: TaskContext, deadline: float | None, lease_renew_at: float) -> None:
        self.ctx = ctx
        self.deadline = deadline  # monotonic time after which the attempt has timed out
        self.lease_renew_at = lease_renew_at
        self.finished = False  # acknowledged (or handed back): late results are ignored


class _Done(NamedTuple):
    running: _Running
    ok: bool
    value: Any  # result, or the exception
    cancelled: bool = False


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10000}"


class Worker:
    """Runs handlers from a registry for tasks claimed from a queue.

    ``registry`` is a TaskHandlerRegistry or any object with ``get_registered_types()`` and
    ``get_handler(task_type)``.
    """

    def __init__(
        self,
        queue: Queue,
        registry: Any,
        *,
        worker_id: str | None = None,
        queues: Sequence[str] | None = None,
        strategy: str = "priority",
        concurrency: int = 5,
        lease: float = 60.0,
        poll_interval: float = 1.0,
        capabilities: Mapping[str, Any] | None = None,
        shutdown_grace: float = 30.0,
        heartbeat_interval: float = 5.0,
        batch_size: int | None = None,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise InvalidArgument(f"concurrency must be an integer >= 1, got {concurrency!r}")
        for name, value, low in (("lease", lease, 0.0), ("poll_interval", poll_interval, 0.0), ("heartbeat_interval", heartbeat_interval, 0.0)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > low:
                raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(shutdown_grace, (int, float)) or shutdown_grace < 0:
            raise InvalidArgument(f"shutdown_grace must be a number of seconds >= 0, got {shutdown_grace!r}")
        if strategy not in ("fifo", "lifo", "priority", "weighted_random"):
            raise InvalidArgument(f"unknown strategy {strategy!r}: use 'fifo', 'lifo', 'priority' or 'weighted_random'")
        self.queue = queue
        self.registry = registry
        self.worker_id = worker_id or _default_worker_id()
        self.queues = list(queues) if queues else None
        self.strategy = str(strategy)
        self.concurrency = concurrency
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.capabilities = dict(capabilities) if capabilities else None
        self.shutdown_grace = float(shutdown_grace)
        self.heartbeat_interval = float(heartbeat_interval)
        # Claim a few more than the free slots? No: a claimed task is leased; claim only what runs.
        self.batch_size = batch_size or concurrency
        self.tasks_done = 0
        self.tasks_failed = 0
        self._stop = threading.Event()
        self._done: _stdqueue.SimpleQueue[_Done] = _stdqueue.SimpleQueue()
        self._running: dict[int, _Running] = {}
        self._ready: list[_Done] = []
        self._pool: _ThreadPool | None = None
        self._async_handlers: dict[int, bool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._started = threading.Event()

    # ------------------------------------------------------------------ public
    def stop(self) -> None:
        """Stop claiming; running tasks get ``shutdown_grace`` seconds to finish."""
        self._stop.set()
        try:
            self.queue.wake()
        except QueueError:
            pass

    @property
    def running_count(self) -> int:
        return len(self._running)

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Run until ``stop()`` or SIGTERM/SIGINT, then drain gracefully. Blocks."""
        restore = self._install_signals() if install_signal_handlers else None
        try:
            self._start_loop_thread()
            self._engine()
        finally:
            if restore:
                restore()
            self._stop_loop_thread()

    async def run_async(self) -> None:
        """Run inside the current event loop: async handlers run on it, the engine in a thread."""
        self._loop = asyncio.get_running_loop()
        engine = threading.Thread(target=self._engine, name=f"prismq-engine-{self.worker_id}", daemon=True)
        engine.start()
        try:
            while engine.is_alive():
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.stop()
            while engine.is_alive():
                await asyncio.sleep(0.05)
            raise
        finally:
            self._loop = None

    # ------------------------------------------------------------------ engine
    def _types(self) -> list[str]:
        return sorted(self.registry.get_registered_types())

    def _engine(self) -> None:
        q = self.queue
        self._pool = _ThreadPool(self.concurrency, f"prismq-{self.worker_id}")
        next_beat = 0.0
        next_check = 0.0
        self._started.set()
        log.info("worker %s started (queues=%s, concurrency=%d)", self.worker_id, self.queues or "all", self.concurrency)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.heartbeat_interval
                if now >= next_check and self._running:
                    self._renew_and_enforce(now)
                    next_check = now + min(0.25, self.lease / 4)
                completes, fails = self._collect()
                free = self.concurrency - len(self._running)
                types = self._types() if free > 0 else None
                claimed = 0
                if completes or fails or types:
                    claim = {}
                    if types:
                        claim = dict(
                            worker_id=self.worker_id,
                            strategy=self.strategy,
                            queues=self.queues,
                            types=types,
                            capabilities=self.capabilities,
                            lease=self.lease,
                            limit=min(free, self.batch_size),
                        )
                    tasks = self._settle(completes, fails, claim)
                    claimed = len(tasks)
                    for t in tasks:
                        self._dispatch(t)
                if claimed or completes or fails:
                    continue
                if self._running:
                    self._wait_done(0.05)  # busy: until a handler finishes (or the next check)
                else:
                    q.wait_for_change(self.poll_interval)  # idle: until any process commits
        finally:
            self._drain()
            self._pool.shutdown()
            try:
                q.remove_worker(self.worker_id)
            except QueueError:
                pass
            log.info("worker %s stopped (%d done, %d failed)", self.worker_id, self.tasks_done, self.tasks_failed)

    def _settle(self, completes: list[tuple[Task, Any]], fails: list[tuple[Task, str, bool]], claim: dict[str, Any]) -> list[Task]:
        """Acknowledge and claim in one transaction."""
        try:
            done_ok, _failed_ok, tasks = self.queue.settle(completes, fails, **claim)
        except InvalidArgument:
            if not completes:
                raise
            # A result that cannot be stored (not JSON) fails its own task, not the batch.
            done_ok = [self._complete_one(t, r) for t, r in completes]
            _, _, tasks = self.queue.settle(None, fails, **claim)
        self.tasks_done += sum(done_ok)
        self.tasks_failed += len(fails)
        for t, err, _ in fails:
            log.warning("task %s (%s) attempt %s failed: %s", t.id, t.type, t.attempts, err)
        return list(tasks)

    def _heartbeat(self) -> None:
        try:
            self.queue.heartbeat(self.worker_id, self.capabilities, queues=self.queues, tasks_done=self.tasks_done)
        except QueueError as e:  # never let a heartbeat hiccup stop the worker
            log.warning("heartbeat failed: %s", e)

    def _wait_done(self, timeout: float) -> None:
        """Block until a handler finishes, then linger briefly so that handlers finishing together
        are acknowledged in one transaction."""
        try:
            item = self._done.get(timeout=timeout)
        except _stdqueue.Empty:
            return
        self._ready.append(item)
        linger_until = time.monotonic() + 0.0005
        while len(self._ready) * 2 < len(self._running):
            left = linger_until - time.monotonic()
            if left <= 0:
                break
            try:
                self._ready.append(self._done.get(timeout=left))
            except _stdqueue.Empty:
                break

    def _dispatch(self, task: Task) -> None:
        ctx = TaskContext(task, self.queue, self.worker_id)
        now = time.monotonic()
        timeout = task.timeout
        run = _Running(ctx, now + timeout if timeout else None, now + self.lease / 2)
        self._running[task.id] = run
        try:
            handler = self.registry.get_handler(task.type)
        except Exception as e:  # unregistered meanwhile: fail the attempt, it will retry
            self._done.put(_Done(run, False, e))
            return
        is_async = self._async_handlers.get(id(handler))
        if is_async is None:
            is_async = self._async_handlers[id(handler)] = _is_async(handler)
        if is_async:
            loop = self._loop
            if loop is None:
                self._done.put(_Done(run, False, RuntimeError("no event loop for async handler")))
                return
            asyncio.run_coroutine_threadsafe(self._run_async(handler, run), loop)
        else:
            assert self._pool is not None
            self._pool.submit(self._run_sync, handler, run)

    def _run_sync(self, handler: Callable[..., Any], run: _Running) -> None:
        try:
            result = handler(run.ctx)
        except BaseException as e:  # noqa: BLE001 - the handler's failure is the attempt's result
            self._done.put(_Done(run, False, e, cancelled=run.ctx.cancelled))
        else:
            if inspect.isawaitable(result):  # a sync function that returned a coroutine
                self._done.put(_Done(run, False, TypeError("handler returned an awaitable; declare it async def")))
                if hasattr(result, "close"):
                    result.close()
            else:
                self._done.put(_Done(run, True, result))

    async def _run_async(self, handler: Callable[..., Any], run: _Running) -> None:
        run.ctx._loop_task = asyncio.current_task()
        try:
            result = await handler(run.ctx)
        except asyncio.CancelledError as e:
            self._done.put(_Done(run, False, e, cancelled=True))
        except BaseException as e:  # noqa: BLE001
            self._done.put(_Done(run, False, e, cancelled=run.ctx.cancelled))
        else:
            self._done.put(_Done(run, True, result))

    def _collect(self) -> tuple[list[tuple[Task, Any]], list[tuple[Task, str, bool]]]:
        """Everything handlers finished since last time, as acknowledgements to send."""
        completes: list[tuple[Task, Any]] = []
        fails: list[tuple[Task, str, bool]] = []
        ready, self._ready = self._ready, []
        while True:
            try:
                ready.append(self._done.get_nowait())
            except _stdqueue.Empty:
                break
        for d in ready:
            run = d.running
            tid = run.ctx.task.id
            if self._running.get(tid) is run:
                del self._running[tid]
            if run.finished:
                continue  # already failed by timeout, or handed back
            run.finished = True
            if d.ok:
                completes.append((run.ctx.task, d.value))
            elif d.cancelled or run.ctx.cancelled:
                continue  # cancelled by a user or lease lost: the queue already knows
            else:
                fails.append((run.ctx.task, _describe(d.value), True))
        return completes, fails

    def _flush(self) -> None:
        completes, fails = self._collect()
        if completes or fails:
            self._settle(completes, fails, {})

    def _complete_one(self, task: Task, result: Any) -> bool:
        try:
            self.queue.complete(task, result)
            return True
        except LeaseLost:
            return False
        except QueueError as e:
            self.queue.fail_many([(task, f"result could not be stored: {e}", True)])
            self.tasks_failed += 1
            return False

    def _renew_and_enforce(self, now: float) -> None:
        for run in list(self._running.values()):
            if run.finished:
                continue
            ctx = run.ctx
            if run.deadline is not None and now >= run.deadline:
                # Fail the attempt now; an async handler is cancelled, a sync one is told via
                # ctx.cancelled and its eventual result is ignored.
                run.finished = True
                ctx._set_cancelled()
                err = f"TimeoutError: attempt ran longer than its timeout of {ctx.task.timeout:g}s"
                try:
                    self.queue.fail(ctx.task, err)
                except LeaseLost:
                    pass
                self.tasks_failed += 1
                continue
            if now >= run.lease_renew_at:
                try:
                    self.queue.renew(ctx.task, self.lease)
                    run.lease_renew_at = now + self.lease / 2
                except LeaseLost:
                    run.finished = True
                    ctx._set_cancelled()  # cancelled by a user, or taken over: stop the handler
                except QueueError as e:
                    log.warning("lease renewal of task %s failed: %s", ctx.task.id, e)
        self._check_cancellations()

    def _check_cancellations(self) -> None:
        """Tasks cancelled by someone else: tell their handlers."""
        ids = [tid for tid, r in self._running.items() if not r.finished]
        if not ids:
            return
        for tid in ids:
            try:
                status = self.queue.get(tid).status
            except TaskNotFound:
                status = "cancelled"
            if status != "running":
                run = self._running.get(tid)
                if run is not None:
                    run.finished = status != "running"
                    run.ctx._set_cancelled()

    def _drain(self) -> None:
        """Graceful shutdown: let running tasks finish within the grace period, then hand back
        what is left without counting the attempt."""
        deadline = time.monotonic() + self.shutdown_grace
        while self._running and time.monotonic() < deadline:
            self._wait_done(min(0.05, max(0.0, deadline - time.monotonic())))
            self._flush()
            if self._running:
                self._renew_and_enforce(time.monotonic())
        self._flush()
        for run in list(self._running.values()):
            if run.finished:
                continue
            run.finished = True
            run.ctx._set_cancelled()
            try:
                self.queue.release(run.ctx.task)
                log.info("task %s handed back to the queue at shutdown", run.ctx.task.id)
            except QueueError as e:
                log.warning("could not hand back task %s: %s", run.ctx.task.id, e)
        self._running.clear()

    # ------------------------------------------------------------------ plumbing
    def _start_loop_thread(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run_loop() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._loop_thread = threading.Thread(target=run_loop, name=f"prismq-loop-{self.worker_id}", daemon=True)
        self._loop_thread.start()
        ready.wait()

    def _stop_loop_thread(self) -> None:
        loop, thread = self._loop, self._loop_thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()
        self._loop = None
        self._loop_thread = None

    def _install_signals(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous: dict[int, Any] = {}

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("worker %s received signal %d: draining", self.worker_id, signum)
            self.stop()

        for name in ("SIGTERM", "SIGINT", "SIGBREAK"):  # SIGBREAK: Ctrl-Break on Windows
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                previous[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass

        def restore() -> None:
            for sig, handler in previous.items():
                try:
                    signal.signal(sig, handler)
                except (ValueError, OSError):
                    pass

        return restore


class _ThreadPool:
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


def _is_async(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    inner = getattr(handler, "func", None)  # functools.partial
    if inner is not None and inspect.iscoroutinefunction(inner):
        return True
    call = getattr(handler, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    msg = str(exc)
    return f"{name}: {msg}" if msg else name
