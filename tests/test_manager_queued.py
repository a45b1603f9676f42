"""What QueuedTaskManager adds to the in-memory manager's contract: every run is a task row kept
in step, durable work executed by workers of any process, status by task id or run id, crash
recovery after a real kill -9, and the create_task_manager switch in both directions."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import socket
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import cli_runner
from manager_helpers import start_run_and_hang
from worker_handlers import run_worker

from prismq_queue import (
    BackgroundTaskManager,
    InvalidArgument,
    Queue,
    QueueError,
    QueuedTaskManager,
    Run,
    RunRegistry,
    RunStatus,
    create_task_manager,
)
from prismq_queue.cli import main as cli


def spawn(target, *args):
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def stop(p, sig=signal.SIGTERM):
    if p.is_alive():
        os.kill(p.pid, sig)
    p.join(30)
    if p.is_alive():
        p.kill()
        p.join(5)


def hard_kill(p):
    """kill -9 on POSIX, TerminateProcess on Windows (no SIGKILL there): no chance to clean up."""
    p.kill()
    p.join(30)


async def until(q, predicate, timeout=20.0):
    """Wait until ``predicate()`` holds, waking on every commit to the file (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        left = deadline - time.monotonic()
        assert left > 0, "condition not reached in time"
        await asyncio.to_thread(q.wait_for_change, min(left, 0.5))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "app.db")


@pytest.fixture
async def app(path):
    """An app's set-up: one Queue, the package's RunRegistry in the same file, the manager."""
    q = Queue(path)
    registry = RunRegistry(q)
    mgr = QueuedTaskManager(q, registry, check_interval=0.05)
    yield mgr, registry, q
    await mgr.close()
    q.close()


async def gated(started, release):
    started.set()
    await release.wait()
    return {"pages": 3}


# ---------------------------------------------------------------------------- runs as task rows


async def test_every_run_is_a_task_row_seen_from_another_handle_and_kept_in_step(app, path):
    mgr, registry, _ = app
    run = Run(run_id="report-7", module_id="reports.build", module_name="Reports", parameters={"month": "2026-10"})
    registry.add_run(run)
    started, release = asyncio.Event(), asyncio.Event()
    mgr.start_task(run, gated(started, release))
    with Queue(path) as other:
        row = other.find("report-7")  # written before start_task returned
        assert row is not None and row.status == "running"
        assert (row.type, row.payload, row.idempotency_key, row.queue) == (
            "reports.build",
            {"month": "2026-10"},
            "report-7",
            "runs",
        )
        assert row.locked_by == mgr.worker_id and row.started_at is not None
        await started.wait()
        assert RunRegistry(other).get_run("report-7").status == RunStatus.RUNNING
        # No worker of any process can take it while it runs here.
        assert other.claim("elsewhere", types=["reports.build"]) == []
        release.set()
        await mgr.wait_all()
        row = other.find("report-7")
        assert row.status == "completed" and row.result == {"pages": 3}
        assert row.finished_at >= row.started_at
        seen = RunRegistry(other).get_run("report-7")
    assert seen.status == RunStatus.COMPLETED and seen.exit_code == 0
    assert run.started_at is not None and run.completed_at >= run.started_at
    assert run.started_at.tzinfo is not None and run.completed_at.tzinfo is not None
    assert 0 <= run.duration_seconds < 60
    assert abs(run.duration_seconds - (run.completed_at - run.started_at).total_seconds()) < 1e-6


async def test_failed_and_cancelled_runs_show_on_their_rows(app):
    mgr, registry, q = app

    async def boom():
        raise ValueError("source unreachable")

    failed, cancelled = Run(run_id="f", module_id="m"), Run(run_id="c", module_id="m")
    mgr.start_task(failed, boom())
    mgr.start_task(cancelled, asyncio.Event().wait())
    await asyncio.sleep(0)
    assert await mgr.cancel_task("c")
    await mgr.wait_all()
    assert q.find("f").status == "failed" and "source unreachable" in q.find("f").error
    assert failed.error_message == "source unreachable" and failed.completed_at is not None
    assert q.find("c").status == "cancelled" and cancelled.status == RunStatus.CANCELLED
    # A failed run is never retried behind the app's back: it is a dead letter, not re-queued.
    assert q.claim("w", types=["m"]) == []


async def test_a_run_started_again_reuses_its_row(app):
    mgr, _, q = app
    run = Run(run_id="again", module_id="m", parameters={"n": 1})
    mgr.start_task(run, asyncio.sleep(0))
    await mgr.wait_all()
    first = q.find("again")
    run.parameters = {"n": 2}
    mgr.start_task(run, asyncio.sleep(0))
    await mgr.wait_all()
    second = q.find("again")
    assert second.id == first.id
    assert (second.attempts, second.status, second.payload) == (2, "completed", {"n": 2})
    assert q.stats()["total"] == 1


async def test_a_failed_run_started_again_drops_its_old_error(app):
    mgr, registry, q = app

    async def boom():
        raise OSError("share offline")

    run = Run(run_id="flaky", module_id="m")
    mgr.start_task(run, boom())
    await mgr.wait_all()
    assert run.error_message == "share offline"
    mgr.start_task(run, asyncio.sleep(0))
    await mgr.wait_all()
    assert (run.status, run.error_message, run.exit_code) == (RunStatus.COMPLETED, None, 0)
    assert registry.get_run("flaky").error_message is None
    assert q.find("flaky").error is None


async def test_bad_settings_are_refused(path):
    registry = RunRegistry(path)
    for bad in ({"lease": 0}, {"rerun_attempts": -1}, {"max_attempts": 0}, {"runs_queue": "default"},
                {"recover_interval": -5}, {"check_interval": "1"}):
        with pytest.raises(InvalidArgument):
            QueuedTaskManager(path, registry, **bad)
    with pytest.raises(InvalidArgument, match="update_run"):
        QueuedTaskManager(path, object())
    async with QueuedTaskManager(path, registry) as mgr:
        with pytest.raises(InvalidArgument, match="run_after"):
            await mgr.schedule_task("x", {}, run_after=60)
    with pytest.raises(QueueError, match="closed"):
        mgr.start_task(Run(run_id="late", module_id="m"), asyncio.sleep(0))
    registry.close()


async def test_cancelling_the_row_elsewhere_cancels_the_run(app, path):
    mgr, _, _ = app
    started, stopped = asyncio.Event(), asyncio.Event()

    async def job():
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    run = Run(run_id="stop-me", module_id="m")
    mgr.start_task(run, job())
    await started.wait()
    with Queue(path) as other:  # an operator, the REST API or the CLI
        assert other.cancel(other.find("stop-me").id)
    await asyncio.wait_for(stopped.wait(), 10)
    await mgr.wait_all()
    assert run.status == RunStatus.CANCELLED
    assert not mgr.is_task_active("stop-me")


async def test_a_run_id_running_in_another_live_process_is_not_started_twice(path):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    other = spawn(start_run_and_hang, path, "shared-run", "m", {}, ready)
    try:
        assert ready.wait(60)
        async with QueuedTaskManager(path, RunRegistry(path)) as mgr:
            run = Run(run_id="shared-run", module_id="m")
            ran = []

            async def job():
                ran.append(True)

            mgr.start_task(run, job())
            await mgr.wait_all()
            assert ran == []
            assert run.status == RunStatus.FAILED and "already running" in run.error_message
            assert mgr.queue.find("shared-run").status == "running"  # the other process still holds it
    finally:
        hard_kill(other)


@pytest.mark.parametrize(
    "holder",
    [
        "worker-1",  # not a manager's id at all
        "otherhost-1-runs-abc",  # a manager of another host: whether it lives cannot be told here
        "{host}-1-worker-abc",  # this host's pid 1, but not a manager's row
        "{host}-{pid}-runs-gone",  # this process, no manager of that token
        "{host}-{pid}-runs-",  # ... and one whose token is empty
    ],
)
async def test_a_run_row_is_taken_over_only_from_a_manager_known_to_be_dead(path, holder):
    """A manager takes a running run's row over only from a crashed manager process of this host;
    a row held by anything else keeps its holder, and the start fails saying it runs already."""
    # Filled in here, not in the ids: test ids must be the same in every pytest-xdist worker.
    holder = holder.format(host=socket.gethostname(), pid=os.getpid())
    with Queue(path) as q:
        q.start_run("held-run", "m", {}, worker_id=holder, queue="runs", lease=60)
    async with QueuedTaskManager(path, RunRegistry(path), auto_recover=False) as mgr:
        run = Run(run_id="held-run", module_id="m")
        mgr.start_task(run, asyncio.sleep(0))
        await mgr.wait_all()
        ours = holder.endswith("-runs-gone") or holder.endswith("-runs-")
        if ours:
            # This process's pid with a token no live manager here holds: an earlier process that
            # had the same pid (a restarted container), so the row is taken over.
            assert run.status == RunStatus.COMPLETED, run.error_message
            assert mgr.queue.find("held-run").attempts == 2
        else:
            assert run.status == RunStatus.FAILED and "already running" in run.error_message
            assert mgr.queue.find("held-run").locked_by == holder


# ---------------------------------------------------------------------------- durable work


async def test_schedule_task_is_executed_by_a_worker_in_another_process(app, path):
    mgr, _, q = app
    worker = spawn(run_worker, path, ["echo"])
    try:
        task_id = await mgr.schedule_task("echo", {"to": "ada@example.com"}, priority=10)
        assert isinstance(task_id, str)
        await until(q, lambda: q.get(int(task_id)).status == "completed")
        status = await mgr.get_task_status(task_id)
        assert status["status"] == "completed" and status["type"] == "echo"
        result = q.get(int(task_id)).result
        assert result["echo"] == {"to": "ada@example.com"} and result["pid"] == worker.pid
    finally:
        stop(worker)


async def test_scheduled_work_survives_a_restart(path):
    q = Queue(path)
    first = QueuedTaskManager(q, RunRegistry(q))
    ids = [await first.schedule_task("mail.send", {"n": n}) for n in range(3)]
    await first.close()
    q.close()  # the app stops before any worker ran them

    q = Queue(path)
    second = QueuedTaskManager(q, RunRegistry(q))
    seen = []

    async def send(ctx):
        seen.append(ctx.payload["n"])
        return "sent"

    await second.register_task("mail.send", send, description="send one mail")
    try:
        await until(q, lambda: all(q.get(int(i)).status == "completed" for i in ids))
        assert sorted(seen) == [0, 1, 2]
    finally:
        await second.close()
        assert q.workers() == []  # the embedded worker stopped and signed off
        q.close()


async def test_schedule_task_options(app):
    mgr, _, q = app
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    a = await mgr.schedule_task("report", {"m": 1}, priority=5, run_after=later, idempotency_key="r-1")
    assert await mgr.schedule_task("report", {"m": 1}, idempotency_key="r-1") == a
    t = q.get(int(a))
    assert (t.priority, t.status, t.queue) == (5, "queued", "default")
    assert abs((t.run_after - later).total_seconds()) < 0.01
    with pytest.raises(InvalidArgument, match="priority"):
        await mgr.schedule_task("report", {}, priority=0)


async def test_get_task_status_by_task_id_by_run_id_and_not_found(app):
    mgr, _, q = app
    tid = await mgr.schedule_task("later", {"x": 1})
    by_str, by_int = await mgr.get_task_status(tid), await mgr.get_task_status(int(tid))
    assert by_str == by_int
    assert {k: by_str[k] for k in ("task_id", "status", "type", "attempts", "max_attempts", "error_message", "locked_by")} == {
        "task_id": tid,
        "status": RunStatus.QUEUED.value,
        "type": "later",
        "attempts": 0,
        "max_attempts": 5,
        "error_message": None,
        "locked_by": None,
    }
    assert by_str["created_at"].tzinfo is not None and by_str["started_at"] is None and by_str["finished_at"] is None

    started, release = asyncio.Event(), asyncio.Event()
    mgr.start_task(Run(run_id="run-abc", module_id="mod.x"), gated(started, release))
    status = await mgr.get_task_status("run-abc")
    assert (status["status"], status["type"], status["run_id"], status["locked_by"]) == (
        "running",
        "mod.x",
        "run-abc",
        mgr.worker_id,
    )
    assert status["started_at"] is not None
    assert (await mgr.get_task_status(status["task_id"]))["run_id"] == "run-abc"
    release.set()
    await mgr.wait_all()
    done = await mgr.get_task_status("run-abc")
    assert done["status"] == "completed" and done["finished_at"] >= done["started_at"]

    missing = await mgr.get_task_status("no-such-run")
    assert missing["status"] == "not_found" and missing["task_id"] == "no-such-run"
    assert (await mgr.get_task_status(987654))["status"] == "not_found"


# ---------------------------------------------------------------------------- crash recovery


def crash_mid_run(path, run_id, module_id, parameters):
    """A real app process starts a run, then dies with SIGKILL in the middle of it."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = spawn(start_run_and_hang, path, run_id, module_id, parameters, ready)
    try:
        assert ready.wait(60), "the app process did not start its run"
    finally:
        hard_kill(p)
    with Queue(path) as q:
        row = q.find(run_id)
        assert row.status == "running" and row.lease_until > datetime.now(timezone.utc)  # lease still running
        assert RunRegistry(q).get_run(run_id).status == RunStatus.RUNNING
    return p.pid


@pytest.mark.parametrize("flavour", ["async", "sync"])
async def test_a_run_interrupted_by_a_crash_is_rerun_by_its_durable_handler(path, flavour):
    crash_mid_run(path, "import-42", "catalog.import", {"source": "s3://bucket/a.csv"})
    q = Queue(path)
    registry = RunRegistry(q)
    mgr = QueuedTaskManager(q, registry)
    got = []

    async def import_async(ctx):
        got.append(ctx.payload)
        return {"rows": 10}

    def import_sync(ctx):
        got.append(ctx.payload)
        return {"rows": 10}

    try:
        await mgr.register_task("catalog.import", import_async if flavour == "async" else import_sync)
        report = await mgr.recover()
        assert [(r["run_id"], r["requeued"]) for r in report] == [("import-42", True)]
        await until(q, lambda: q.find("import-42").status == "completed")
        assert got == [{"source": "s3://bucket/a.csv"}]
        row = q.find("import-42")
        assert row.attempts == 2 and row.result == {"rows": 10}
        run = registry.get_run("import-42")
        assert run.status == RunStatus.COMPLETED and run.exit_code == 0 and run.completed_at is not None
        assert await mgr.recover() == []  # nothing left to recover
    finally:
        await mgr.close()
        q.close()


async def test_a_run_interrupted_by_a_crash_without_a_handler_is_failed_as_interrupted(path):
    crash_mid_run(path, "export-9", "catalog.export", {})
    q = Queue(path)
    registry = RunRegistry(q)
    mgr = QueuedTaskManager(q, registry)
    try:
        # Automatic: the first use of the manager recovers before it looks anything up.
        status = await mgr.get_task_status("export-9")
        assert status["status"] == "failed"
        assert status["error_message"].startswith("interrupted:")
        assert "catalog.export" in status["error_message"]
        run = registry.get_run("export-9")
        assert run.status == RunStatus.FAILED and run.error_message.startswith("interrupted:")
        assert run.completed_at is not None
        # The app may start the run again: the row is re-used.
        run2 = Run(run_id="export-9", module_id="catalog.export")
        mgr.start_task(run2, asyncio.sleep(0))
        await mgr.wait_all()
        assert run2.status == RunStatus.COMPLETED and q.find("export-9").status == "completed"
    finally:
        await mgr.close()
        q.close()


async def test_the_app_restarting_a_crashed_run_at_once_takes_its_row_over(path):
    crash_mid_run(path, "sync-1", "crm.sync", {})
    async with QueuedTaskManager(path, RunRegistry(path), auto_recover=False) as mgr:
        run = Run(run_id="sync-1", module_id="crm.sync")
        mgr.start_task(run, asyncio.sleep(0))
        await mgr.wait_all()
        assert run.status == RunStatus.COMPLETED, run.error_message
        assert mgr.queue.find("sync-1").attempts == 2


# ---------------------------------------------------------------------------- the switch


async def test_create_task_manager_by_argument_and_by_environment(path, monkeypatch, tmp_path):
    registry = RunRegistry(path)

    class AppManager:
        def __init__(self, registry):
            self.registry = registry

    monkeypatch.delenv("PRISMQ_USE_QUEUE", raising=False)
    assert type(create_task_manager(registry)) is BackgroundTaskManager  # default: unchanged app
    assert type(create_task_manager(registry, legacy_factory=AppManager)) is AppManager

    q = create_task_manager(registry, use_queue=True, queue=path)
    assert isinstance(q, QueuedTaskManager) and q.registry is registry and q.queue.path == path
    await q.close()

    monkeypatch.setenv("PRISMQ_USE_QUEUE", "1")
    monkeypatch.setenv("PRISMQ_DB", str(tmp_path / "from-env.db"))
    q = create_task_manager(registry, lease=30)
    assert isinstance(q, QueuedTaskManager) and q.queue.path == str(tmp_path / "from-env.db") and q.lease == 30
    await q.close()
    # The argument wins over the variable, in both directions; queue options are ignored on the way back.
    assert type(create_task_manager(registry, use_queue=False, lease=30)) is BackgroundTaskManager

    monkeypatch.setenv("PRISMQ_USE_QUEUE", "off")
    assert type(create_task_manager(registry)) is BackgroundTaskManager
    q = create_task_manager(registry, use_queue=True, queue=path)
    assert isinstance(q, QueuedTaskManager)
    await q.close()

    monkeypatch.setenv("PRISMQ_USE_QUEUE", "maybe")
    with pytest.raises(InvalidArgument, match="PRISMQ_USE_QUEUE"):
        create_task_manager(registry)
    registry.close()


async def test_switching_back_and_forth_loses_no_queued_durable_task(path, monkeypatch):
    registry = RunRegistry(path)
    monkeypatch.setenv("PRISMQ_USE_QUEUE", "1")
    mgr = create_task_manager(registry, queue=path)
    ids = [await mgr.schedule_task("invoice.render", {"n": n}) for n in range(3)]
    await mgr.close()

    # Roll back: the in-memory manager runs the app's runs; the durable tasks wait in the file.
    monkeypatch.setenv("PRISMQ_USE_QUEUE", "0")
    legacy = create_task_manager(registry, queue=path)
    assert type(legacy) is BackgroundTaskManager
    run = Run(run_id="while-rolled-back", module_id="m")
    legacy.start_task(run, asyncio.sleep(0))
    await legacy.wait_all()
    assert run.status == RunStatus.COMPLETED
    listed = cli_runner().invoke(cli, ["list", "--db", path, "--status", "queued", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(str(t["id"]) for t in json.loads(listed.output)) == sorted(ids)

    # Forward again: they run.
    monkeypatch.setenv("PRISMQ_USE_QUEUE", "1")
    mgr = create_task_manager(registry, queue=path)
    done = []
    await mgr.register_task("invoice.render", lambda ctx: done.append(ctx.payload["n"]))
    try:
        await until(mgr.queue, lambda: len(done) == 3)
        await until(mgr.queue, lambda: all(mgr.queue.get(int(i)).status == "completed" for i in ids))
        assert sorted(done) == [0, 1, 2]
    finally:
        await mgr.close()
        registry.close()


# ---------------------------------------------------------------------------- the run registry in the file


def test_run_registry_lives_in_the_queue_file_and_answers_every_query(path):
    with Queue(path) as q:
        registry = RunRegistry(q)
        t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
        runs = [
            Run(run_id="a", module_id="m1", created_at=t0, status="completed", completed_at=t0 + timedelta(minutes=1)),
            Run(run_id="b", module_id="m2", created_at=t0 + timedelta(minutes=1), status="running"),
            Run(run_id="c", module_id="m1", created_at=t0 + timedelta(minutes=2)),
            Run(run_id="d", module_id="m2", created_at=datetime.now(timezone.utc), status="failed",
                completed_at=datetime.now(timezone.utc), error_message="x"),
        ]
        for r in runs:
            registry.add_run(r)
        assert registry.get_run("zz") is None
        assert registry.get_run("a") == runs[0]
        assert [r.run_id for r in registry.get_active_runs()] == ["b", "c"]
        assert [r.run_id for r in registry.get_runs_by_module("m1")] == ["a", "c"]
        assert [r.run_id for r in registry.get_runs_by_status(RunStatus.FAILED)] == ["d"]
        assert [r.run_id for r in registry.get_runs_by_status("running")] == ["b"]
        assert [r.run_id for r in registry.get_recent_runs(limit=2)] == ["d", "c"]
        assert len(registry.get_recent_runs()) == 4
        runs[2].status = RunStatus.RUNNING
        registry.update_run(runs[2])
        assert registry.get_run("c").status == RunStatus.RUNNING
        # Only runs that finished more than `days` ago go; active and recent ones stay.
        assert registry.cleanup_old_runs(days=30) == 1
        assert sorted(r.run_id for r in registry.get_recent_runs()) == ["b", "c", "d"]
    # Another process (here: another handle on the file) sees the same runs.
    with Queue(path) as other:
        assert RunRegistry(other).get_run("d").error_message == "x"


def test_run_model_defaults_and_utc_datetimes():
    naive = datetime(2026, 5, 1, 12, 0)
    run = Run(run_id="r", module_id="mod", created_at=naive)
    assert run.created_at == naive.replace(tzinfo=timezone.utc)
    assert run.status is RunStatus.QUEUED and run.module_name == "mod" and run.parameters == {}
    run.started_at = datetime(2026, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert run.started_at.tzinfo == timezone.utc and run.started_at.hour == 12
    run.status = "running"
    assert run.status is RunStatus.RUNNING
    assert Run.model_validate_json(run.model_dump_json()) == run
    assert [s.value for s in RunStatus] == ["queued", "running", "completed", "failed", "cancelled"]
    with pytest.raises(ValueError):
        Run(run_id="r", module_id="m", progress_percent=120)
