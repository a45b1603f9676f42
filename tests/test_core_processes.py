"""Many real processes on one file: opening, idempotency races, claiming, backups, migrations.

Children are started with the "spawn" method; their entry points live in ``mp_helpers``. Every
wait has a deadline, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import sqlite3
import time
from collections import Counter

import pytest

import mp_helpers
from conftest import pragma
from prismq_queue import SCHEMA_VERSION, DatabaseError, Queue, SchemaVersionError

CTX = mp.get_context("spawn")
DEADLINE = 45.0  # seconds for any one group of processes; each test stays well under a minute

pytestmark = pytest.mark.timeout(120)  # a last resort: the deadlines below fail sooner


class Procs:
    """Processes this test started; results come back on `out`; every wait has a deadline."""

    def __init__(self):
        self.procs = []
        self.out = CTX.Queue()

    def start(self, target, *args):
        p = CTX.Process(target=target, args=args, daemon=True)
        p.start()
        self.procs.append(p)
        return p

    def results(self, n, timeout=DEADLINE):
        """Read n results, failing early if a child died without reporting."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n:
            try:
                got.append(self.out.get(timeout=0.2))
                continue
            except queue_mod.Empty:
                pass
            crashed = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
            if crashed and self.out.empty():
                pytest.fail(f"a child process died without reporting (exit codes {crashed}); got {len(got)} of {n}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for results: got {len(got)} of {n}")
        return got

    def join(self, timeout=DEADLINE):
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
            assert not p.is_alive(), f"process {p.pid} did not exit within {timeout} s"
            assert p.exitcode == 0, f"process {p.pid} exited with {p.exitcode}"

    def stop(self):
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


@pytest.fixture
def procs():
    group = Procs()
    yield group
    group.stop()


def user_version(path):
    return pragma(path, "user_version")


def all_tasks(q):
    rows, after = [], None
    while True:
        page = q.list(limit=1000, after_id=after)
        if not page:
            return rows
        rows += page
        after = page[-1].id


# -- opening -------------------------------------------------------------------------------------


def test_many_processes_open_the_same_new_file_at_once(db_path, procs):
    n = 8
    barrier = CTX.Barrier(n, timeout=DEADLINE)
    for _ in range(n):
        procs.start(mp_helpers.open_new_file, db_path, barrier, procs.out)
    assert procs.results(n) == ["ok"] * n
    procs.join()
    assert user_version(db_path) == SCHEMA_VERSION
    with Queue(db_path) as q:
        assert q.stats()["total"] == n  # each opener enqueued one task: none was lost to a re-migration
        assert q.integrity_check() == []
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        [(tasks_tables,)] = con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'tasks'")
        assert tasks_tables == 1
    finally:
        con.close()


# -- idempotency ---------------------------------------------------------------------------------


def test_idempotency_race_one_key(db_path, procs):
    n = 8
    Queue(db_path).close()  # the file exists: the race is on the key, not on creating the file
    barrier = CTX.Barrier(n, timeout=DEADLINE)
    for _ in range(n):
        procs.start(mp_helpers.enqueue_same_key, db_path, "only-once", barrier, procs.out)
    ids = procs.results(n)
    procs.join()
    assert len(ids) == n and len(set(ids)) == 1, ids
    with Queue(db_path) as q:
        assert q.stats()["total"] == 1
        t = q.get(ids[0])
        assert (t.idempotency_key, t.payload, t.status) == ("only-once", {"by": "only-once"}, "queued")
        assert q.find("only-once").id == ids[0]


def test_idempotency_race_many_keys(db_path, procs):
    n, keys = 8, [f"key-{i}" for i in range(40)]
    Queue(db_path).close()
    barrier = CTX.Barrier(n, timeout=DEADLINE)
    for _ in range(n):
        procs.start(mp_helpers.enqueue_keys, db_path, keys, barrier, procs.out)
    reports = procs.results(n)
    procs.join()
    assert [errors for _, errors in reports] == [[]] * n
    for key in keys:
        seen = {ids[key] for ids, _ in reports}
        assert len(seen) == 1, f"{key} got ids {seen}"
    with Queue(db_path) as q:
        rows = all_tasks(q)
        assert len(rows) == len(keys)
        assert {t.idempotency_key: t.id for t in rows} == reports[0][0]
        assert all(t.payload == {"key": t.idempotency_key} for t in rows)


# -- claiming ------------------------------------------------------------------------------------


def test_no_task_is_claimed_twice(db_path, procs):
    total = 2400
    with Queue(db_path) as q:
        all_ids = q.enqueue_many([{"type": "job", "payload": {"n": i}} for i in range(total)])
    batches = {"single-1": 1, "single-2": 1, "batch-10": 10, "batch-25": 25}
    barrier = CTX.Barrier(len(batches), timeout=DEADLINE)
    for worker_id, batch in batches.items():
        procs.start(mp_helpers.claim_and_complete, db_path, worker_id, batch, procs.out, barrier)
    reports = procs.results(len(batches))
    procs.join()

    errors = [e for _, _, errs in reports for e in errs]
    assert errors == []  # in particular, no "database is locked"
    claimed_by = {}
    for worker_id, claimed, _ in reports:
        for tid in claimed:
            assert tid not in claimed_by, f"task {tid} claimed by {claimed_by[tid]} and {worker_id}"
            claimed_by[tid] = worker_id
    assert sorted(claimed_by) == sorted(all_ids)

    counts = Counter(claimed_by.values())
    assert len([w for w in batches if counts[w] > 0]) >= 3, counts  # the work was shared

    with Queue(db_path) as q:
        stats = q.stats()
        assert (stats["completed"], stats["queued"], stats["running"]) == (total, 0, 0)
        for t in all_tasks(q):
            assert (t.status, t.attempts, t.result) == ("completed", 1, {"by": claimed_by[t.id]}), t


@pytest.mark.parametrize("strategy", ["weighted_random", "fifo"])
def test_every_task_is_in_the_claim_index_that_another_process_creates(db_path, procs, strategy):
    """A file has its FIFO/LIFO and weighted claim indexes from the first claim of their
    strategy on. A process that queued tasks before another process made that claim, and stays
    open, must keep the new index up to date from its next write on: every task it queues
    afterwards, and every task it puts back (a retry after its backoff, a hand-back), is one a
    claim of that strategy can take. Such claims then take every task, each once."""
    with Queue(db_path) as q:
        q.set_retry_policy("default", base=0.01, cap=0.01)
        early = q.enqueue_many([{"type": "t", "priority": p} for p in (1, 5, 50, 500) * 5])
        [retried] = q.claim("w")
        [handed_back] = q.claim("w")

        procs.start(mp_helpers.claim_once, db_path, strategy, procs.out)
        [first] = procs.results(1)
        procs.join()
        assert len(first) == 1 and first[0] in early

        late = q.enqueue_many([{"type": "t", "priority": p} for p in (1, 5, 50, 500) * 5])
        q.fail(retried, "again")  # back after 10 ms
        q.release(handed_back)
        got = []
        for _ in range(200):
            tasks = q.claim("w", strategy=strategy, limit=7)
            if not tasks and q.stats()["queued"] == 0:
                break
            got += [t.id for t in tasks]
            time.sleep(0.001 if tasks else 0.01)  # a retried task waits out its backoff
        assert sorted(got + first) == sorted(early + late)
        assert q.stats()["queued"] == 0


def test_a_claim_sees_what_another_process_did_since_the_previous_one(db_path, procs):
    """Between its claims a handle remembers the head of each lane it searched, and trusts that
    memory only while nothing else was committed to the file (claim/heads.rs). Another process
    that takes a remembered head, or queues a more urgent task, in between: the next claim must
    see both."""
    with Queue(db_path) as q:
        ids = q.enqueue_many([{"type": f"t{i % 4}", "priority": 50} for i in range(40)])
        [first] = q.claim("w")
        assert first.id == ids[0]  # and the heads of lanes t1, t2, t3 are remembered
        q.complete(first)

        procs.start(mp_helpers.claim_once, db_path, "priority", procs.out)
        [[taken]] = procs.results(1)
        procs.join()
        assert taken == ids[1]  # the head remembered for lane t1
        procs.start(mp_helpers.enqueue_one, db_path, "t3", 1, procs.out)
        [urgent] = procs.results(1)
        procs.join()

        assert [t.id for t in q.claim("w")] == [urgent]
        assert [t.id for t in q.claim("w")] == [ids[2]]
        assert [t.id for t in q.claim("w")] == [ids[3]]
        assert [t.id for t in q.claim("w")] == [ids[4]]


def test_eight_busy_processes_never_see_database_is_locked(db_path, procs):
    n, rounds = 8, 40
    Queue(db_path).close()
    barrier = CTX.Barrier(n, timeout=DEADLINE)
    for i in range(n):
        procs.start(mp_helpers.mixed_work, db_path, f"w{i}", rounds, barrier, procs.out)
    reports = procs.results(n)
    procs.join()

    errors = [e for _, _, errs in reports for e in errs]
    assert not [e for e in errors if "locked" in e or "busy" in e], errors
    assert errors == []
    settled_by = {}
    for worker_id, settled, _ in reports:
        for tid, how in settled.items():
            assert tid not in settled_by, f"task {tid} settled by {settled_by[tid][0]} and {worker_id}"
            settled_by[tid] = (worker_id, how)
    assert len([r for r in reports if r[1]]) >= 4  # at least half the processes settled tasks

    with Queue(db_path) as q:
        rows = all_tasks(q)
        assert len(rows) == n * rounds * 4
        assert sorted(t.id for t in rows) == sorted(settled_by)  # every task settled exactly once
        for t in rows:
            worker_id, how = settled_by[t.id]
            assert (t.status, t.attempts, t.step) == (how, 1, "half way"), t
            if how == "completed":
                assert t.result == {"by": worker_id}
            else:
                assert t.error == "deliberate"
        assert sorted(w.id for w in q.workers()) == [f"w{i}" for i in range(n)]


# -- other SQLite builds ----------------------------------------------------------------------


def test_another_sqlite_build_sees_every_commit_whole_while_a_process_writes(db_path, procs):
    # Our connections gather a commit's WAL frames and write them at once (src/storage/sqlite/vfs/). A reader
    # in another process on another SQLite build (Python's sqlite3, 3.40) must still see only
    # whole transactions, in order, and a sound file. This process never opens a Queue on the
    # file: two SQLite libraries in one process do not see each other's POSIX locks.
    started = CTX.Event()
    procs.start(mp_helpers.keep_writing, db_path, 2.0, procs.out, started)
    assert started.wait(DEADLINE), "the writer never committed"
    c = sqlite3.connect(db_path, timeout=30)
    seen = []
    deadline = time.monotonic() + 1.8
    while time.monotonic() < deadline:
        with c:  # one read transaction: count and contents from the same snapshot
            n, top = c.execute(
                "SELECT count(*), coalesce(max(json_extract(payload, '$.n')), -1) FROM tasks"
            ).fetchone()
        assert n % 50 == 0, n  # whole enqueue_many transactions only
        assert top == n - 1, (n, top)  # the oldest n tasks, none missing
        seen.append(n)
    [written] = procs.results(1)
    procs.join()
    assert seen == sorted(seen) and len(set(seen)) > 3, seen[:20]
    assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert c.execute("SELECT count(*) FROM tasks").fetchone() == (written,)
    c.close()


# -- backup --------------------------------------------------------------------------------------


def test_backup_while_another_process_keeps_writing(db_path, tmp_path, procs):
    started = CTX.Event()
    procs.start(mp_helpers.keep_writing, db_path, 2.5, procs.out, started)
    assert started.wait(DEADLINE), "the writer never committed"
    with Queue(db_path) as q:
        copies = []
        for i in range(3):
            before = q.stats()["total"]
            dest = tmp_path / f"copy-{i}.db"
            q.backup(str(dest))
            after = q.stats()["total"]
            copies.append((dest, before, after))
    [written] = procs.results(1)
    procs.join()
    assert written > copies[-1][2]  # the writer was still writing after the last backup

    for dest, before, after in copies:
        with Queue(str(dest)) as copy:
            assert copy.integrity_check() == []
            count = copy.stats()["total"]
            assert before <= count <= after, (before, count, after)
            assert count % 50 == 0  # whole enqueue_many transactions only
            ns = sorted(t.payload["n"] for t in all_tasks(copy))
            assert ns == list(range(count))  # the oldest `count` tasks, none missing
        assert user_version(str(dest)) == SCHEMA_VERSION


# -- migration -----------------------------------------------------------------------------------


def test_a_new_file_gets_the_current_schema_version(db_path):
    assert isinstance(SCHEMA_VERSION, int) and SCHEMA_VERSION >= 1
    Queue(db_path).close()
    assert user_version(db_path) == SCHEMA_VERSION
    Queue(db_path).close()  # reopening changes nothing
    assert user_version(db_path) == SCHEMA_VERSION


def test_a_file_from_a_newer_version_is_refused(db_path):
    with Queue(db_path) as q:
        tid = q.enqueue("t", {"keep": "me"})
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()

    with pytest.raises(SchemaVersionError) as e:
        Queue(db_path)
    msg = str(e.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in msg
    assert f"understands only up to {SCHEMA_VERSION}" in msg
    assert "upgrade prismq_queue" in msg

    # refused without touching it
    assert user_version(db_path) == SCHEMA_VERSION + 1
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("SELECT id, payload FROM tasks").fetchall() == [(tid, '{"keep":"me"}')]
    finally:
        con.close()


@pytest.mark.parametrize(
    "table, hint",
    [("users", "open a new path for the queue"), ("task_queue", "prismq-queue import-legacy")],
)
def test_a_sqlite_file_with_someone_elses_tables_is_refused(db_path, table, hint):
    con = sqlite3.connect(db_path)
    con.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute(f"INSERT INTO {table} (name) VALUES ('ada')")
    con.commit()
    con.close()

    with pytest.raises(DatabaseError) as e:
        Queue(db_path)
    msg = str(e.value)
    assert "is not a prismq_queue database" in msg and f"it has tables {table}" in msg
    assert hint in msg

    con = sqlite3.connect(db_path)
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert names == [table]  # none of the queue's tables were created
        assert con.execute("PRAGMA user_version").fetchone()[0] == 0
        assert con.execute(f"SELECT name FROM {table}").fetchall() == [("ada",)]
    finally:
        con.close()


def test_a_short_busy_timeout_is_honoured_and_nothing_is_written(db_path, procs):
    Queue(db_path).close()
    started = CTX.Event()
    procs.start(mp_helpers.hold_write_lock, db_path, 30.0, started, procs.out)
    assert started.wait(DEADLINE)
    with Queue(db_path, busy_timeout=1.0) as q:
        t0 = time.monotonic()
        with pytest.raises(DatabaseError, match="busy_timeout"):
            q.enqueue("t")
        waited = time.monotonic() - t0
        # The error comes once busy_timeout has passed, not after an internal wait of its own
        # (it used to take over 8 s whatever the timeout). Generous bounds: a loaded machine.
        assert 1.0 <= waited < 6.0, waited
    for p in procs.procs:
        p.terminate()
    with Queue(db_path) as q:
        assert q.stats()["total"] == 0
