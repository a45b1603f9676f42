"""The prismq-queue command line: tables, --json, exit codes, and a worker run from the shell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_runner

from prismq_queue import Queue
from prismq_queue.cli import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, main

TESTS = Path(__file__).resolve().parent


def run(*args, ok=True):
    result = cli_runner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_version_names_the_bundled_sqlite():
    import prismq_queue

    out = run("--version").output
    assert prismq_queue.__version__ in out
    assert f"bundled SQLite {prismq_queue.SQLITE_VERSION}" in out


def test_enqueue_show_list_stats(tmp_path):
    db = tmp_path / "c.db"
    out = run("enqueue", "--db", db, "email.send", '{"to": "a@example.com"}', "--priority", 5, "--json").output
    tid = json.loads(out)["id"]
    run("enqueue", "--db", db, "report", "--delay", 3600)
    shown = json.loads(run("show", "--db", db, tid, "--json").output)
    assert shown["payload"] == {"to": "a@example.com"} and shown["priority"] == 5 and shown["status"] == "queued"
    listed = json.loads(run("list", "--db", db, "--json").output)
    assert [t["type"] for t in listed] == ["email.send", "report"]
    table = run("list", "--db", db).output
    assert table.splitlines()[0].split()[:4] == ["ID", "TYPE", "QUEUE", "STATUS"] and "email.send" in table
    stats = json.loads(run("stats", "--db", db, "--json").output)
    assert stats["queued"] == 2 and stats["total"] == 2 and stats["scheduled"] == 1


def test_cancel_retry_and_their_exit_codes(tmp_path):
    db = tmp_path / "c.db"
    with Queue(db) as q:
        tid = q.enqueue("x")
    assert "cancelled" in run("cancel", "--db", db, tid).output
    again = run("cancel", "--db", db, tid, ok=False)
    assert again.exit_code == EXIT_FAILED and "not cancelled: it is cancelled" in again.output
    assert json.loads(run("retry", "--db", db, tid, "--json").output) == {"id": tid, "requeued": True, "status": "queued"}
    missing = run("show", "--db", db, 999, ok=False)
    assert missing.exit_code == EXIT_NOT_FOUND and "task 999 does not exist" in missing.output


def test_invalid_values_exit_with_usage_code_and_write_nothing(tmp_path):
    db = tmp_path / "c.db"
    bad_json = run("enqueue", "--db", db, "x", "{nope", ok=False)
    assert bad_json.exit_code == EXIT_USAGE and "not valid JSON" in bad_json.output
    bad_prio = run("enqueue", "--db", db, "x", "--priority", 0, ok=False)
    assert bad_prio.exit_code == EXIT_USAGE
    bad_delay = run("enqueue", "--db", db, "x", "--delay", -1, ok=False)
    assert bad_delay.exit_code == EXIT_USAGE and "delay must be zero or positive" in bad_delay.output
    with Queue(db) as q:
        assert q.stats()["total"] == 0


def test_maintenance_commands(tmp_path):
    db = tmp_path / "c.db"
    with Queue(db) as q:
        for _ in range(3):
            q.enqueue("x")
        for t in q.claim("w", limit=3):
            q.complete(t)
    assert "busy=False" in run("checkpoint", "--db", db, "--mode", "truncate").output
    run("backup", "--db", db, tmp_path / "copy.db")
    with Queue(tmp_path / "copy.db") as copy:
        assert copy.stats()["completed"] == 3 and copy.integrity_check() == []
    run("vacuum", "--db", db)
    assert json.loads(run("purge", "--db", db, "--older-than", 0, "--json").output) == {"deleted": 3}


def test_workers_lists_heartbeats(tmp_path):
    db = tmp_path / "c.db"
    with Queue(db) as q:
        q.heartbeat("w-1", {"gpu": True})
    rows = json.loads(run("workers", "--db", db, "--json").output)
    assert rows[0]["id"] == "w-1" and rows[0]["capabilities"] == {"gpu": True} and rows[0]["stale"] is False


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def test_demo_runs_on_the_default_database_in_the_current_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "prismq_queue", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "prismq_queue.db").exists()
    with Queue(tmp_path / "prismq_queue.db") as q:
        s = q.stats()
    assert s["total"] == 24 and s["completed"] + s["failed"] == 24 and s["completed"] > 0
    assert f"completed  {s['completed']}" in proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM delivery is POSIX")
def test_worker_command_runs_handlers_and_drains_on_sigterm(tmp_path):
    db = tmp_path / "w.db"
    with Queue(db) as q:
        ids = [q.enqueue("echo", {"n": i}) for i in range(20)]
        slow = q.enqueue("slow_sync", {"seconds": 60}, queue="slow")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prismq_queue", "worker", "--db", str(db), "--handlers", "worker_handlers:REGISTRY",
         "--queues", "default,slow", "--concurrency", "3", "--worker-id", "cli-1", "--shutdown-grace", "0.5"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with Queue(db) as q:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                q.stats()["completed"] == 20 and q.get(slow).status == "running"
            ):
                time.sleep(0.05)
            assert all(q.get(i).status == "completed" for i in ids)
            assert q.get(slow).locked_by == "cli-1"
            assert [w.id for w in q.workers()] == ["cli-1"]
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            # The unfinished task was handed back without counting the attempt; the worker left.
            t = q.get(slow)
            assert (t.status, t.attempts) == ("queued", 0)
            assert q.workers() == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_worker_command_refuses_bad_settings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "prismq_queue", "worker", "--db", str(tmp_path / "x.db"), "--handlers",
         "worker_handlers:REGISTRY", "--strategy", "fifo"],
        env={**_env(), "PRISMQ_WORKER_CONCURRENCY": "zero"}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == EXIT_USAGE
    assert "worker setting 'concurrency' (from PRISMQ_WORKER_CONCURRENCY)" in proc.stderr
