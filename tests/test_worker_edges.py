"""The worker runtime's less travelled paths, through the public API: handlers that fail in ways
other than a plain exception (an async one raising, a sync one returning a coroutine, a registry
that cannot give the handler), a task cancelled under its handler, a context call during a
database outage, a worker whose queue was closed, and a worker run as an asyncio task that is
cancelled."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time

import pytest
from serve_helpers import wait_until
from worker_handlers import Registry

from prismq_queue import InvalidArgument, Queue, QueueError, Worker
from prismq_queue.task_context import TaskCancelled


def run_until(q, registry, done, **options):
    """Run a Worker on ``q`` in a thread until ``done()`` is true, then stop it."""
    options = {"poll_interval": 0.1, "heartbeat_interval": 0.5, **options}
    w = Worker(q, registry, **options)
    t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    try:
        wait_until(done, timeout=60, what="the worker's tasks")
    finally:
        w.stop()
        t.join(60)
    assert not t.is_alive()
    return w


async def failing_async(ctx):
    await asyncio.sleep(0)
    raise ValueError(f"async bad input {ctx.payload!r}")


async def _coroutine(ctx):
    return "never awaited"


def returns_a_coroutine(ctx):
    return _coroutine(ctx)


@pytest.mark.parametrize(
    "handler, error",
    [
        (failing_async, "ValueError: async bad input 7"),
        (returns_a_coroutine, "TypeError: handler returned an awaitable; declare it async def"),
    ],
    ids=["async-raises", "sync-returns-a-coroutine"],
)
def test_a_handler_failing_otherwise_than_by_raising_in_a_thread_fails_its_attempt(queue_url, handler, error):
    with Queue(queue_url) as q:
        tid = q.enqueue("job", 7, max_attempts=1)
        w = run_until(q, Registry({"job": handler}), lambda: q.get(tid).status == "failed")
        t = q.get(tid)
        assert t.error.startswith(error), t.error
        assert (t.attempts, w.tasks_failed, w.tasks_done) == (1, 1, 0)
        [attempt] = q.attempts(tid)
        assert attempt.error.startswith(error)


class ForgetfulRegistry(Registry):
    """Lists a type, then cannot give its handler (unregistered meanwhile, say)."""

    def get_handler(self, task_type):
        raise KeyError(f"no handler for {task_type!r} any more")


def test_a_handler_the_registry_cannot_give_fails_the_attempt_which_is_retried(queue_url):
    with Queue(queue_url) as q:
        q.set_retry_policy("default", base=0.01, cap=0.01, jitter=0.0)
        tid = q.enqueue("gone", max_attempts=2)
        run_until(q, ForgetfulRegistry({"gone": None}), lambda: q.get(tid).status == "failed")
        t = q.get(tid)
        assert t.attempts == 2 and "no handler for 'gone' any more" in t.error
        assert [a.error.split(":")[0] for a in q.attempts(tid)] == ["KeyError", "KeyError"]


def test_progress_on_a_task_cancelled_meanwhile_turns_cancelled_on_and_the_handlers_error_is_dropped(queue_url):
    seen = {}

    with Queue(queue_url) as q, Queue(queue_url) as other:

        def handler(ctx):
            assert other.cancel(ctx.task.id)  # a user cancels it while it runs
            seen["before"] = ctx.cancelled
            ctx.progress(50, step="half")  # the fenced write finds the task no longer held
            seen["after"] = ctx.cancelled
            raise TaskCancelled("stopping as asked")

        tid = q.enqueue("job", max_attempts=3)
        w = run_until(q, Registry({"job": handler}), lambda: "after" in seen and q.stats()["running"] == 0)
        t = q.get(tid)
        assert seen == {"before": False, "after": True}
        # The cancellation stands: the handler's error is neither recorded nor retried.
        assert (t.status, t.error, t.progress) == ("cancelled", None, None)
        assert w.tasks_failed == 0 and w.tasks_done == 0


def test_dependency_results_leave_out_a_dependency_purged_meanwhile(queue_url):
    got = {}
    with Queue(queue_url) as q:
        kept = q.enqueue("dep", "kept")
        purged = q.enqueue("dep", "purged")
        tid = q.enqueue("job", after=[kept, purged])
        reg = Registry({"dep": lambda ctx: f"result of {ctx.payload}"})
        run_until(q, reg, lambda: q.get(purged).status == "completed" and q.get(kept).status == "completed")
        q.purge(older_than=0, statuses=["completed"])  # both go; the dependant keeps their ids
        assert q.get(tid).after == [kept, purged]
        with pytest.raises(KeyError):
            q.get(purged)

        def job(ctx):
            got["results"] = ctx.dependency_results
            return "ok"

        run_until(q, Registry({"job": job}), lambda: q.get(tid).status == "completed")
    assert got["results"] == {}  # purged: absent, not an error


def test_a_worker_whose_queue_was_closed_stops_with_that_error_and_says_so_once(tmp_path, caplog):
    q = Queue(tmp_path / "q.db")
    q.close()
    w = Worker(q, Registry({"job": lambda ctx: None}), poll_interval=0.1)
    caplog.set_level(logging.DEBUG, logger="prismq_queue")
    with pytest.raises(QueueError, match="is closed: open a new one"):
        w.run()  # signal handlers installed: the engine runs off the main thread
    w.stop()  # stopping it again is harmless, though the queue cannot be woken
    text = caplog.text
    assert text.count("periodic tasks not enqueued") == 1 and "is closed" in text
    assert "heartbeat failed" in text and "could not finish its shutdown" in text


@pytest.mark.skipif(
    sys.platform == "win32",
    reason="another process holding SQLite's write lock is tested on POSIX; the Windows stage runs the worker "
           "fault tests",
)
def test_a_log_line_during_a_database_outage_is_dropped_and_the_task_goes_on(tmp_path):
    from test_worker_faults import WriteLock

    db = tmp_path / "q.db"
    locked = threading.Event()
    logged = threading.Event()
    outcome = {}
    with Queue(db, busy_timeout=0.2) as q:

        def handler(ctx):
            assert locked.wait(30)
            try:
                ctx.log("written while the database is locked")
            except BaseException as e:  # noqa: BLE001 - the test says what happened
                outcome["raised"] = e
            logged.set()
            return "done"

        tid = q.enqueue("job")
        w = Worker(q, Registry({"job": handler}), poll_interval=0.1, heartbeat_interval=60)
        thread = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
        thread.start()
        try:
            wait_until(lambda: q.get(tid).status == "running", what="the task running")
            lock = WriteLock(db)
            try:
                locked.set()
                assert logged.wait(30)
            finally:
                lock.release()
            wait_until(lambda: q.get(tid).status == "completed", what="the task completed after the outage")
        finally:
            w.stop()
            thread.join(60)
        assert outcome == {}
        assert q.get(tid).result == "done"
        assert "written while the database is locked" not in [entry.message for entry in q.logs(tid)]


async def test_cancelling_a_worker_run_as_an_asyncio_task_drains_it_and_hands_its_task_back(tmp_path):
    with Queue(tmp_path / "q.db") as q:
        tid = q.enqueue("slow", {"seconds": 120})
        started = threading.Event()

        def slow(ctx):
            started.set()
            while not ctx.cancelled:
                time.sleep(0.01)
            return "stopped"

        w = Worker(q, Registry({"slow": slow}), poll_interval=0.1, shutdown_grace=0.5)
        task = asyncio.get_running_loop().create_task(w.run_async())
        while not started.is_set():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t = q.get(tid)
        assert (t.status, t.attempts) == ("queued", 0)  # handed back, the attempt not counted
        assert w.tasks_handed_back == 1 and q.workers() == []


@pytest.mark.skipif(
    sys.platform == "win32",
    reason="another process holding SQLite's write lock is tested on POSIX; the Windows stage runs the worker "
           "fault tests",
)
def test_a_worker_running_only_schedules_rides_out_a_locked_database(tmp_path, caplog):
    from test_worker_faults import WriteLock

    db = tmp_path / "q.db"
    caplog.set_level(logging.WARNING, logger="prismq_queue")
    with Queue(db, busy_timeout=0.2) as q:
        q.schedule("tick", "job", every=1)
        # No handlers: the worker claims nothing; with heartbeats a minute apart, its only writes
        # are the scheduler's passes.
        w = Worker(q, Registry({}), poll_interval=0.1, heartbeat_interval=60)
        thread = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
        thread.start()
        try:
            wait_until(lambda: q.stats()["queued"] >= 1, what="the first periodic task")
            lock = WriteLock(db)
            try:
                wait_until(lambda: "database writes are failing" in caplog.text, what="the outage noticed")
                assert thread.is_alive()
                enqueued = q.stats()["queued"]
            finally:
                lock.release()
            wait_until(lambda: "database writes work again" in caplog.text, what="the outage's end")
            wait_until(lambda: q.stats()["queued"] > enqueued, what="periodic tasks enqueued again")
        finally:
            w.stop()
            thread.join(60)
        assert not thread.is_alive()
        assert "periodic tasks not enqueued" not in caplog.text  # a database error is the worker's outage
        assert "busy" in caplog.text.split("database writes are failing", 1)[1].splitlines()[0].lower()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"queues": [""]}, "queues must be a non-empty string"),
        ({"capabilities": {"gpu": object()}}, r"capabilities\['gpu'\] is not JSON-serialisable"),
    ],
    ids=["empty-queue-name", "capabilities-not-json"],
)
def test_a_worker_whose_claims_the_queue_refuses_stops_at_once_with_the_reason(queue_url, options, message):
    with Queue(queue_url) as q:
        tid = q.enqueue("job")
        w = Worker(q, Registry({"job": lambda ctx: "ran"}), poll_interval=0.1, **options)
        with pytest.raises(InvalidArgument, match=message):
            w.run(install_signal_handlers=False)
        assert q.get(tid).status == "queued" and q.workers() == []  # nothing claimed, no worker row left
