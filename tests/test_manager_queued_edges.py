"""QueuedTaskManager's edge cases, through its public API: more refused settings and arguments,
runs whose parameters or result are no JSON, run ids made of digits, handlers given up front,
a row cancelled elsewhere before the manager noticed, leases renewed through a long run,
recovery on its interval, the registry brought up to date with rows finished elsewhere, and
durable re-runs of interrupted runs that fail."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from test_manager_queued import crash_mid_run, until

from prismq_queue import (
    InvalidArgument,
    Queue,
    QueuedTaskManager,
    Run,
    RunRegistry,
    RunStatus,
    TaskHandlerRegistry,
)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "app.db")


async def test_more_bad_settings_and_arguments_are_refused(path):
    registry = RunRegistry(path)
    for bad in ({"queue_name": ""}, {"queue_name": "  "}, {"runs_queue": None}):
        with pytest.raises(InvalidArgument, match="must be a non-empty string"):
            QueuedTaskManager(path, registry, **bad)
    mgr = QueuedTaskManager(path, registry)
    try:
        for key in (1.5, True, None, ["r"]):
            with pytest.raises(InvalidArgument, match="expected a task id or a run id, got"):
                await mgr.get_task_status(key)
        assert repr(mgr) == f"QueuedTaskManager({mgr.queue.path!r}, active=0, types=[])"
    finally:
        await mgr.close()
        await mgr.close()  # idempotent
    registry.close()


class BareRun:
    """An app's own run object: no ``parameters``, no model_dump."""

    def __init__(self, run_id):
        self.run_id = run_id
        self.module_id = "bare.module"
        self.status = "queued"
        self.error_message = None


class MinimalRegistry:
    """The least a registry must have: update_run (no get_run, no get_active_runs)."""

    def __init__(self):
        self.updates = []

    def update_run(self, run):
        self.updates.append((run.run_id, str(getattr(run.status, "value", run.status))))


async def test_runs_whose_parameters_or_result_are_no_json_still_get_their_rows(path):
    registry = MinimalRegistry()  # the app's registry, which stores runs as it likes
    async with QueuedTaskManager(path, registry) as mgr:
        bare = BareRun("bare-1")
        mgr.start_task(bare, asyncio.sleep(0, result=object()))  # a result JSON cannot hold
        # bytes are no JSON for pydantic's JSON mode: the parameters are converted as text instead
        odd = Run(run_id="odd-1", module_id="odd.module", parameters={"blob": b"\xff\x00", "n": 1})
        mgr.start_task(odd, asyncio.sleep(0, result={"ok": True}))
        await mgr.wait_all()
        row = mgr.queue.find("bare-1")
        assert (row.type, row.payload, row.status, row.result) == ("bare.module", {}, "completed", None)
        assert bare.status == "completed"  # the app's own run keeps its own types
        row = mgr.queue.find("odd-1")
        assert (row.payload, row.status, row.result) == ({"blob": str(b"\xff\x00"), "n": 1}, "completed", {"ok": True})
        assert ("bare-1", "completed") in registry.updates and ("odd-1", "completed") in registry.updates


async def test_a_run_id_of_digits_is_found_as_a_run_when_no_task_has_that_id(path):
    registry = RunRegistry(path)
    async with QueuedTaskManager(path, registry) as mgr:
        run = Run(run_id="424242", module_id="m")
        mgr.start_task(run, asyncio.sleep(0))
        await mgr.wait_all()
        row = mgr.queue.find("424242")
        assert row.id != 424242
        status = await mgr.get_task_status("424242")
        assert (status["task_id"], status["run_id"], status["status"]) == (str(row.id), "424242", "completed")
        assert (await mgr.get_task_status(" 424242 "))["status"] == "not_found"  # a run id is taken as given
    registry.close()


async def test_handlers_given_up_front_run_scheduled_work_without_register_task(path):
    handlers = TaskHandlerRegistry()
    handlers.register_handler("double", lambda ctx: ctx.payload * 2)
    registry = RunRegistry(path)
    async with QueuedTaskManager(path, registry, handlers=handlers, worker_options={"poll_interval": 0.1}) as mgr:
        tid = int(await mgr.schedule_task("double", 21, run_after=timedelta(seconds=0.2)))
        t = mgr.queue.get(tid)
        assert t.run_after >= t.created_at + timedelta(seconds=0.2)  # a timedelta counts from now
        await until(mgr.queue, lambda: mgr.queue.get(tid).status == "completed")
        assert mgr.queue.get(tid).result == 42
        assert "types=['double']" in repr(mgr)
    registry.close()


async def test_a_row_cancelled_elsewhere_before_the_manager_noticed_stays_cancelled(path, caplog):
    registry = RunRegistry(path)
    # check_interval: the keeper would notice the cancellation only after a minute.
    async with QueuedTaskManager(path, registry, check_interval=60) as mgr:
        release = asyncio.Event()
        run = Run(run_id="r-cancelled", module_id="m")
        mgr.start_task(run, release.wait())
        with Queue(path) as other:
            row = other.find("r-cancelled")
            assert row.status == "running" and other.cancel(row.id)
        caplog.set_level(logging.WARNING, logger="prismq_queue.manager")
        release.set()
        await mgr.wait_all()
        row = mgr.queue.find("r-cancelled")
        assert (row.status, row.result) == ("cancelled", None)  # the run's end did not overwrite it
        assert f"task {row.id} was no longer held by this manager" in caplog.text
    registry.close()


async def test_a_run_longer_than_its_lease_keeps_its_row_renewed(path):
    registry = RunRegistry(path)
    async with QueuedTaskManager(path, registry, lease=1.5, check_interval=0.05) as mgr:
        release = asyncio.Event()
        mgr.start_task(Run(run_id="long", module_id="m"), release.wait())
        first = mgr.queue.find("long").lease_until
        await until(mgr.queue, lambda: mgr.queue.find("long").lease_until > first + timedelta(seconds=1))
        assert mgr.queue.find("long").status == "running"
        release.set()
        await mgr.wait_all()
        assert mgr.queue.find("long").status == "completed"
        assert registry.get_run("long").status == RunStatus.COMPLETED
    registry.close()


async def test_a_manager_recovers_interrupted_runs_on_its_interval(path):
    crash_mid_run(path, "crashed-1", "catalog.export", {})
    registry = RunRegistry(path)
    # No recovery at first use: what recovers the run is the keeper's periodic pass.
    async with QueuedTaskManager(path, registry, auto_recover=False, recover_interval=0.2,
                                 check_interval=0.05) as mgr:
        await mgr.get_task_status("crashed-1")
        await until(mgr.queue, lambda: mgr.queue.find("crashed-1").status == "failed")
        for _ in range(200):
            if registry.get_run("crashed-1").status == RunStatus.FAILED:
                break
            await asyncio.sleep(0.05)
        run = registry.get_run("crashed-1")
        assert run.status == RunStatus.FAILED and run.error_message.startswith("interrupted:")
    registry.close()


async def test_registry_runs_whose_rows_finished_elsewhere_are_brought_up_to_date(path):
    registry = RunRegistry(path)
    with Queue(path) as q:
        def finish_elsewhere(run_id, error=None):
            row = q.start_run(run_id, "m", {}, worker_id="elsewhere-1-runs-x", queue="runs", lease=60)
            if error:
                q.fail(row, error, retry=False)
            else:
                q.complete(row, {"done": run_id})
            return q.find(run_id)

        done = finish_elsewhere("done-elsewhere")
        failed = finish_elsewhere("failed-elsewhere", "it broke")
        stale = finish_elsewhere("stale")  # the row of an earlier run with the same id
        for run_id in ("done-elsewhere", "failed-elsewhere"):
            registry.add_run(Run(run_id=run_id, module_id="m", status="running",
                                 created_at=done.created_at - timedelta(seconds=5)))
        registry.add_run(Run(run_id="stale", module_id="m", status="running",
                             created_at=stale.finished_at + timedelta(seconds=5)))
        registry.add_run(Run(run_id="not-started", module_id="m", status="queued"))
    async with QueuedTaskManager(path, registry) as mgr:
        assert await mgr.recover() == []
        got = registry.get_run("done-elsewhere")
        assert got.status == RunStatus.COMPLETED and got.completed_at == done.finished_at
        got = registry.get_run("failed-elsewhere")
        assert got.status == RunStatus.FAILED and got.error_message == "it broke"
        assert got.completed_at == failed.finished_at
        assert registry.get_run("stale").status == RunStatus.RUNNING  # a newer run than the row's
        assert registry.get_run("not-started").status == RunStatus.QUEUED  # no row at all
    # A registry with only update_run: recovery works, and nothing is reconciled.
    minimal = MinimalRegistry()
    async with QueuedTaskManager(path, minimal) as mgr:
        assert await mgr.recover() == []
        assert minimal.updates == []
    registry.close()


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_failing_rerun_of_an_interrupted_run_is_retried_then_fails_the_run(path, flavour):
    crash_mid_run(path, "import-7", "catalog.import", {"n": 7})
    q = Queue(path)
    q.set_retry_policy("default", base=0.05, cap=0.05, jitter=0.0)
    registry = RunRegistry(q)
    mgr = QueuedTaskManager(q, registry, worker_options={"poll_interval": 0.1})
    seen = []

    async def import_async(ctx):
        seen.append((ctx.task.attempts, registry.get_run("import-7").status))
        raise RuntimeError(f"source gone (attempt {ctx.task.attempts})")

    def import_sync(ctx):
        seen.append((ctx.task.attempts, None))
        raise RuntimeError(f"source gone (attempt {ctx.task.attempts})")

    try:
        await mgr.register_task("catalog.import", import_async if flavour == "async" else import_sync)
        report = await mgr.recover()
        assert [(r["run_id"], r["requeued"]) for r in report] == [("import-7", True)]
        await until(q, lambda: q.find("import-7").status == "failed")
        row = q.find("import-7")
        # The crashed manager's rerun_attempts (3) re-runs: attempts 2 to 4; each failure before the
        # last is retried.
        assert [attempt for attempt, _ in seen] == [2, 3, 4] and (row.attempts, row.max_attempts) == (4, 4)
        assert row.error.startswith("RuntimeError: source gone")
        for _ in range(200):  # the run's record is written on the manager's loop
            if registry.get_run("import-7").status == RunStatus.FAILED:
                break
            await asyncio.sleep(0.05)
        run = registry.get_run("import-7")
        assert run.status == RunStatus.FAILED and "source gone" in run.error_message
        assert run.completed_at is not None
        if flavour == "async":
            assert seen[0][1] == RunStatus.RUNNING  # each re-run is recorded as it starts
    finally:
        await mgr.close()
        q.close()

