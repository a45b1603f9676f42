"""``QueuedTaskManager``: ``BackgroundTaskManager``'s contract, with every run mirrored as a task
row of the queue file, durable tasks executed by workers of any process, and crash recovery (see
the package doc)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Mapping
from datetime import datetime, timedelta
from typing import Any, Callable, Optional, Union

from .._prismq_queue import Queue, Task
from .._worker_state import is_async_handler
from ..errors import InvalidArgument, LeaseLost, QueueError, TaskNotFound
from ..registry import TaskHandlerRegistry
from ..worker import Worker
from .base import ManagerBase, Outcome, RunState
from .holders import HOST, LIVE_TOKENS, holder_id, holder_is_dead
from .run_fields import as_utc, mark_finished, mark_running, set_fields, status_of
from .runs import RunStatus, open_queue

log = logging.getLogger("prismq_queue.manager")

#: The queue in which in-process runs are mirrored.
RUNS_QUEUE = "runs"


def _jsonable_parameters(run: Any) -> Any:
    params = getattr(run, "parameters", None)
    if params is None:
        return {}
    if hasattr(run, "model_dump"):
        try:
            return run.model_dump(mode="json", include={"parameters"}).get("parameters", {})
        except Exception:  # noqa: BLE001 - fall back to a plain conversion below
            pass
    return json.loads(json.dumps(params, default=str))


class _Entry(RunState):
    """One in-process run of a QueuedTaskManager."""

    __slots__ = ("start_error", "row", "renew_at", "lost", "finishing")

    def __init__(self, run: Any, coro: Awaitable[Any]) -> None:
        super().__init__(run, coro)
        self.start_error: Optional[Exception] = None
        self.row: Optional[Task] = None
        self.renew_at = 0.0
        self.lost: Optional[str] = None  # why the row is no longer ours (cancelled elsewhere, taken over)
        self.finishing = False


class QueuedTaskManager(ManagerBase):
    """``BackgroundTaskManager``'s contract, with every run mirrored as a task row of ``queue``,
    durable tasks executed by workers of any process, and crash recovery.

    ``queue``: a ``Queue`` or a path (then the manager opens it and closes it in ``close()``).
    ``registry``: a ``RunRegistry`` or any object with ``update_run`` (and, for recovery to update
    runs, ``get_run`` and ``get_active_runs``). Options:

    * ``handlers``: the ``TaskHandlerRegistry`` that ``register_task`` fills (a new one by default);
    * ``queue_name``: the queue ``schedule_task`` uses and re-runs go to (``"default"``);
    * ``runs_queue``: the queue in-process runs are mirrored in (``"runs"``);
    * ``lease``: seconds of a run row's lease, renewed every third of it by a thread (60);
    * ``rerun_attempts``: attempts a re-run of an interrupted run gets (3);
    * ``max_attempts``: default ``max_attempts`` of scheduled tasks (5);
    * ``worker_options``: keyword arguments of the embedded ``Worker`` (``concurrency``, ``lease``,
      ``poll_interval``, ``shutdown_grace``, ``queues``, ...);
    * ``auto_recover``: recover on first use (True); ``recover_interval``: seconds between later
      recoveries (default: the lease; 0 turns them off); ``check_interval``: seconds between checks that
      an active run's row was not cancelled from elsewhere (1.0).
    """

    def __init__(
        self,
        queue: Union[Queue, str, os.PathLike[str]],
        registry: Any,
        *,
        handlers: Optional[TaskHandlerRegistry] = None,
        queue_name: str = "default",
        runs_queue: str = RUNS_QUEUE,
        lease: float = 60.0,
        rerun_attempts: int = 3,
        max_attempts: int = 5,
        worker_options: Optional[Mapping[str, Any]] = None,
        auto_recover: bool = True,
        recover_interval: Optional[float] = None,
        check_interval: float = 1.0,
    ) -> None:
        super().__init__(registry)
        if not callable(getattr(registry, "update_run", None)):
            raise InvalidArgument(
                "registry must have an update_run(run) method (a RunRegistry or the app's own registry)"
            )
        for name, value in (("lease", lease), ("check_interval", check_interval)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
        for name, text in (("queue_name", queue_name), ("runs_queue", runs_queue)):
            if not isinstance(text, str) or not text.strip():
                raise InvalidArgument(f"{name} must be a non-empty string, got {text!r}")
        for name, value, low in (("rerun_attempts", rerun_attempts, 0), ("max_attempts", max_attempts, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise InvalidArgument(f"{name} must be an integer >= {low}, got {value!r}")
        if queue_name == runs_queue:
            raise InvalidArgument("queue_name and runs_queue must differ: re-runs leave the runs queue")
        self.queue, self._owns_queue = open_queue(queue)
        self.handlers = handlers if handlers is not None else TaskHandlerRegistry()
        self.queue_name = queue_name
        self.runs_queue = runs_queue
        self.lease = float(lease)
        self.rerun_attempts = int(rerun_attempts)
        self.max_attempts = int(max_attempts)
        self.worker_options = dict(worker_options or {})
        self.auto_recover = bool(auto_recover)
        if recover_interval is not None and (not isinstance(recover_interval, (int, float)) or recover_interval < 0):
            raise InvalidArgument(
                f"recover_interval must be a number of seconds >= 0 (0: off), got {recover_interval!r}"
            )
        self.recover_interval = self.lease if recover_interval is None else float(recover_interval)
        self.check_interval = float(check_interval)
        self._token = uuid.uuid4().hex[:12]
        #: The lease holder of this manager's run rows (host-pid-runs-token).
        self.worker_id = holder_id(self._token)
        LIVE_TOKENS.add(self._token)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prismq-manager")
        self._active: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop = threading.Event()
        self._worker: Optional[Worker] = None
        self._worker_task: Optional[asyncio.Task[None]] = None
        self._recovered = False
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        # Threads start here, not on first use: starting a thread can take tens of milliseconds on
        # a busy machine, and start_task must return at once.
        self._keeper = threading.Thread(target=self._keep_leases, name=f"prismq-keeper-{self._token}", daemon=True)
        self._keeper.start()
        self._executor.submit(lambda: None)

    def __repr__(self) -> str:
        types = sorted(self.handlers.get_registered_types())
        return f"QueuedTaskManager({self.queue.path!r}, active={len(self.tasks)}, types={types})"

    # ------------------------------------------------------------------ lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise QueueError("this QueuedTaskManager is closed: create a new one")

    def _ensure_started(self, *, recover: bool) -> asyncio.AbstractEventLoop:
        self._check_open()
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and self._loop.is_running():
                raise QueueError("a QueuedTaskManager serves one event loop; create one manager per loop")
            self._loop = loop  # first use, or the earlier loop has ended
            self._worker, self._worker_task = None, None
        if self._worker is None and self.handlers.get_registered_types():
            self._start_worker(loop)
        if recover and self.auto_recover and not self._recovered:
            self._recovered = True
            # In the background: start_task must return at once. A run started meanwhile with the
            # id of a crashed run takes its row over itself (see _start_row).
            fut = self._executor.submit(self._recover_rows)
            self._spawn(self._apply_recovery(fut))
        return loop

    def _spawn(self, coro: Awaitable[Any]) -> None:
        assert self._loop is not None
        t = self._loop.create_task(coro)  # type: ignore[arg-type,var-annotated]
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        options: dict[str, Any] = {"worker_id": f"{HOST}-{os.getpid()}-worker-{self._token}", "shutdown_grace": 10.0}
        options.update(self.worker_options)
        self._worker = Worker(self.queue, self.handlers, **options)
        self._worker_task = loop.create_task(self._worker.run_async(), name="prismq-embedded-worker")

    async def close(self) -> None:
        """Stop: cancel the runs still active (they end CANCELLED), stop the embedded worker (its
        running tasks get its ``shutdown_grace`` to finish, then are handed back to the queue), and
        stop renewing. Call ``wait_all()`` first to let runs finish. Idempotent."""
        if self._closed:
            return
        self._closed = True  # no new runs from here on
        await self._cancel_all()
        if self._worker is not None and self._worker_task is not None:
            self._worker.stop()
            await asyncio.gather(self._worker_task, return_exceptions=True)
        for t in list(self._background):
            t.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._stop.set()
        keeper = self._keeper
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown_threads, keeper)
        LIVE_TOKENS.discard(self._token)
        if self._owns_queue:
            self.queue.close()

    def _shutdown_threads(self, keeper: Optional[threading.Thread]) -> None:
        if keeper is not None:
            keeper.join(timeout=10)
        self._executor.shutdown(wait=True)

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run a queue call on the manager's thread (in submission order), awaitably."""
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    # ------------------------------------------------------------------ in-process runs
    def _new_state(self, run: Any, coro: Awaitable[Any]) -> _Entry:
        self._ensure_started(recover=True)
        entry = _Entry(run, coro)
        # Written before start_task returns (a short write transaction): the run is visible to
        # every process at once, and a cancellation at any point finds its row.
        try:
            self._start_row(entry)
        except Exception as e:  # noqa: BLE001 - the run fails with it (exceptions never escape start_task)
            entry.start_error = e
        return entry

    def _register(self, state: RunState) -> None:
        with self._lock:
            self._active[state.run_id] = state  # type: ignore[assignment]

    def _forget(self, entry: _Entry) -> None:
        with self._lock:
            if self._active.get(entry.run_id) is entry:
                del self._active[entry.run_id]

    def _start_row(self, entry: _Entry) -> Task:
        run = entry.run
        run_type = str(getattr(run, "module_id", None) or "run")

        def start(takeover_from: Optional[list[str]] = None) -> Task:
            return self.queue.start_run(
                entry.run_id,
                run_type,
                _jsonable_parameters(run),
                worker_id=self.worker_id,
                queue=self.runs_queue,
                lease=self.lease,
                rerun_attempts=self.rerun_attempts,
                takeover_from=takeover_from,
            )

        try:
            row = start()
        except InvalidArgument:
            # Held by another manager: take it over only when that holder is known to be dead
            # (a crashed process of this host); otherwise the refusal stands.
            existing = self.queue.find(entry.run_id)
            holder = existing.locked_by if existing is not None and existing.status == "running" else None
            if holder is None or not holder_is_dead(holder):
                raise
            row = start(takeover_from=[holder])
        entry.row = row
        entry.renew_at = time.monotonic() + self.lease / 3
        return row

    async def _on_started(self, state: _Entry) -> None:
        if state.start_error is not None:
            raise state.start_error

    async def _on_finished(self, state: _Entry, outcome: Outcome, error: Optional[BaseException], result: Any) -> None:
        state.finishing = True
        try:
            self._finish_row(state, outcome, error, result)
        finally:
            self._forget(state)

    def _finish_unstarted(self, state: _Entry) -> None:
        state.finishing = True
        try:
            self._finish_row(state, Outcome.CANCELLED, None, None)
        finally:
            self._forget(state)

    def _finish_row(self, entry: _Entry, outcome: Outcome, error: Optional[BaseException], result: Any) -> None:
        row = entry.row
        if row is None:  # the row could not be written: nothing to finish
            return
        if entry.lost is not None:
            log.info("run %s: task %s left as it is (%s)", entry.run_id, row.id, entry.lost)
            return
        try:
            if outcome is Outcome.COMPLETED:
                try:
                    self.queue.complete(row, result)
                except InvalidArgument:  # a result that is not JSON: the run still completed
                    self.queue.complete(row, None)
            elif outcome is Outcome.FAILED:
                # The exception itself: its traceback is stored with the attempt.
                self.queue.fail(row, error if error is not None else "failed", retry=False)
            else:
                self.queue.cancel(row.id)
        except LeaseLost as e:
            log.warning("run %s: task %s was no longer held by this manager: %s", entry.run_id, row.id, e)
        except QueueError as e:
            log.error("run %s: could not record its end on task %s: %s", entry.run_id, row.id, e)

    # ------------------------------------------------------------------ keeper thread
    def _keep_leases(self) -> None:
        """Renew the leases of active runs, notice rows cancelled elsewhere, and recover others'
        interrupted runs now and then. A thread, so a busy event loop cannot let leases lapse."""
        next_recover = time.monotonic() + (self.recover_interval or 0)
        while not self._stop.wait(self.check_interval):
            loop = self._loop
            if loop is None or loop.is_closed():
                continue  # not in use yet, or its loop has ended (and its runs with it)
            with self._lock:
                entries = [e for e in self._active.values() if e.row is not None and not e.finishing and e.lost is None]
            now = time.monotonic()
            for e in entries:
                row = e.row
                assert row is not None
                try:
                    if now >= e.renew_at:
                        self.queue.renew(row, self.lease)
                        e.renew_at = now + self.lease / 3
                    else:
                        current = self.queue.get(row.id)
                        if current.status != "running" or current.locked_by != self.worker_id:
                            raise LeaseLost(f"task {row.id} is {current.status}, held by {current.locked_by}")
                except (LeaseLost, TaskNotFound) as err:
                    if not e.finishing:
                        self._cancel_lost_run(e, str(err))
                except QueueError as err:
                    log.warning("run %s: lease renewal failed: %s", e.run_id, err)
            if self.recover_interval and now >= next_recover:
                next_recover = now + self.recover_interval
                loop = self._loop
                if loop is not None and loop.is_running() and not self._closed:
                    try:
                        asyncio.run_coroutine_threadsafe(self._periodic_recover(), loop)
                    except RuntimeError:
                        pass

    def _cancel_lost_run(self, entry: _Entry, why: str) -> None:
        entry.lost = why
        log.warning(
            "run %s: its task was cancelled or taken over elsewhere (%s): cancelling the run", entry.run_id, why
        )
        loop, task = self._loop, entry.task
        if loop is not None and task is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass

    async def _periodic_recover(self) -> None:
        try:
            await self.recover()
        except QueueError as e:
            log.warning("periodic recovery failed: %s", e)

    # ------------------------------------------------------------------ recovery
    async def recover(self) -> list[dict[str, Any]]:
        """Handle runs interrupted by a process that died: re-queue them for the durable handler
        of their type when one is registered here, otherwise mark them failed as interrupted; and
        bring runs of the registry that are no longer running anywhere up to date with their task.
        Returns what was done, one dict per interrupted run (task_id, run_id, type, holder,
        requeued, error)."""
        self._ensure_started(recover=False)
        self._recovered = True
        return await self._apply_recovery(self._executor.submit(self._recover_rows))

    def _recover_rows(self) -> list[dict[str, Any]]:
        dead: set[str] = set()
        after = None
        while True:
            page = self.queue.list(status="running", queue=self.runs_queue, limit=1000, after_id=after)
            if not page:
                break
            dead.update(t.locked_by for t in page if t.locked_by and holder_is_dead(t.locked_by))
            after = page[-1].id
        return self.queue.recover_runs(
            queue=self.runs_queue,
            rerun_types=sorted(self.handlers.get_registered_types()),
            rerun_queue=self.queue_name,
            dead_holders=sorted(dead),
        )

    async def _apply_recovery(self, fut: concurrent.futures.Future[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        report = await asyncio.wrap_future(fut)
        get_run = getattr(self.registry, "get_run", None)
        for item in report:
            log.warning("recovered task %s (%s): %s", item["task_id"], item["type"], item["error"])
            # A re-queued run keeps its status until its re-run starts (the durable handler's
            # wrapper records it): marking it here could overwrite a re-run that already began.
            if item["requeued"] or not item["run_id"] or not callable(get_run) or item["run_id"] in self.tasks:
                continue
            run = get_run(item["run_id"])
            if run is not None and status_of(run) in ("queued", "running"):
                mark_finished(run, RunStatus.FAILED, RuntimeError(item["error"]))
                self.registry.update_run(run)
        await self._reconcile()
        return report

    async def _reconcile(self) -> None:
        """Runs the registry still shows active whose task has finished (re-run by a worker of
        another process, failed by another manager's recovery): give them their task's outcome."""
        active = getattr(self.registry, "get_active_runs", None)
        if not callable(active):
            return
        ids = [r.run_id for r in active() if getattr(r, "run_id", None) and r.run_id not in self.tasks]
        if not ids:
            return
        rows = await self._in_thread(lambda: {i: self.queue.find(i) for i in ids})
        get_run = getattr(self.registry, "get_run", None)
        for run_id, row in rows.items():
            if row is None or row.status not in ("completed", "failed", "cancelled") or row.finished_at is None:
                continue
            if run_id in self.tasks:
                continue  # started again meanwhile
            # Read it again now: a re-run may have recorded its end while we looked the rows up.
            run = get_run(run_id) if callable(get_run) else None
            if run is None or status_of(run) not in ("queued", "running"):
                continue
            created = as_utc(getattr(run, "created_at", None))
            if created is not None and row.finished_at < created - timedelta(milliseconds=1):
                continue  # the task of an earlier run with the same id
            final = RunStatus(row.status)
            error = RuntimeError(row.error) if row.error and final is RunStatus.FAILED else None
            mark_finished(run, final, error, row.finished_at)
            self.registry.update_run(run)

    # ------------------------------------------------------------------ durable work
    async def register_task(self, task_type: str, handler: Callable[..., Any], description: str = "") -> None:
        """Register a durable handler: it runs tasks of ``task_type`` scheduled by any process, and
        re-runs interrupted runs of that module. It receives a ``TaskContext`` (``ctx.payload``,
        ``ctx.task``, ``ctx.progress()``, ``ctx.log()``, ``ctx.cancelled``); sync or async. The
        embedded worker starts on the running loop with the first handler."""
        loop = self._ensure_started(recover=False)
        self.handlers.register_handler(task_type, self._rerun_aware(handler), description)
        if self._worker is None:
            self._start_worker(loop)

    async def schedule_task(
        self,
        task_type: str,
        payload: Any = None,
        priority: int = 100,
        run_after: Union[datetime, timedelta, None] = None,
        idempotency_key: Optional[str] = None,
        *,
        queue: Optional[str] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Enqueue durable work for a worker of any process; returns the task id (as a string).
        ``run_after``: a timezone-aware datetime, or a timedelta from now. The same
        ``idempotency_key`` twice yields the first task's id."""
        self._ensure_started(recover=True)
        delay = None
        if isinstance(run_after, timedelta):
            delay, run_after = run_after, None
        elif run_after is not None and not isinstance(run_after, datetime):
            raise InvalidArgument(
                f"run_after must be a timezone-aware datetime or a timedelta from now, got {type(run_after).__name__}"
            )
        enqueue = functools.partial(
            self.queue.enqueue,
            task_type,
            payload,
            queue=queue or self.queue_name,
            priority=priority,
            delay=delay,
            run_after=run_after,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts or self.max_attempts,
            timeout=timeout,
        )
        task_id = await self._in_thread(enqueue)
        return str(task_id)

    async def get_task_status(self, task_id_or_run_id: Union[str, int]) -> dict[str, Any]:
        """The state of a task (by task id) or of a run's task (by run id): task_id, run_id, status
        (a RunStatus value), type, queue, attempts, max_attempts, error_message, created_at,
        started_at, finished_at, locked_by, progress; ``{"status": "not_found", ...}`` when neither."""
        self._ensure_started(recover=True)
        key = task_id_or_run_id
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise InvalidArgument(f"expected a task id or a run id, got {type(key).__name__}")
        task = await self._in_thread(self._lookup, key)
        if task is None:
            return {
                "task_id": str(key),
                "run_id": None,
                "status": "not_found",
                "type": None,
                "queue": None,
                "attempts": 0,
                "max_attempts": 0,
                "error_message": f"no task or run with id {key!r}",
                "created_at": None,
                "started_at": None,
                "finished_at": None,
                "locked_by": None,
                "progress": None,
                "idempotency_key": None,
            }
        return {
            "task_id": str(task.id),
            "run_id": task.idempotency_key if task.queue == self.runs_queue or task.idempotency_key == key else None,
            "status": RunStatus(task.status).value,
            "type": task.type,
            "queue": task.queue,
            "attempts": task.attempts,
            "max_attempts": task.max_attempts,
            "error_message": task.error,
            "created_at": task.created_at,
            "started_at": task.started_at,
            "finished_at": task.finished_at,
            "locked_by": task.locked_by,
            "progress": task.progress,
            "idempotency_key": task.idempotency_key,
        }

    def _lookup(self, key: Union[str, int]) -> Optional[Task]:
        if isinstance(key, int):
            try:
                return self.queue.get(key)
            except TaskNotFound:
                return None
        text = key.strip()
        if text.isascii() and text.isdigit():
            try:
                return self.queue.get(int(text))
            except TaskNotFound:
                pass
        return self.queue.find(key) if key else None

    # ------------------------------------------------------------------ durable handlers and runs
    def _rerun_aware(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a durable handler so that re-running an interrupted run also updates the run."""
        mgr = self
        if is_async_handler(handler):

            @functools.wraps(handler)
            async def run_async(ctx: Any) -> Any:
                run = mgr._run_of(ctx.task)
                if run is not None:
                    mgr._rerun_started(run, ctx.task)
                try:
                    result = await handler(ctx)
                except asyncio.CancelledError:
                    if run is not None:
                        mgr._rerun_ended(run, ctx.task, None, cancelled=True)
                    raise
                except BaseException as e:
                    if run is not None:
                        mgr._rerun_ended(run, ctx.task, e)
                    raise
                if run is not None:
                    mgr._rerun_ended(run, ctx.task, None)
                return result

            return run_async

        @functools.wraps(handler)
        def run_sync(ctx: Any) -> Any:
            if not ctx.task.idempotency_key:  # not a run: no round trip to the loop
                return handler(ctx)
            run = mgr._on_loop(mgr._run_of, ctx.task)
            if run is not None:
                mgr._on_loop(mgr._rerun_started, run, ctx.task)
            try:
                result = handler(ctx)
            except BaseException as e:
                if run is not None:
                    mgr._on_loop(mgr._rerun_ended, run, ctx.task, e)
                raise
            if run is not None:
                mgr._on_loop(mgr._rerun_ended, run, ctx.task, None)
            return result

        return run_sync

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn`` on the manager's event loop (the registry is the app's, used from one thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        try:
            if asyncio.get_running_loop() is loop:
                return fn(*args)
        except RuntimeError:
            pass

        async def call() -> Any:
            return fn(*args)

        try:
            return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)
        except Exception as e:  # noqa: BLE001 - never fail the task because the run could not be updated
            log.warning("could not update the run of task: %s", e)
            return None

    def _run_of(self, task: Task) -> Any:
        key = task.idempotency_key
        get_run = getattr(self.registry, "get_run", None)
        if not key or not callable(get_run) or key in self.tasks:
            return None
        try:
            return get_run(key)
        except Exception as e:  # noqa: BLE001
            log.warning("could not read run %s: %s", key, e)
            return None

    def _rerun_started(self, run: Any, task: Task) -> None:
        try:
            mark_running(run)
            self.registry.update_run(run)
        except Exception as e:  # noqa: BLE001 - the task runs whatever the registry says
            log.warning("run %s: could not record its re-run: %s", task.idempotency_key, e)

    def _rerun_ended(self, run: Any, task: Task, error: Optional[BaseException], cancelled: bool = False) -> None:
        try:
            if cancelled:  # handed back at shutdown (it will run again), or cancelled for good
                status = RunStatus.QUEUED if task.attempts < task.max_attempts else RunStatus.CANCELLED
                set_fields(run, status=status)
            elif error is None:
                mark_finished(run, RunStatus.COMPLETED, None)
            elif task.attempts < task.max_attempts:  # the worker retries it after a backoff
                set_fields(run, status=RunStatus.QUEUED, error_message=str(error))
            else:
                mark_finished(run, RunStatus.FAILED, error)
            self.registry.update_run(run)
        except Exception as e:  # noqa: BLE001
            log.warning("run %s: could not record the end of its re-run: %s", task.idempotency_key, e)
