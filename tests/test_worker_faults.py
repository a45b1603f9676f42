"""A worker rides out database outages: a lock held past busy_timeout by another process, a full
disk (real, per process: RLIMIT_FSIZE), and a commit whose reply is lost. It keeps finished
results until they are committed (each exactly once), keeps its leases, stops claiming meanwhile,
carries on by itself afterwards, and exits cleanly when told to stop."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import pytest

from prismq_queue import DatabaseError, Queue, Worker
from serve_helpers import CTRL_BREAK_UNDER_WINE, wait_until
from worker_cli_helpers import TESTS, WorkerCLI, runs

HANDLERS = ("--handlers", "fault_handlers:registry")


class WriteLock:
    """Another process (Python's own sqlite3) holding the file's write lock until released."""

    SCRIPT = (
        "import sqlite3, sys\n"
        "con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n"
        "con.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
        "con.execute('ROLLBACK')\n"
    )

    def __init__(self, db):
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            assert self.proc.wait(30) == 0


def enqueue_records(q, side, count, first=0, **payload):
    return [q.enqueue("record", {"n": first + i, "runs": str(side), **payload}) for i in range(count)]


def hold_and_watch(w, seconds):
    """The outage lasts ``seconds``; the worker process must live through it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert w.alive(), w.output()
        time.sleep(0.1)


def assert_completed_once(q, side, ids, size=0):
    assert runs(side) == Counter(ids)
    for n, tid in enumerate(ids):
        t = q.get(tid)
        assert (t.status, t.attempts, t.result) == ("completed", 1, {"n": n, "blob": "x" * size}), t


@CTRL_BREAK_UNDER_WINE
def test_a_lock_held_past_busy_timeout_is_ridden_out(tmp_path):
    db, gate, side = tmp_path / "f.db", tmp_path / "gate", tmp_path / "runs.txt"
    with Queue(db) as q:
        ids = enqueue_records(q, side, 4, gate=str(gate))
    w = WorkerCLI("--db", db, *HANDLERS, "--worker-id", "locked-out", "--concurrency", 4, "--lease", 2,
                  "--busy-timeout", 0.2)
    lock = None
    try:
        with Queue(db) as q:
            wait_until(lambda: q.stats()["running"] == 4, what="every task claimed")
            lock = WriteLock(db)
            gate.touch()  # the handlers finish while no process can write
            wait_until(lambda: sum(runs(side).values()) == 4, what="every handler finished")
            hold_and_watch(w, 4.0)  # many busy_timeouts, and past the 2 s lease
            w.err.wait_for("database writes are failing")
            assert q.stats()["running"] == 4  # nothing could be written, nothing was lost
            lock.release()
            wait_until(lambda: q.stats()["completed"] == 4, what="the kept results committed")
            w.err.wait_for("database writes work again")
            more = enqueue_records(q, side, 3, first=4)  # and it claims again, by itself
            wait_until(lambda: q.stats()["completed"] == 7, what="new tasks run after the outage")
            w.interrupt()
            assert w.wait() == 0, w.output()
            assert_completed_once(q, side, ids + more)
            assert q.stats()["running"] == 0 and q.workers() == []
            assert w.err.text().count("database writes are failing") == 1, w.output()  # once per outage
    finally:
        if lock is not None:
            lock.release()
        w.close()


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE and SIGXFSZ (POSIX) for a per-process full disk")
def test_a_full_disk_is_ridden_out_and_leases_are_kept_meanwhile(tmp_path):
    db, gate, side, lift = tmp_path / "d.db", tmp_path / "gate", tmp_path / "runs.txt", tmp_path / "space-freed"
    with Queue(db) as q:
        q.checkpoint("truncate")
        limit = os.path.getsize(db) + (512 << 10)  # room for claims and renewals...
        size = limit + (256 << 10)  # ...but no file can hold one of these results
        ids = enqueue_records(q, side, 3, gate=str(gate), size=size)
        q.checkpoint("truncate")  # an empty WAL: the worker's writes must grow it
    lease = 2.0
    wrapper = [sys.executable, str(TESTS / "fsize_wrapper.py"), str(limit), str(lift)]
    w = WorkerCLI("--db", db, *HANDLERS, "--worker-id", "full-disk", "--concurrency", 3, "--lease", lease,
                  command=wrapper)
    try:
        with Queue(db) as q:  # reads only from here on: a write by this process would grow the WAL for the worker
            wait_until(lambda: q.stats()["running"] == 3, what="every task claimed")
            gate.touch()
            wait_until(lambda: sum(runs(side).values()) == 3, what="every handler finished")
            hold_and_watch(w, 2 * lease + 1)
            w.err.wait_for("database writes are failing")
            now = datetime.now(timezone.utc)
            for tid in ids:  # still held, and renewed through the outage: nobody else may take them
                t = q.get(tid)
                assert t.status == "running" and t.locked_by == "full-disk" and t.lease_until > now, t
            lift.touch()
            wait_until(lambda: q.stats()["completed"] == 3, what="the kept results committed")
            w.interrupt()
            assert w.wait() == 0, w.output()
            assert_completed_once(q, side, ids, size=size)
            assert q.stats()["running"] == 0 and q.workers() == []
    finally:
        lift.touch()
        w.close()


@CTRL_BREAK_UNDER_WINE
def test_stop_during_an_outage_hands_back_once_writes_work_within_the_grace(tmp_path):
    db, gate, side = tmp_path / "s.db", tmp_path / "gate", tmp_path / "runs.txt"
    with Queue(db) as q:
        [done] = enqueue_records(q, side, 1, gate=str(gate))
        [held] = enqueue_records(q, side, 1, first=1, gate=str(tmp_path / "never"))
    w = WorkerCLI("--db", db, *HANDLERS, "--worker-id", "stopping", "--lease", 2, "--busy-timeout", 0.2,
                  "--shutdown-grace", 4)
    lock = None
    try:
        with Queue(db) as q:
            wait_until(lambda: q.stats()["running"] == 2, what="both tasks claimed")
            lock = WriteLock(db)
            gate.touch()
            wait_until(lambda: runs(side)[done] == 1, what="the first handler finished")
            hold_and_watch(w, 1.0)
            w.interrupt()
            w.err.wait_for("stopping")
            hold_and_watch(w, 1.0)
            lock.release()
            assert w.wait() == 0, w.output()
            assert_completed_once(q, side, [done])
            t = q.get(held)
            assert (t.status, t.attempts) == ("queued", 0)  # handed back, the attempt not counted
            assert q.workers() == []
            w.err.wait_for("stopped: 1 done, 0 failed, 1 lease handed back")
    finally:
        if lock is not None:
            lock.release()
        w.close()


@CTRL_BREAK_UNDER_WINE
def test_stop_while_the_database_never_comes_back_exits_1_and_loses_no_task(tmp_path):
    db, gate, side = tmp_path / "n.db", tmp_path / "gate", tmp_path / "runs.txt"
    late_gate = tmp_path / "late"
    with Queue(db) as q:
        [done] = enqueue_records(q, side, 1, gate=str(gate))
        [held] = enqueue_records(q, side, 1, first=1, gate=str(late_gate))
    w = WorkerCLI("--db", db, *HANDLERS, "--worker-id", "stranded", "--lease", 2, "--busy-timeout", 0.2,
                  "--shutdown-grace", 1)
    lock = None
    try:
        with Queue(db) as q:
            wait_until(lambda: q.stats()["running"] == 2, what="both tasks claimed")
            lock = WriteLock(db)
            gate.touch()
            wait_until(lambda: runs(side)[done] == 1, what="the first handler finished")
            hold_and_watch(w, 1.0)
            w.interrupt()
            assert w.wait() == 1, w.output()
            w.err.wait_for("without saving 1 finished results or handing back 1 running tasks")
            lock.release()
            assert {q.get(done).status, q.get(held).status} == {"running"}  # until their leases expire
            late_gate.touch()
            rescuer = WorkerCLI("--db", db, *HANDLERS, "--worker-id", "rescuer")
            try:
                wait_until(lambda: q.stats()["completed"] == 2, what="the stranded tasks ran again")
                rescuer.interrupt()
                assert rescuer.wait() == 0, rescuer.output()
            finally:
                rescuer.close()
            for tid in (done, held):
                t = q.get(tid)
                assert (t.status, t.locked_by, t.attempts) == ("completed", "rescuer", 2), t
            assert runs(side)[held] == 1 and runs(side)[done] == 2  # its first result was never saved
    finally:
        if lock is not None:
            lock.release()
        w.close()


# ---------------------------------------------------------------- in-process, through Worker


class Faulty:
    """A Queue whose ``settle`` fails as told, else passes every call through."""

    def __init__(self, q, fault):
        self._q = q
        self.fault = fault
        self.settles = 0

    def __getattr__(self, name):
        return getattr(self._q, name)

    def settle(self, complete=None, fail=None, **claim):
        self.settles += 1
        return self.fault(self._q, complete, fail, claim)


def counting_registry():
    from worker_handlers import Registry

    ran = Counter()
    lock = threading.Lock()

    def handler(ctx):
        with lock:
            ran[ctx.task.id] += 1
        return {"n": ctx.payload}

    return Registry({"count": handler}), ran


def run_in_thread(w):
    errors = []

    def target():
        try:
            w.run(install_signal_handlers=False)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            errors.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors


def test_a_commit_whose_reply_is_lost_applies_nothing_twice(tmp_path):
    """The settle commits, then the call fails: the worker sends the batch again (fenced by lease
    tokens, so nothing is applied twice); tasks claimed in that lost reply come back when their
    lease expires and run once."""
    tripped = []

    def commit_then_raise(q, complete, fail, claim):
        out = q.settle(complete, fail, **claim)
        if complete and out[2] and not tripped:
            tripped.append([t.id for t in out[2]])
            raise DatabaseError("disk I/O error (raised after the commit)")
        return out

    with Queue(tmp_path / "a.db") as q:
        ids = [q.enqueue("count", i) for i in range(30)]
        registry, ran = counting_registry()
        w = Worker(Faulty(q, commit_then_raise), registry, concurrency=2, batch_size=2, lease=0.5, poll_interval=0.05)
        thread, errors = run_in_thread(w)
        try:
            assert wait_until(lambda: q.stats()["completed"] == 30, timeout=60, what="every task completed")
            assert thread.is_alive() and not errors
        finally:
            w.stop()
            thread.join(30)
        assert tripped and not errors
        assert ran == Counter(ids)  # each handler ran exactly once, the orphaned claims included
        for n, tid in enumerate(ids):
            t = q.get(tid)
            assert (t.status, t.result) == ("completed", {"n": n})
            assert t.attempts == (2 if tid in tripped[0] else 1)  # an orphaned claim's lost attempt counts


def test_a_database_that_cannot_be_used_any_more_stops_the_worker(tmp_path):
    """A ``kind`` that waiting cannot fix (the file was replaced or is damaged): no retries, the
    worker stops and run() raises it."""

    refused = []

    def corrupt(q, complete, fail, claim):
        if complete:
            refused.append(complete)
            e = DatabaseError("database disk image is malformed")
            e.kind = "corrupt"
            raise e
        return q.settle(complete, fail, **claim)

    with Queue(tmp_path / "c.db") as q:
        tid = q.enqueue("count", 1)
        registry, ran = counting_registry()
        w = Worker(Faulty(q, corrupt), registry, poll_interval=0.05, shutdown_grace=30)
        thread, errors = run_in_thread(w)
        thread.join(20)
        assert not thread.is_alive(), "the worker kept going on a corrupt database"
        [e] = errors
        assert isinstance(e, DatabaseError) and e.kind == "corrupt"
        assert len(refused) == 1  # not retried, not even at shutdown
        assert w.results_unsaved == 1 and ran == Counter([tid])
        assert q.get(tid).status == "running"  # nothing more was written to a file that cannot be trusted


def test_a_result_that_cannot_be_stored_fails_only_its_own_task(tmp_path):
    from worker_handlers import Registry

    registry = Registry({"good": lambda ctx: {"n": ctx.payload}, "odd": lambda ctx: {"when": object()}})
    with Queue(tmp_path / "u.db") as q:
        good = [q.enqueue("good", i) for i in range(6)]
        odd = q.enqueue("odd", max_attempts=1)
        w = Worker(q, registry, concurrency=7, poll_interval=0.05)
        thread, errors = run_in_thread(w)
        try:
            wait_until(lambda: q.stats()["completed"] + q.stats()["failed"] == 7, what="every task settled")
        finally:
            w.stop()
            thread.join(30)
        assert not errors
        assert [q.get(t).result for t in good] == [{"n": i} for i in range(6)]
        t = q.get(odd)
        assert t.status == "failed" and t.error.startswith("result could not be stored: result['when'] is not JSON"), t
