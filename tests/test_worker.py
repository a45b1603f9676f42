"""The worker runtime, black-box: handlers run, results and failures land in the queue."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time

import pytest

from prismq_queue import Queue
from prismq_queue.worker import Worker

from worker_handlers import REGISTRY, Registry, run_worker

sys.path.insert(0, os.path.dirname(__file__))  # spawned processes import worker_handlers


def wait_until(cond, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return False


@contextlib.contextmanager
def running(q, registry=REGISTRY, **kw):
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("heartbeat_interval", 0.2)
    w = Worker(q, registry, **kw)
    t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    try:
        yield w
    finally:
        w.stop()
        t.join(timeout=30)
        assert not t.is_alive(), "worker did not stop"


@pytest.fixture
def q(tmp_path):
    with Queue(tmp_path / "w.db") as q:
        yield q


def test_sync_and_async_results_are_stored(q):
    a = q.enqueue("echo", {"x": 1})
    b = q.enqueue("async_echo", [1, 2])
    with running(q):
        assert wait_until(lambda: q.stats()["completed"] == 2)
    assert q.get(a).result["echo"] == {"x": 1}
    assert q.get(b).result == {"async": [1, 2]}


def test_exception_is_retried_then_dead_lettered(q):
    tid = q.enqueue("boom", "p", max_attempts=3, retry={"base": 0.05, "factor": 1.0, "jitter": 0.0})
    with running(q):
        assert wait_until(lambda: q.get(tid).status == "failed")
    t = q.get(tid)
    assert t.attempts == 3
    assert t.error == "ValueError: bad input 'p'"
    messages = [entry.message for entry in q.logs(tid)]
    assert sum("retrying" in m for m in messages) == 2 and "dead letter" in messages[-1]


def test_timeout_fails_the_attempt_and_tells_the_handler(q):
    tid = q.enqueue("slow_sync", {"seconds": 30}, timeout=0.3, max_attempts=1)
    with running(q):
        assert wait_until(lambda: q.get(tid).status == "failed", timeout=10)
    assert "TimeoutError" in q.get(tid).error


def test_async_timeout_cancels_the_coroutine(q):
    tid = q.enqueue("slow_async", {"seconds": 30}, timeout=0.2, max_attempts=1)
    with running(q):
        assert wait_until(lambda: q.get(tid).status == "failed", timeout=10)
    assert "TimeoutError" in q.get(tid).error


@pytest.mark.parametrize("task_type", ["slow_sync", "slow_async"])
def test_cancelling_a_running_task_reaches_its_handler(q, task_type):
    tid = q.enqueue(task_type, {"seconds": 30})
    with running(q) as w:
        assert wait_until(lambda: q.get(tid).status == "running")
        assert q.cancel(tid)
        # The handler stops (sync: sees ctx.cancelled; async: CancelledError) and frees its slot.
        assert wait_until(lambda: w.running_count == 0, timeout=5)
    assert q.get(tid).status == "cancelled"


def test_graceful_shutdown_hands_back_unfinished_leases(q):
    ids = [q.enqueue("slow_sync", {"seconds": 30}) for _ in range(3)]
    with running(q, shutdown_grace=0.2):
        assert wait_until(lambda: q.stats()["running"] == 3)
    for tid in ids:
        t = q.get(tid)
        assert t.status == "queued" and t.attempts == 0, t


def test_finished_within_grace_is_completed_not_handed_back(q):
    tid = q.enqueue("slow_sync", {"seconds": 0.3})
    with running(q, shutdown_grace=10):
        assert wait_until(lambda: q.get(tid).status == "running")
    assert q.get(tid).status == "completed"


def test_progress_and_logs_from_the_handler(q):
    tid = q.enqueue("reporting")
    with running(q):
        assert wait_until(lambda: q.get(tid).status == "completed")
    assert q.get(tid).step == "half"
    assert any(entry.message == "working" and entry.details == {"n": 1} for entry in q.logs(tid))


def test_a_worker_claims_only_its_types_and_capabilities(q):
    mine = q.enqueue("echo", 1)
    other_type = q.enqueue("unknown.type", 2)
    needs_gpu = q.enqueue("echo", 3, requires={"gpu": True})
    with running(q, Registry({"echo": REGISTRY.handlers["echo"]})):
        assert wait_until(lambda: q.get(mine).status == "completed")
        time.sleep(0.3)
    assert q.get(other_type).status == "queued" and q.get(other_type).attempts == 0
    assert q.get(needs_gpu).status == "queued"
    with running(q, Registry({"echo": REGISTRY.handlers["echo"]}), capabilities={"gpu": True}):
        assert wait_until(lambda: q.get(needs_gpu).status == "completed")


def test_heartbeat_row_while_running_and_gone_after(q):
    with running(q, worker_id="hb-1") as w:
        assert wait_until(lambda: any(x.id == "hb-1" for x in q.workers()))
        info = next(x for x in q.workers() if x.id == "hb-1")
        assert info.pid == os.getpid() and not info.stale
        assert w.worker_id == "hb-1"
    assert all(x.id != "hb-1" for x in q.workers())


def test_stale_workers_are_reported(tmp_path):
    with Queue(tmp_path / "s.db", stale_worker_after=0.2) as q:
        q.heartbeat("ghost")
        assert not q.workers()[0].stale
        time.sleep(0.3)
        assert q.workers()[0].stale


def test_idle_worker_picks_up_a_task_promptly(q):
    with running(q, poll_interval=5.0):
        time.sleep(0.2)  # idle, sleeping in wait_for_change
        t0 = time.monotonic()
        tid = q.enqueue("noop")
        assert wait_until(lambda: q.get(tid).status == "completed", timeout=3, interval=0.001)
        assert time.monotonic() - t0 < 2.0  # far below the 5 s poll interval


def test_bad_settings_are_refused(q):
    from prismq_queue import InvalidArgument

    for kw in ({"concurrency": 0}, {"lease": 0}, {"poll_interval": -1}, {"strategy": "random"}, {"shutdown_grace": -1}):
        with pytest.raises(InvalidArgument):
            Worker(q, REGISTRY, **kw)


# ---------------------------------------------------------------- real processes

def spawn(target, *args, **kwargs):
    ctx = multiprocessing.get_context("spawn")
    p = ctx.Process(target=target, args=args, kwargs=kwargs)
    p.start()
    return p


def test_four_processes_drain_without_loss_or_duplicates(tmp_path):
    path = str(tmp_path / "mp.db")
    n = 10_000
    Queue(path).close()
    procs = [spawn(run_worker, path, ["record_pid"], 5, 60.0, None, f"mp-{k}") for k in range(4)]
    try:
        with Queue(path) as q:
            # The tasks arrive once all four claim: on a loaded machine a process can take seconds
            # to start, and the first one up would drain everything before the others begin.
            assert wait_until(lambda: len(q.workers()) == 4, timeout=120, interval=0.1), q.workers()
            for i in range(0, n, 1000):
                q.enqueue_many([{"type": "record_pid", "payload": {"i": j}} for j in range(i, i + 1000)])
            assert wait_until(lambda: q.stats()["completed"] == n, timeout=120, interval=0.2), q.stats()
            for p in procs:
                os.kill(p.pid, signal.SIGTERM) if hasattr(signal, "SIGTERM") else p.terminate()
            for p in procs:
                p.join(30)
            stats = q.stats()
            assert stats["completed"] == n and stats["total"] == n
            done = []
            after = None
            while True:
                page = q.list(status="completed", limit=5000, after_id=after)
                if not page:
                    break
                done += page
                after = page[-1].id
            assert len({t.id for t in done}) == n
            assert all(t.attempts == 1 for t in done), "a task ran twice"
            by_worker = {}
            for t in done:
                by_worker[t.locked_by] = by_worker.get(t.locked_by, 0) + 1
            assert len(by_worker) == 4, by_worker  # the work spread over every process
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


def test_kill_9_mid_task_runs_it_again_elsewhere_exactly_once(tmp_path):
    path = str(tmp_path / "k.db")
    with Queue(path) as q:
        ids = [q.enqueue("record_pid", {"sleep": 0.3}) for _ in range(20)]
    victim = spawn(run_worker, path, ["record_pid"], 5, 1.0, None, "victim")
    try:
        with Queue(path) as q:
            assert wait_until(lambda: q.stats()["running"] >= 3, timeout=30)
            victim.kill()  # SIGKILL on POSIX, TerminateProcess on Windows
            victim.join(10)
            held = [t.id for t in q.list(status="running")]
            assert held, "the victim held tasks when it died"
            rescuer = spawn(run_worker, path, ["record_pid"], 5, 1.0, None, "rescuer")
            try:
                assert wait_until(lambda: q.stats()["completed"] == len(ids), timeout=60, interval=0.1), q.stats()
            finally:
                rescuer.terminate()
                rescuer.join(30)
            for tid in held:
                t = q.get(tid)
                assert t.status == "completed" and t.locked_by == "rescuer" and t.attempts == 2
            assert q.stats()["total"] == len(ids)
            assert all(q.get(tid).status == "completed" for tid in ids)
    finally:
        if victim.is_alive():
            victim.kill()
