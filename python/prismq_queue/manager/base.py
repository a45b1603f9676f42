"""The in-memory manager's contract, which both managers keep: ``ManagerBase`` runs coroutines as
asyncio tasks and records each run's states in the registry; ``BackgroundTaskManager`` is it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable
from enum import Enum
from typing import Any, Optional

from .._worker_state import describe_exception
from ..errors import InvalidArgument
from .run_fields import mark_finished, mark_running
from .runs import RunStatus

log = logging.getLogger("prismq_queue.manager")


def close_unstarted(coro: Any) -> None:
    """Close a coroutine that never started, so Python does not warn that it was never awaited."""
    close = getattr(coro, "close", None)
    if close is not None and inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        close()


class Outcome(Enum):
    """How a run ended, as the run's status."""

    COMPLETED = RunStatus.COMPLETED
    FAILED = RunStatus.FAILED
    CANCELLED = RunStatus.CANCELLED


class RunState:
    """One started run: what the wrapper and the bookkeeping need."""

    __slots__ = ("run", "run_id", "coro", "task", "entered")

    def __init__(self, run: Any, coro: Awaitable[Any]) -> None:
        self.run = run
        self.run_id: str = run.run_id
        self.coro = coro
        self.task: Optional[asyncio.Task[None]] = None
        self.entered = False  # the wrapper started (a task cancelled before its first step never does)


class ManagerBase:
    """The behaviour both managers share: the in-memory manager's contract."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.tasks: dict[str, asyncio.Task[None]] = {}

    # -- hooks (the queue-backed manager fills them in)
    def _check_open(self) -> None:
        return None

    def _new_state(self, run: Any, coro: Awaitable[Any]) -> RunState:
        return RunState(run, coro)

    def _register(self, state: RunState) -> None:
        return None

    async def _on_started(self, state: Any) -> None:
        return None

    async def _on_finished(self, state: Any, outcome: Outcome, error: Optional[BaseException], result: Any) -> None:
        return None

    def _finish_unstarted(self, state: Any) -> None:
        return None

    # -- the contract
    def start_task(self, run: Any, coro: Awaitable[Any]) -> str:
        """Run ``coro`` in the background and track it as ``run``; returns ``run.run_id`` at once.

        Must be called while an event loop runs. The run goes RUNNING when the coroutine starts,
        then COMPLETED (``exit_code = 0``), FAILED (``error_message = str(exc)``) or CANCELLED,
        each saved with ``registry.update_run(run)``. A run id may be started again once its
        earlier run has finished; starting one that is still active raises ``InvalidArgument``.
        """
        try:
            loop = asyncio.get_running_loop()
            self._check_open()
            run_id = getattr(run, "run_id", None)
            if not isinstance(run_id, str) or not run_id:
                raise InvalidArgument(f"run.run_id must be a non-empty string, got {run_id!r}")
            if run_id in self.tasks:
                raise InvalidArgument(
                    f"run {run_id!r} is still active in this manager: cancel it or wait for it to finish "
                    "before starting it again"
                )
            state = self._new_state(run, coro)
        except BaseException:
            close_unstarted(coro)
            raise
        task = loop.create_task(self._execute(state), name=f"prismq-run-{run_id}")
        state.task = task
        self.tasks[run_id] = task
        self._register(state)
        task.add_done_callback(functools.partial(self._task_done, state))
        log.debug("run %s started (%d active)", run_id, len(self.tasks))
        return run_id

    async def _execute(self, state: RunState) -> None:
        state.entered = True
        run, run_id = state.run, state.run_id
        outcome = Outcome.CANCELLED
        error: Optional[BaseException] = None
        result: Any = None
        awaited = False
        try:
            mark_running(run)
            self.registry.update_run(run)
            await self._on_started(state)
            awaited = True
            result = await state.coro
            outcome = Outcome.COMPLETED
        except asyncio.CancelledError:
            outcome = Outcome.CANCELLED
            raise
        except Exception as e:  # noqa: BLE001 - the run's failure, recorded on the run
            outcome, error = Outcome.FAILED, e
            log.warning("run %s failed: %s", run_id, describe_exception(e))
        except BaseException as e:  # KeyboardInterrupt, SystemExit: recorded, then let through
            outcome, error = Outcome.FAILED, e
            raise
        finally:
            if not awaited:
                close_unstarted(state.coro)
            try:
                self._record_end(run, outcome, error)
                await self._on_finished(state, outcome, error, result)
            finally:
                if self.tasks.get(run_id) is state.task:
                    del self.tasks[run_id]

    def _record_end(self, run: Any, outcome: Outcome, error: Optional[BaseException]) -> None:
        try:
            mark_finished(run, outcome.value, error)
            self.registry.update_run(run)
        except Exception as e:  # noqa: BLE001 - never leave the run in `tasks`
            log.error("run %s: could not record its end (%s): %s", run.run_id, outcome.value.value, e)

    def _task_done(self, state: RunState, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never ran the wrapper: record its end here."""
        if state.entered:
            return
        close_unstarted(state.coro)
        self._record_end(state.run, Outcome.CANCELLED, None)
        self._finish_unstarted(state)
        if self.tasks.get(state.run_id) is task:
            del self.tasks[state.run_id]

    async def cancel_task(self, run_id: str) -> bool:
        """Cancel an active run and wait until it has stopped: True. False for an unknown or finished run."""
        task = self.tasks.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.wait({task})
        return True

    async def wait_all(self) -> None:
        """Return once every active run has finished (runs started meanwhile included). A run's
        exception never propagates from here."""
        me = asyncio.current_task()
        while True:
            pending = [t for t in self.tasks.values() if t is not me and not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def get_active_task_count(self) -> int:
        return len(self.tasks)

    def get_active_task_ids(self) -> list[str]:
        return list(self.tasks)

    def is_task_active(self, run_id: str) -> bool:
        return run_id in self.tasks

    async def __aenter__(self) -> ManagerBase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel the runs still active (they end CANCELLED) and wait for them to stop."""
        await self._cancel_all()

    async def _cancel_all(self) -> None:
        me = asyncio.current_task()
        pending = [t for t in self.tasks.values() if t is not me]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)


class BackgroundTaskManager(ManagerBase):
    """The plain in-memory manager: runs coroutines in this process and tracks them in the
    registry, nothing more. ``create_task_manager`` returns it when the queue is switched off,
    so rolling back does not need the application's own class. It also fills ``started_at``,
    ``completed_at`` and ``duration_seconds``, as ``QueuedTaskManager`` does."""
