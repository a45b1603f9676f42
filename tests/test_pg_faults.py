"""PostgreSQL's faults (issue 19), against a throwaway cluster of this module's own with password
authentication: an unreachable server, a wrong password, a missing database, an exhausted pool
and a statement timeout each raise a typed error that says what to fix and never shows the
password; a server restart in the middle of a drain, and connections killed with
pg_terminate_backend, lose no task and complete none twice: the worker processes reconnect and go
on."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter

import pytest

import pg_cluster
from prismq_queue import DatabaseBusy, DatabaseError, Queue
from serve_helpers import env, wait_until
from worker_cli_helpers import WorkerCLI, runs

PASSWORD = "Pg-secr3t-" + uuid.uuid4().hex[:8]
HANDLERS = ("--handlers", "fault_handlers:registry")


@pytest.fixture(scope="module")
def cluster():
    yield from pg_cluster.running(pg_cluster.PasswordCluster, PASSWORD)


@pytest.fixture
def url(cluster):
    return pg_cluster.with_schema(cluster.url)


def schema_of(url):
    return url.rsplit("schema=", 1)[1].split("&")[0]


def refused(url, exc=DatabaseError):
    with pytest.raises(exc) as info:
        Queue(url).close()
    text = str(info.value)
    assert PASSWORD not in text, text
    return info.value, text


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------- errors
def test_an_unreachable_server_says_where_it_tried(cluster):
    e, text = refused(f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/app?connect_timeout=2")
    assert e.kind == "io_error", text
    assert "postgresql://app@127.0.0.1" in text and "accepts connections" in text, text


def test_a_wrong_password_says_to_check_it(cluster):
    bad = pg_cluster.with_schema(cluster.url.replace(PASSWORD, "not-the-" + PASSWORD[::-1]))
    e, text = refused(bad)
    assert type(e) is DatabaseError and e.kind == "other", text
    assert "password authentication failed" in text and "check the user and password" in text, text
    assert PASSWORD[::-1] not in text, text


def test_a_missing_database_says_to_create_it(cluster):
    e, text = refused(pg_cluster.with_schema(cluster.url.rsplit("/", 1)[0] + "/no_such_db"))
    assert type(e) is DatabaseError and "no_such_db" in text and "createdb" in text, text


def lock_tasks(cluster, url):
    """A psql session holding the queue's tasks table locked, until its stdin is closed."""
    s = cluster.session(f"BEGIN; LOCK TABLE {schema_of(url)}.tasks IN ACCESS EXCLUSIVE MODE; SELECT 'locked';")
    assert s.stdout.readline().strip() == "locked"
    return s


def release(session):
    session.stdin.close()
    session.wait(30)


def test_an_exhausted_pool_waits_pool_timeout_then_says_what_to_raise(cluster, url):
    app = f"exhaust_{uuid.uuid4().hex[:8]}"
    with Queue(f"{url}&pool_size=1&pool_timeout=0.5&application_name={app}") as q:
        q.stats()
        lock = lock_tasks(cluster, url)
        blocked = threading.Thread(target=q.enqueue, args=("t", {}))
        try:
            blocked.start()  # holds the pool's only connection, waiting on the lock
            wait_until(lambda: cluster.sql(
                f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' "
                "AND wait_event_type = 'Lock'").strip() == "1", what="the enqueue waiting on the lock")
            with pytest.raises(DatabaseBusy) as info:
                q.get(1)
        finally:
            release(lock)
            blocked.join(30)
        text = str(info.value)
        assert info.value.kind == "busy" and "pool_size" in text and "pool_timeout" in text, text
        assert PASSWORD not in text, text
        assert q.stats()["queued"] == 1, "the blocked enqueue went through once the lock was gone"


def test_a_statement_timeout_is_busy_and_names_the_setting(cluster, url):
    with Queue(f"{url}&options=-c%20statement_timeout%3D200") as q:
        q.enqueue("t", {})
        lock = lock_tasks(cluster, url)
        try:
            with pytest.raises(DatabaseBusy) as info:
                q.enqueue("t", {})
        finally:
            release(lock)
        text = str(info.value)
        assert info.value.kind == "busy" and "statement_timeout" in text and PASSWORD not in text, text
        assert q.stats()["queued"] == 1


# ---------------------------------------------------------------------- drains through outages
N_TASKS = 2000


def drain(cluster, url, tmp_path, disturb):
    """Two worker processes drain N_TASKS while ``disturb()`` runs (called once a tenth of them are
    done); afterwards every task is completed and its handler ran exactly once."""
    side = tmp_path / "runs.txt"
    with Queue(url) as q:
        ids = q.enqueue_many([{"type": "record", "payload": {"n": i, "runs": str(side)}} for i in range(N_TASKS)])
    environ = {**env(), "PRISMQ_DB": url}
    workers = [WorkerCLI(*HANDLERS, "--worker-id", f"w{i}", "--concurrency", 4, "--lease", 15,
                         "--poll-interval", 0.2, environ=environ) for i in range(2)]
    try:
        wait_until(lambda: sum(runs(side).values()) >= N_TASKS // 10, timeout=120, what="a tenth done")
        disturb()
        with Queue(url) as q:
            wait_until(lambda: q.stats()["completed"] == N_TASKS, timeout=300, what="every task completed")
        for w in workers:
            assert w.alive(), w.output()
            assert w.stop() == 0, w.output()
            assert PASSWORD not in w.output()
    finally:
        for w in workers:
            w.close()
    ran = runs(side)
    assert ran == Counter(ids), {t: n for t, n in ran.items() if n != 1} or set(ids) - set(ran)
    with Queue(url) as q:
        stats = q.stats()
        assert (stats["completed"], stats["queued"], stats["running"]) == (N_TASKS, 0, 0), stats
        for tid in ids[:: N_TASKS // 50]:
            t = q.get(tid)
            assert t.status == "completed" and t.result == {"n": ids.index(tid), "blob": ""}, t


def test_a_server_restart_during_a_drain_loses_nothing_and_runs_nothing_twice(cluster, url, tmp_path):
    side = tmp_path / "runs.txt"

    def restart():
        assert sum(runs(side).values()) < N_TASKS, "the restart must come in the middle of the drain"
        cluster.restart()

    drain(cluster, url, tmp_path, restart)


def test_connections_killed_again_and_again_during_a_drain_lose_nothing(cluster, url, tmp_path):
    side = tmp_path / "runs.txt"
    killed = []

    def disturb():
        # Every connection of the workers (pool and listener), every 0.2s, until most are done.
        while sum(runs(side).values()) < N_TASKS * 0.8 and len(killed) < 150:
            out = cluster.sql("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name LIKE 'prismq_queue%' AND pid <> pg_backend_pid()) k")
            killed.append(int(out.strip() or 0))
            time.sleep(0.2)

    drain(cluster, url, tmp_path, disturb)
    assert sum(killed) >= 5 and len(killed) >= 2, killed
