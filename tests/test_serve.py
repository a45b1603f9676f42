"""``prismq-queue serve`` as a user runs it: a real process with real worker processes, talked to
over HTTP; refusals before anything starts; a clean stop that loses no task."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3

import httpx
import pytest

from prismq_queue import SCHEMA_VERSION, Queue
from prismq_queue.cli import EXIT_FAILED, EXIT_USAGE
from serve_helpers import CTRL_BREAK_UNDER_WINE, Serve, run_serve, wait_until

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def serve_in(tmp_path):
    started = []

    def start(*args):
        s = Serve(tmp_path, *args)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.close()


@CTRL_BREAK_UNDER_WINE
def test_api_with_token_embedded_workers_and_a_killed_worker_restarted(tmp_path, serve_in):
    db = tmp_path / "q.db"
    s = serve_in("--db", db, "--port", 0, "--workers", 2, "--concurrency", 2, "--handlers", "worker_handlers:REGISTRY")
    assert s.token and s.base.startswith("http://127.0.0.1:") and not s.base.endswith(":0")
    with httpx.Client(base_url=s.base, timeout=30) as http:
        assert http.get("/api/queue/stats").status_code == 401
        assert http.get("/api/queue/stats", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/api/queue/stats", headers=s.headers).status_code == 200

        ids = [http.post("/api/queue/enqueue", json={"type": "echo", "payload": {"n": i}}, headers=s.headers)
               .json()["task_id"] for i in range(12)]
        done = wait_until(lambda: all(http.get(f"/api/queue/tasks/{i}", headers=s.headers).json()["status"]
                                      == "completed" for i in ids), what="the API's tasks completed")
        assert done

    with Queue(db) as q:
        assert [q.get(i).result["echo"] for i in ids] == [{"n": i} for i in range(12)]
        pids = {q.get(i).result["pid"] for i in ids}
        assert os.getpid() not in pids and s.proc.pid not in pids  # run by the worker processes
        workers = wait_until(lambda: len(q.workers()) == 2 and q.workers(), what="two heartbeats")
        victim = workers[0]
        os.kill(victim.pid, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        s.err.wait_for(rf"worker {victim.id} \(pid {victim.pid}\) exited unexpectedly")
        s.err.wait_for(rf"worker {victim.id} restarted \(pid \d+")
        new_pid = wait_until(lambda: next((w.pid for w in q.workers() if w.id == victim.id and w.pid != victim.pid),
                                          None), what="the restarted worker's heartbeat")
        assert new_pid != victim.pid
        # The restarted worker works: the other one can hold only 2 of these at once.
        more = [q.enqueue("record_pid", {"sleep": 0.5}) for _ in range(6)]
        wait_until(lambda: all(q.get(i).status == "completed" for i in more), what="tasks after the restart")
        assert new_pid in {q.get(i).result for i in more}

    s.interrupt()
    assert s.wait() == 0, s.output()
    assert "prismq-queue serve: stopped" in s.out.text()
    with Queue(db) as q:
        assert q.workers() == []  # every worker left cleanly


@CTRL_BREAK_UNDER_WINE
def test_demo_mode_makes_tasks_flow_without_handlers(tmp_path, serve_in):
    s = serve_in("--port", 0, "--workers", 1)  # the default database, in the current directory
    assert "demo mode" in s.out.text() and "--handlers" in s.out.text()
    db = tmp_path / "prismq_queue.db"
    with Queue(db) as q:
        seen_progress = set()

        def flowing():
            for t in q.list(status="running", limit=50):
                if t.progress is not None and 0 < t.progress < 100:
                    seen_progress.add(t.id)
            s_ = q.stats(queue="demo")
            return s_["completed"] >= 4 and seen_progress

        wait_until(flowing, timeout=90, interval=0.05, what="demo tasks completing with progress")
        assert {t.type for t in q.list(limit=100)} >= {"demo.resize", "demo.report"}
    s.interrupt()
    assert s.wait() == 0, s.output()


@CTRL_BREAK_UNDER_WINE
def test_sigint_with_tasks_running_loses_no_task(tmp_path, serve_in):
    db = tmp_path / "q.db"
    s = serve_in("--db", db, "--port", 0, "--workers", 2, "--concurrency", 2, "--shutdown-grace", 1,
                 "--handlers", "worker_handlers:REGISTRY")
    with Queue(db) as q:
        slow = [q.enqueue("slow_sync", {"seconds": 120}) for _ in range(4)]
        quick = [q.enqueue("echo", {"n": i}, priority=200) for i in range(20)]
        wait_until(lambda: all(q.get(i).status == "running" for i in slow), what="the slow tasks running")
        s.interrupt()
        assert s.wait() == 0, s.output()
        statuses = {i: q.get(i).status for i in slow + quick}
        assert set(statuses.values()) <= {"completed", "queued"}, statuses
        for i in slow:  # handed back at the end of the grace, the attempt not counted
            t = q.get(i)
            assert (t.status, t.attempts) == ("queued", 0)
        assert q.stats()["running"] == 0 and q.workers() == []
    assert "shutting down" in s.err.text()


def test_refuses_a_port_in_use_before_starting_workers(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run_serve(tmp_path, "--db", tmp_path / "q.db", "--port", port,
                                   "--handlers", "worker_handlers:REGISTRY")
    assert code == EXIT_FAILED
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert "started (pid" not in err and "dashboard" not in out
    with Queue(tmp_path / "q.db") as q:
        assert q.workers() == []


def _not_sqlite(path):
    path.write_bytes(b"hello, this is a text file and certainly not a database" * 20)


def _newer_schema(path):
    Queue(path).close()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


@pytest.mark.parametrize(
    "make, name, code, message",
    [
        (_not_sqlite, "junk.db", EXIT_FAILED, "is not a SQLite database"),
        (_newer_schema, "new.db", EXIT_FAILED, "schema version"),
        (None, "missing-dir/q.db", EXIT_USAGE, "does not exist"),
    ],
    ids=["not-sqlite", "newer-schema", "missing-directory"],
)
def test_refuses_an_unusable_database_before_starting_anything(tmp_path, make, name, code, message):
    path = tmp_path / name
    if make:
        make(path)
    before = path.read_bytes() if path.exists() else None
    got, out, err = run_serve(tmp_path, "--db", path, "--port", 0)
    assert got == code, err
    assert message in err and "error:" in err
    assert "dashboard" not in out and "started (pid" not in err
    assert (path.read_bytes() if path.exists() else None) == before  # nothing written


def test_bad_options_are_usage_errors_and_create_nothing(tmp_path):
    code, _, err = run_serve(tmp_path, "--port", 0, "--retention", "soon")
    assert code == EXIT_USAGE and "'soon' is not a duration" in err
    code, _, err = run_serve(tmp_path, "--port", 0, "--handlers", "no_such_module_here:registry")
    assert code == EXIT_USAGE and "no_such_module_here" in err
    assert list(tmp_path.iterdir()) == []  # not even the database file


@CTRL_BREAK_UNDER_WINE
def test_no_auth_on_every_interface_warns_loudly(tmp_path, serve_in):
    s = serve_in("--port", 0, "--workers", 0, "--no-auth", "--host", "0.0.0.0")
    text = s.out.text()
    assert "authentication is OFF" in text and "reachable from other machines" in text
    assert s.token is None
    with httpx.Client(base_url=s.base, timeout=30) as http:
        assert http.get("/api/queue/stats").status_code == 200  # no token needed
    s.interrupt()
    assert s.wait() == 0, s.output()


@CTRL_BREAK_UNDER_WINE
def test_maintenance_runs_on_its_schedule(tmp_path, serve_in):
    db = tmp_path / "q.db"
    with Queue(db) as q:
        done = q.enqueue_many([{"type": "t"} for _ in range(5)])
        for t in q.claim("w", limit=5):
            q.complete(t)
        dead = q.enqueue("d", max_attempts=1)
        q.fail(q.claim("w", types=["d"])[0], "kept", retry=False)
        stuck = q.enqueue("s", max_attempts=3)
        q.claim("crashed-worker", types=["s"], lease=0.2)  # never completed: its lease runs out
        fresh = q.enqueue("f")
    s = serve_in("--db", db, "--port", 0, "--workers", 0, "--retention", "1s", "--purge-interval", "1s",
                 "--sweep-interval", "1s", "--analyze-interval", "1s", "--checkpoint-interval", "1s")
    assert "purge every 1s, completed/cancelled tasks older than 1s" in s.out.text()
    s.err.wait_for(r"purge: deleted 5 completed/cancelled tasks older than 1s")
    s.err.wait_for(r"sweep: 1 expired leases back to the queue")
    s.err.wait_for(r"analyze: statistics refreshed")
    with Queue(db) as q:
        for i in done:
            with pytest.raises(KeyError):
                q.get(i)
        assert q.get(dead).status == "failed"  # dead letters are kept for an operator
        assert (q.get(stuck).status, q.get(stuck).attempts) == ("queued", 1)
        assert q.get(fresh).status == "queued"
    s.interrupt()
    assert s.wait() == 0, s.output()


@CTRL_BREAK_UNDER_WINE
def test_a_token_with_url_characters_survives_the_printed_link(tmp_path, serve_in):
    token = "a&b#c d/e+f%"
    s = serve_in("--port", 0, "--workers", 0, "--token", token)
    assert s.token == token, s.out.text()
    with httpx.Client(base_url=s.base, timeout=30) as http:
        assert http.get("/api/queue/stats", headers=s.headers).status_code == 200
    s.interrupt()
    assert s.wait() == 0, s.output()
