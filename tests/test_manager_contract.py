"""The in-memory task manager's contract, checked on the reference manager and QueuedTaskManager.

One suite, parametrized over both managers (``kind``) and over two kinds of runs and registries
(``flavor``): the application's own pydantic ``Run`` and registry class, written here the way a
backend writes them, and the package's ``Run`` and ``RunRegistry``. Every test passes on every
combination: QueuedTaskManager is a drop-in.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Dict, List, Optional

import pytest
from pydantic import BaseModel
from reference_manager import ReferenceTaskManager

from prismq_queue import QueuedTaskManager, Run, RunRegistry, RunStatus

# ---------------------------------------------------------------------------- the app's own classes


class AppRunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AppRun(BaseModel):
    """A backend's own run model: same fields, its own status enum, no validation on assignment."""

    run_id: str
    module_id: str
    module_name: str
    status: AppRunStatus
    created_at: datetime
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    duration_seconds: Optional[float] = None
    progress_percent: int = 0
    items_processed: int = 0
    items_total: Optional[int] = None
    exit_code: Optional[int] = None
    error_message: Optional[str] = None
    parameters: Dict[str, Any] = {}


class AppRegistry:
    """A backend's own registry: runs in a dict, history saved to a JSON file on every change."""

    def __init__(self, history_file):
        self.history_file = history_file
        self.runs: Dict[str, AppRun] = {}
        self.updates: List[tuple] = []  # (run_id, status) per update_run, for the tests

    def add_run(self, run):
        self.runs[run.run_id] = run
        self._save()

    def update_run(self, run):
        self.runs[run.run_id] = run
        self.updates.append((run.run_id, run.status.value))
        self._save()

    def get_run(self, run_id):
        return self.runs.get(run_id)

    def get_active_runs(self):
        return [r for r in self.runs.values() if r.status in (AppRunStatus.QUEUED, AppRunStatus.RUNNING)]

    def get_runs_by_module(self, module_id):
        return [r for r in self.runs.values() if r.module_id == module_id]

    def get_runs_by_status(self, status):
        return [r for r in self.runs.values() if r.status == status]

    def get_recent_runs(self, limit=50):
        return sorted(self.runs.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def cleanup_old_runs(self, days=30):
        cutoff = datetime.now(timezone.utc) - timedelta(days=days)
        for run_id in [i for i, r in self.runs.items() if r.completed_at and r.completed_at < cutoff]:
            del self.runs[run_id]
        self._save()

    def _save(self):
        with open(self.history_file, "w") as f:
            json.dump({i: r.model_dump(mode="json") for i, r in self.runs.items()}, f)


class RecordingRunRegistry(RunRegistry):
    """The package's registry, also noting each update for the tests."""

    def __init__(self, path):
        super().__init__(path)
        self.updates: List[tuple] = []

    def update_run(self, run):
        self.updates.append((run.run_id, RunStatus(run.status).value))
        super().update_run(run)


# ---------------------------------------------------------------------------- fixtures


class Env:
    def __init__(self, mgr, registry, flavor):
        self.mgr = mgr
        self.registry = registry
        self.flavor = flavor

    def run(self, run_id, module_id="reports.build", **parameters):
        """A new run, added to the registry as the app does before starting it."""
        if self.flavor == "app":
            run = AppRun(
                run_id=run_id,
                module_id=module_id,
                module_name="Build reports",
                status=AppRunStatus.QUEUED,
                created_at=datetime.now(timezone.utc),
                parameters=parameters,
            )
        else:
            run = Run(run_id=run_id, module_id=module_id, parameters=parameters)
        self.registry.add_run(run)
        return run

    def statuses(self, run_id):
        return [s for i, s in self.registry.updates if i == run_id]


@pytest.fixture(params=["reference", "queued"])
def kind(request):
    return request.param


@pytest.fixture(params=["app", "package"])
def flavor(request):
    return request.param


@pytest.fixture
async def env(kind, flavor, tmp_path):
    if flavor == "app":
        registry = AppRegistry(tmp_path / "history.json")
    else:
        registry = RecordingRunRegistry(str(tmp_path / "runs.db"))
    if kind == "reference":
        mgr = ReferenceTaskManager(registry)
    else:
        mgr = QueuedTaskManager(str(tmp_path / "queue.db"), registry)
    yield Env(mgr, registry, flavor)
    if kind == "queued":
        await mgr.close()
    if flavor == "package":
        registry.close()


async def gated(started: asyncio.Event, release: asyncio.Event, result=None):
    started.set()
    await release.wait()
    return result


async def wait_done(mgr, run_id, timeout):
    """Wait (at most ``timeout`` s) for the run's asyncio task; True when it finished."""
    task = mgr.tasks.get(run_id)
    if task is None:
        return True
    done, _ = await asyncio.wait({task}, timeout=timeout)
    return bool(done)


# ---------------------------------------------------------------------------- the contract


async def test_registry_is_the_object_passed_in_and_tasks_start_empty(env):
    assert env.mgr.registry is env.registry
    assert env.mgr.tasks == {}
    assert isinstance(env.mgr.tasks, dict)
    assert env.mgr.get_active_task_count() == 0
    assert env.mgr.get_active_task_ids() == []


async def test_start_task_returns_the_run_id_at_once_then_running_then_completed(env):
    run = env.run("run-1")
    started, release = asyncio.Event(), asyncio.Event()
    t0 = time.monotonic()
    assert env.mgr.start_task(run, gated(started, release)) == "run-1"
    # Synchronous: it returned without running the coroutine (which sets `started` first thing),
    # and without waiting on anything slow (a generous bound; the machine is noisy).
    assert not started.is_set()
    assert time.monotonic() - t0 < 1.0
    assert env.mgr.is_task_active("run-1")
    assert "run-1" in env.mgr.tasks
    await started.wait()
    assert run.status == "running"
    assert env.statuses("run-1") == ["running"]
    release.set()
    assert await wait_done(env.mgr, "run-1", 5)
    assert run.status == "completed"
    assert run.exit_code == 0
    assert env.statuses("run-1") == ["running", "completed"]
    assert not env.mgr.is_task_active("run-1")


async def test_a_short_task_is_out_and_completed_within_0_2s(env):
    run = env.run("quick")
    t0 = time.monotonic()
    env.mgr.start_task(run, asyncio.sleep(0.1))
    assert await wait_done(env.mgr, "quick", 0.2 - (time.monotonic() - t0))
    assert "quick" not in env.mgr.tasks
    assert run.status == "completed" and run.exit_code == 0


async def test_a_task_failing_at_once_is_out_within_0_05s_with_its_error(env):
    run = env.run("bad")

    async def boom():
        raise ValueError("input file missing")

    t0 = time.monotonic()
    env.mgr.start_task(run, boom())
    assert await wait_done(env.mgr, "bad", 0.05 - (time.monotonic() - t0))
    assert "bad" not in env.mgr.tasks
    assert run.status == "failed"
    assert run.error_message == "input file missing"
    assert env.statuses("bad") == ["running", "failed"]


async def test_cancel_task_stops_the_run_and_it_ends_cancelled(env):
    run = env.run("long")
    started, seen = asyncio.Event(), []

    async def long_job():
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    env.mgr.start_task(run, long_job())
    await started.wait()
    assert await env.mgr.cancel_task("long") is True
    assert seen == ["cancelled"]  # it had stopped when cancel_task returned
    assert run.status == "cancelled"
    assert env.statuses("long") == ["running", "cancelled"]
    assert not env.mgr.is_task_active("long")
    assert await env.mgr.cancel_task("long") is False  # finished
    assert await env.mgr.cancel_task("never-started") is False  # unknown


async def test_cancel_before_the_coroutine_ran_still_ends_cancelled(env):
    run = env.run("early")
    ran = []

    async def job():
        ran.append(True)

    env.mgr.start_task(run, job())
    assert await env.mgr.cancel_task("early") is True
    assert ran == []
    assert run.status == "cancelled"
    assert env.mgr.tasks == {}


async def test_cancel_task_of_a_finished_run_is_false(env):
    run = env.run("done")
    env.mgr.start_task(run, asyncio.sleep(0))
    assert await wait_done(env.mgr, "done", 5)
    assert await env.mgr.cancel_task("done") is False
    assert run.status == "completed"


async def test_a_run_id_may_be_started_again_after_it_finished(env):
    run = env.run("again")
    calls = []

    async def job(n):
        calls.append(n)

    env.mgr.start_task(run, job(1))
    assert await wait_done(env.mgr, "again", 5)
    assert env.mgr.start_task(run, job(2)) == "again"
    assert await wait_done(env.mgr, "again", 5)
    assert calls == [1, 2]
    assert run.status == "completed"
    assert env.statuses("again") == ["running", "completed", "running", "completed"]


async def test_a_failed_run_id_may_be_started_again(env):
    run = env.run("retry-me")

    async def boom():
        raise RuntimeError("first try")

    env.mgr.start_task(run, boom())
    assert await wait_done(env.mgr, "retry-me", 5)
    assert run.status == "failed"
    env.mgr.start_task(run, asyncio.sleep(0))
    assert await wait_done(env.mgr, "retry-me", 5)
    assert run.status == "completed"


async def test_starting_a_run_id_that_is_still_active_is_refused(env):
    run = env.run("busy")
    started, release = asyncio.Event(), asyncio.Event()
    env.mgr.start_task(run, gated(started, release))
    second = asyncio.sleep(0)
    with pytest.raises(ValueError, match="busy"):
        env.mgr.start_task(run, second)
    assert second.cr_frame is None  # closed: no "never awaited" warning
    await started.wait()
    release.set()
    assert await wait_done(env.mgr, "busy", 5)
    assert run.status == "completed"


async def test_wait_all_returns_when_every_task_finished_and_swallows_errors(env):
    async def boom():
        await asyncio.sleep(0.01)
        raise KeyError("nope")

    runs = [env.run(f"w{i}") for i in range(4)]
    env.mgr.start_task(runs[0], asyncio.sleep(0.05))
    env.mgr.start_task(runs[1], asyncio.sleep(0.01))
    env.mgr.start_task(runs[2], boom())
    env.mgr.start_task(runs[3], asyncio.sleep(0))
    await env.mgr.wait_all()
    assert env.mgr.tasks == {}
    assert [r.status for r in runs] == ["completed", "completed", "failed", "completed"]
    assert runs[2].error_message == str(KeyError("nope"))
    await env.mgr.wait_all()  # nothing active: returns at once


async def test_active_count_ids_and_is_task_active(env):
    events = {i: (asyncio.Event(), asyncio.Event()) for i in ("a", "b", "c")}
    for i, (started, release) in events.items():
        env.mgr.start_task(env.run(i), gated(started, release))
    assert env.mgr.get_active_task_count() == 3
    assert sorted(env.mgr.get_active_task_ids()) == ["a", "b", "c"]
    assert env.mgr.is_task_active("b") and not env.mgr.is_task_active("z")
    for started, _ in events.values():
        await started.wait()
    events["b"][1].set()
    assert await wait_done(env.mgr, "b", 5)
    assert env.mgr.get_active_task_count() == 2
    assert sorted(env.mgr.get_active_task_ids()) == ["a", "c"]
    assert not env.mgr.is_task_active("b")
    for _, release in events.values():
        release.set()
    await env.mgr.wait_all()
    assert env.mgr.get_active_task_count() == 0


async def test_the_registry_holds_the_final_state(env):
    ok, bad = env.run("ok", pages=3), env.run("bad")

    async def boom():
        raise ValueError("disk full")

    env.mgr.start_task(ok, asyncio.sleep(0))
    env.mgr.start_task(bad, boom())
    await env.mgr.wait_all()
    assert env.registry.get_run("ok").status == "completed"
    assert env.registry.get_run("ok").exit_code == 0
    assert env.registry.get_run("bad").status == "failed"
    assert env.registry.get_run("bad").error_message == "disk full"
    assert [r.run_id for r in env.registry.get_runs_by_status("failed")] == ["bad"]
    assert env.registry.get_active_runs() == []


async def test_the_apps_own_run_keeps_its_own_types(env):
    run = env.run("typed")
    env.mgr.start_task(run, asyncio.sleep(0))
    await env.mgr.wait_all()
    expected = AppRunStatus if env.flavor == "app" else RunStatus
    assert type(run.status) is expected
    # It still serialises as the app's history file expects.
    assert json.loads(run.model_dump_json())["status"] == "completed"
