"""The worker runtime: claims tasks for the types it has handlers for and runs them.

One *engine* thread per worker owns every conversation with the queue: it claims as many tasks
as there are free slots, hands them to the handlers (sync handlers on a thread pool, async ones on
an event loop), and acknowledges finished tasks in batches: many handlers' results are committed
in one transaction, together with the next claim. Handlers never touch the database themselves
except through their context (progress, logs), so a no-op task costs a few tens of microseconds
of Python and a share of one commit.

Idle workers sleep in ``Queue.wait_for_change``: a commit by any process wakes them within a couple
of milliseconds, with the GIL released and no busy polling.

When the database stops accepting this worker's writes (a full disk, an I/O error, a lock held past
``busy_timeout``), the worker rides it out: finished results stay in memory until a settle commits
them (completions and failures are fenced by lease tokens, so re-sending a batch that did commit
changes nothing), it stops claiming, renews the leases it holds, and retries with a bounded
exponential backoff until the database takes writes again. Only ``stop()`` (or a signal) ends it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue as _stdqueue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable

from ._prismq_queue import Queue, Task
from ._scheduler import SchedulerTimer
from ._worker_state import (
    FailedAttempt,
    HandlerResult,
    HandlerThreads,
    HeldTask,
    Outage,
    check_worker_options,
    default_worker_id,
    describe_exception,
    first_line,
    install_stop_signals,
    is_async_handler,
    log_completions,
    log_failure,
    traceback_text,
)
from .errors import DatabaseError, InvalidArgument, LeaseLost, QueueError, TaskNotFound
from .task_context import TaskCancelled, TaskContext

log = logging.getLogger("prismq_queue.worker")

#: Backoff between attempts to write while the database refuses writes: the first delay and the
#: cap (also at most a quarter of the lease, so held leases are renewed in time).
RETRY_FIRST = 0.1
RETRY_CAP = 5.0
#: ``DatabaseError.kind`` values that waiting cannot fix (the file was replaced or deleted under
#: the worker, or is damaged): the worker stops, so that a supervisor restarts it on the file that
#: is there now, instead of writing results into a file nobody reads.
FATAL_KINDS = frozenset({"file_moved", "corrupt"})

# describe_exception and is_async_handler: imported from here by the manager before the split.
__all__ = ["Worker", "TaskContext", "TaskCancelled", "describe_exception", "is_async_handler"]


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
        run_schedules: bool = True,
    ) -> None:
        check_worker_options(concurrency, lease, poll_interval, heartbeat_interval, shutdown_grace, strategy)
        self.queue = queue
        self.registry = registry
        self.worker_id = worker_id or default_worker_id()
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
        # Periodic tasks: this worker enqueues what is due about once a second (_scheduler.py).
        self._scheduler = SchedulerTimer(queue, on_database_error=self._db_failed) if run_schedules else None
        self.tasks_done = 0
        self.tasks_failed = 0
        #: Set when ``run()`` returns: running tasks handed back to the queue at shutdown; finished
        #: results never saved and tasks left running (both only when the database refused writes
        #: to the end: those tasks run again once their leases expire).
        self.tasks_handed_back = 0
        self.results_unsaved = 0
        self.tasks_left_running = 0
        self._stop = threading.Event()
        self._stopped_by: str | None = None  # the signal that asked the worker to stop
        self._done: _stdqueue.SimpleQueue[HandlerResult] = _stdqueue.SimpleQueue()
        self._running: dict[int, HeldTask] = {}
        self._ready: list[HandlerResult] = []
        # Finished results not committed yet: kept, across database outages, until a settle commits them.
        self._completes: list[tuple[HeldTask, Any]] = []
        self._fails: list[FailedAttempt] = []
        self._outage: Outage | None = None
        self._fatal: DatabaseError | None = None
        self._retry_cap = min(RETRY_CAP, self.lease / 4)
        self._pool: HandlerThreads | None = None
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
        """Run until ``stop()`` or SIGTERM/SIGINT, then drain gracefully. Blocks.

        Database errors that may pass (a full disk, a lock held past ``busy_timeout``, an I/O
        error) are ridden out. One that cannot (the file was replaced or is damaged) stops the
        worker, and ``run()`` raises it."""
        restore = None
        if install_signal_handlers:
            restore = install_stop_signals(self._stop_by_signal, self.shutdown_grace + 5.0)
        try:
            self._start_loop_thread()
            if restore is None:
                self._engine()
            else:
                self._engine_off_the_main_thread()
        finally:
            if restore:
                restore()
            self._stop_loop_thread()
        if self._fatal is not None:
            raise self._fatal

    def _engine_off_the_main_thread(self) -> None:
        """Run the engine on a thread of its own while the main thread only waits for it, so a
        signal handler runs at once and never interrupts one of the engine's waits: a signal that
        interrupts ``SimpleQueue.get(timeout=...)`` can leave that call blocked for good (CPython
        3.9 to 3.12), and the engine waits on one whenever handlers are running."""
        failure: list[BaseException] = []

        def engine() -> None:
            try:
                self._engine()
            except BaseException as e:  # raised again in the caller's thread, below
                failure.append(e)

        thread = threading.Thread(target=engine, name=f"prismq-engine-{self.worker_id}")
        thread.start()
        while thread.is_alive():
            thread.join(0.25)
        if failure:
            raise failure[0]

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
        if self._fatal is not None:
            raise self._fatal

    # ------------------------------------------------------------------ engine
    def _registered_types(self) -> list[str]:
        return sorted(self.registry.get_registered_types())

    def _engine(self) -> None:
        self._pool = HandlerThreads(self.concurrency, f"prismq-{self.worker_id}")
        next_beat = 0.0
        next_check = 0.0
        self._started.set()
        log.debug(
            "worker %s started (queues=%s, concurrency=%d)", self.worker_id, self.queues or "all", self.concurrency
        )
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._outage is not None:
                    self._outage_step(now)
                    continue
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + self.heartbeat_interval
                if self._scheduler is not None:
                    self._scheduler.tick(now)
                if now >= next_check and self._running:
                    self._renew_and_enforce(now)
                    next_check = now + min(0.25, self.lease / 4)
                if self._outage is not None:
                    continue
                self._collect()
                acks = len(self._completes) + len(self._fails)
                claim = self._claim_request()
                tasks = self._ack_and_claim(claim) if acks or claim else []
                for t in tasks:
                    self._dispatch(t)
                if tasks or acks or self._outage is not None:
                    continue
                if self._running:
                    self._wait_done(0.05)  # busy: until a handler finishes (or the next check)
                else:
                    self._wait_for_change()
        finally:
            self._shutdown()

    def _claim_request(self) -> dict[str, Any]:
        """settle()'s claim arguments for the free slots; empty when no slot is free."""
        free = self.concurrency - len(self._running)
        types = self._registered_types() if free > 0 else None
        if not types:
            return {}
        return dict(
            worker_id=self.worker_id,
            strategy=self.strategy,
            queues=self.queues,
            types=types,
            capabilities=self.capabilities,
            lease=self.lease,
            limit=min(free, self.batch_size),
        )

    def _wait_for_change(self) -> None:
        try:
            self.queue.wait_for_change(self.poll_interval)  # until any process commits
        except DatabaseError as e:
            self._db_failed(e)

    def _ack_and_claim(self, claim: dict[str, Any]) -> list[Task]:
        """Acknowledge the kept results and claim in one transaction; on a database error the
        results stay kept and the worker rides the outage out."""
        try:
            return self._commit(claim)
        except DatabaseError as e:
            self._db_failed(e)
            return []

    def _commit(self, claim: dict[str, Any]) -> list[Task]:
        """``_settle`` that raises ``DatabaseError``. Re-sending a batch that did commit (the call
        raised after the commit) changes nothing: each acknowledgement is fenced by its lease token."""
        completes, fails = self._completes, self._fails
        try:
            done, failed, tasks = self.queue.settle(
                [(run.ctx.task, value) for run, value in completes],
                [(f.run.ctx.task, f.error, f.retry, f.traceback) for f in fails],
                **claim,
            )
        except InvalidArgument:
            if not completes:
                raise
            self._set_aside_unstorable()
            return self._commit(claim)
        self._completes, self._fails = [], []
        self._report(completes, done, fails, failed)
        return list(tasks)

    def _set_aside_unstorable(self) -> None:
        """A result that cannot be stored (not JSON) fails its own task, not the batch: commit the
        results one by one; a refused one becomes a failed attempt."""
        completes, self._completes = self._completes, []
        for i, (run, value) in enumerate(completes):
            try:
                [ok], _, _ = self.queue.settle([(run.ctx.task, value)], None)
            except InvalidArgument as e:
                self._fails.append(FailedAttempt(run, f"result could not be stored: {e}", True, None))
            except DatabaseError:
                self._completes = completes[i:]
                raise
            else:
                self._report([(run, value)], [ok], [], [])

    def _report(
        self,
        completes: list[tuple[HeldTask, Any]],
        done: Sequence[bool],
        fails: list[FailedAttempt],
        failed: Sequence[bool],
    ) -> None:
        """Count committed acknowledgements: a line per failed attempt, and per task at debug level."""
        self.tasks_done += sum(done)
        log_completions(completes, done)
        for (run, err, retry, _), ok in zip(fails, failed):
            t = run.ctx.task
            if not ok:
                log.debug("task %s (%s): failure dropped: this worker no longer held the task", t.id, t.type)
                continue
            self.tasks_failed += 1
            log_failure(t, err, retry)

    def _heartbeat(self) -> None:
        try:
            self._send_heartbeat()
        except DatabaseError as e:
            self._db_failed(e)
        except QueueError as e:  # never let a heartbeat hiccup stop the worker
            log.warning("heartbeat failed: %s", e)

    def _send_heartbeat(self) -> None:
        self.queue.heartbeat(
            self.worker_id,
            self.capabilities,
            queues=self.queues,
            tasks_done=self.tasks_done,
            concurrency=self.concurrency,
        )

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
        run = HeldTask(ctx, now + timeout if timeout else None, now + self.lease / 2, now)
        self._running[task.id] = run
        try:
            handler = self.registry.get_handler(task.type)
        except Exception as e:  # unregistered meanwhile: fail the attempt, it will retry
            self._done.put(HandlerResult(run, False, e))
            return
        is_async = self._async_handlers.get(id(handler))
        if is_async is None:
            is_async = self._async_handlers[id(handler)] = is_async_handler(handler)
        if is_async:
            loop = self._loop
            if loop is None:
                self._done.put(HandlerResult(run, False, RuntimeError("no event loop for async handler")))
                return
            asyncio.run_coroutine_threadsafe(self._run_async(handler, run), loop)
        else:
            assert self._pool is not None
            self._pool.submit(self._run_sync, handler, run)

    def _run_sync(self, handler: Callable[..., Any], run: HeldTask) -> None:
        try:
            result = handler(run.ctx)
        except BaseException as e:  # noqa: BLE001 - the handler's failure is the attempt's result
            self._done.put(HandlerResult(run, False, e, cancelled=run.ctx.cancelled))
        else:
            if inspect.isawaitable(result):  # a sync function that returned a coroutine
                self._done.put(
                    HandlerResult(run, False, TypeError("handler returned an awaitable; declare it async def"))
                )
                if hasattr(result, "close"):
                    result.close()
            else:
                self._done.put(HandlerResult(run, True, result))

    async def _run_async(self, handler: Callable[..., Any], run: HeldTask) -> None:
        run.ctx._loop_task = asyncio.current_task()
        try:
            result = await handler(run.ctx)
        except asyncio.CancelledError as e:
            self._done.put(HandlerResult(run, False, e, cancelled=True))
        except BaseException as e:  # noqa: BLE001
            self._done.put(HandlerResult(run, False, e, cancelled=run.ctx.cancelled))
        else:
            self._done.put(HandlerResult(run, True, result))

    def _collect(self) -> None:
        """Keep everything handlers finished since last time, as acknowledgements to send."""
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
                self._completes.append((run, d.value))
            elif d.cancelled or run.ctx.cancelled:
                continue  # cancelled by a user or lease lost: the queue already knows
            else:
                error = describe_exception(d.value)
                self._fails.append(FailedAttempt(run, error, True, traceback_text(d.value, skip_file=__file__)))

    def _renew_and_enforce(self, now: float) -> None:
        self._enforce_timeouts(now)
        try:
            self._renew_due(now)
        except DatabaseError as e:
            self._db_failed(e)
            return
        self._check_cancellations()

    def _enforce_timeouts(self, now: float) -> None:
        """Fail attempts that ran past their timeout (committed with the next settle); an async
        handler is cancelled, a sync one is told via ctx.cancelled and its late result ignored."""
        for run in list(self._running.values()):
            if run.finished or run.deadline is None or now < run.deadline:
                continue
            run.finished = True
            run.ctx._set_cancelled()
            err = f"TimeoutError: attempt ran longer than its timeout of {run.ctx.task.timeout:g}s"
            self._fails.append(FailedAttempt(run, err, True, None))  # the engine's own stack says nothing

    def _renew_due(self, now: float) -> None:
        """Renew the leases due: of running handlers, and of finished results not committed yet (so
        that no other worker takes their tasks over while a database outage lasts). Raises
        ``DatabaseError``."""
        held = [r for r in self._running.values() if not r.finished]
        held += [r for r, _ in self._completes]
        held += [f.run for f in self._fails]
        for run in held:
            if now < run.lease_renew_at:
                continue
            try:
                self.queue.renew(run.ctx.task, self.lease)
            except LeaseLost:
                run.lease_renew_at = float("inf")  # the settle drops its result
                if not run.finished:
                    run.finished = True
                    run.ctx._set_cancelled()  # cancelled by a user, or taken over: stop the handler
                continue
            run.lease_renew_at = now + self.lease / 2

    def _check_cancellations(self) -> None:
        """Tasks cancelled by someone else: tell their handlers."""
        ids = [tid for tid, r in self._running.items() if not r.finished]
        for tid in ids:
            try:
                status = self.queue.get(tid).status
            except TaskNotFound:
                status = "cancelled"
            except DatabaseError as e:  # reads fail too: check again next time
                log.debug("cancellation check failed: %s", e)
                return
            if status != "running":
                run = self._running.get(tid)
                if run is not None:
                    run.finished = True
                    run.ctx._set_cancelled()

    # ------------------------------------------------------------------ database outages
    def _db_failed(self, e: DatabaseError) -> None:
        """A database call failed: ride it out with backoff, or stop for good when waiting cannot
        fix it. Logged once per outage, not per attempt."""
        now = time.monotonic()
        if getattr(e, "kind", None) in FATAL_KINDS:
            if self._fatal is None:
                log.error("worker %s stops: the database cannot be used any more: %s", self.worker_id, e)
            self._fatal = e
            self._stop.set()
            return
        outage = self._outage
        if outage is None:
            outage = self._outage = Outage(now, e)
            log.warning(
                "database writes are failing: %s. Worker %s keeps its finished results in memory (%d so far), "
                "stops claiming, and tries again with backoff (at most %gs apart) until the database takes writes",
                first_line(str(e)),
                self.worker_id,
                len(self._completes) + len(self._fails),
                self._retry_cap,
            )
        else:
            log.debug("database writes still failing (attempt %d): %s", outage.attempts + 1, e)
        outage.error = e
        outage.attempts += 1
        delay = min(self._retry_cap, RETRY_FIRST * 2 ** min(outage.attempts - 1, 30))
        outage.next_try = now + delay * random.uniform(0.5, 1.0)

    def _outage_step(self, now: float) -> None:
        """One step of an outage: enforce timeouts, keep what handlers finish, and try writing
        again when the backoff allows."""
        outage = self._outage
        assert outage is not None
        self._enforce_timeouts(now)
        if now >= outage.next_try:
            self._retry_writes()
            return
        wait = outage.next_try - now
        if self._running:
            self._wait_done(min(0.05, wait))
        else:
            self._stop.wait(wait)
        self._collect()

    def _retry_writes(self) -> None:
        """Try writing again: renew the leases due, then commit the kept results (with none kept,
        send a heartbeat). The outage ends when that commits."""
        self._collect()
        try:
            self._renew_due(time.monotonic())
            if self._completes or self._fails:
                self._commit({})
            else:
                self._send_heartbeat()
        except DatabaseError as e:
            self._db_failed(e)
            return
        outage, self._outage = self._outage, None
        if outage is not None:
            log.warning(
                "database writes work again after %.1fs (%d failed attempts): worker %s saved its results "
                "and claims again",
                time.monotonic() - outage.since,
                outage.attempts,
                self.worker_id,
            )

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        if self._stopped_by is not None:
            log.info(
                "worker %s stopping (%s): running tasks get up to %gs to finish, then go back to the queue",
                self.worker_id,
                self._stopped_by,
                self.shutdown_grace,
            )
        try:
            if self._fatal is None:
                self._drain()
            else:
                self._abandon()
        finally:
            assert self._pool is not None
            self._pool.shutdown()
        self._report_stop()

    def _drain(self) -> None:
        """Graceful shutdown: running tasks get ``shutdown_grace`` to finish (their results are
        committed as they come, or kept through an outage), then what still runs is handed back
        without counting the attempt."""
        deadline = time.monotonic() + self.shutdown_grace
        while self._running and self._fatal is None:
            now = time.monotonic()
            if now >= deadline:
                break
            if self._outage is not None:
                self._outage_step(now)
                continue
            self._wait_done(min(0.05, deadline - now))
            self._collect()
            if self._completes or self._fails:
                self._ack_and_claim({})
            if self._running and self._outage is None:
                self._renew_and_enforce(time.monotonic())
        self._collect()
        if self._fatal is not None:
            self._abandon()
            return
        back = [run for run in self._running.values() if not run.finished]
        for run in back:
            run.finished = True
            run.ctx._set_cancelled()
        self._running.clear()
        self._hand_back(back, deadline)

    def _hand_back(self, back: list[HeldTask], deadline: float) -> None:
        """Commit the kept results, hand ``back`` to the queue, remove the worker's row; retried
        with backoff while the database refuses writes, until ``deadline`` (at least once)."""
        row_removed = False
        while True:
            try:
                if self._completes or self._fails:
                    self._commit({})
                while back:
                    self._release(back[0])
                    back.pop(0)
                if not row_removed:
                    self.queue.remove_worker(self.worker_id)
                    row_removed = True
                break
            except DatabaseError as e:
                self._db_failed(e)
                left = deadline - time.monotonic()
                if self._fatal is not None or left <= 0 or self._outage is None:
                    break
                time.sleep(min(left, max(0.0, self._outage.next_try - time.monotonic())))
            except QueueError as e:  # the queue was closed under the worker: nothing more can be written
                log.warning("worker %s could not finish its shutdown: %s", self.worker_id, e)
                break
        self.results_unsaved = len(self._completes) + len(self._fails)
        self.tasks_left_running = len(back)

    def _release(self, run: HeldTask) -> None:
        task = run.ctx.task
        try:
            released = self.queue.release(task)
        except DatabaseError:
            raise
        except QueueError as e:
            log.warning("could not hand back task %s: %s", task.id, e)
            return
        if released:
            self.tasks_handed_back += 1
            log.debug("task %s (%s) handed back to the queue", task.id, task.type)

    def _abandon(self) -> None:
        """The database cannot be used any more: stop the handlers and write nothing."""
        self._collect()
        left = [run for run in self._running.values() if not run.finished]
        for run in left:
            run.finished = True
            run.ctx._set_cancelled()
        self._running.clear()
        self.results_unsaved = len(self._completes) + len(self._fails)
        self.tasks_left_running = len(left)

    def _report_stop(self) -> None:
        summary = (
            f"{self.tasks_done} done, {self.tasks_failed} failed, "
            f"{self.tasks_handed_back} {'lease' if self.tasks_handed_back == 1 else 'leases'} handed back"
        )
        if not (self.results_unsaved or self.tasks_left_running):
            log.info("worker %s stopped: %s", self.worker_id, summary)
            return
        cause = self._fatal or (self._outage.error if self._outage else None)
        log.error(
            "worker %s stopped (%s) without saving %d finished results or handing back %d running tasks: the "
            "database did not take writes (%s); those tasks run again once their leases expire",
            self.worker_id,
            summary,
            self.results_unsaved,
            self.tasks_left_running,
            first_line(str(cause)),
        )

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

    def _stop_by_signal(self, name: str) -> None:
        # Only the stop itself: the engine logs why it stops. Logging here could re-enter a
        # stream the interrupted code was writing, raise, and lose the stop.
        self._stopped_by = name
        self.stop()
