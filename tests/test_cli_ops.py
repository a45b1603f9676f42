"""The operator commands: backup, restore, vacuum, purge; their --json, progress and exit codes.
Restore's safety is checked with real processes: a process holding the database open, and one
killed with its last writes still in the WAL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import cli_runner, pragma, snapshot as _snapshot
from prismq_queue import SCHEMA_VERSION, Queue, TaskNotFound
from prismq_queue.cli import EXIT_FAILED, EXIT_USAGE, main
from serve_helpers import env


def cli(*args, code=0):
    result = cli_runner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def filled(db, n=30):
    """A queue with tasks in every state, logs, progress and a retry policy."""
    with Queue(db) as q:
        ids = q.enqueue_many([{"type": f"t{i % 3}", "payload": {"n": i}, "priority": 1 + i % 7} for i in range(n)])
        q.set_retry_policy("default", base=3)
        claimed = q.claim("w", limit=10)
        for t in claimed[:5]:
            q.complete(t, {"ok": t.id})
        q.progress(claimed[5], 40, step="half")
        q.fail(claimed[6], RuntimeError("boom"), retry=False)
        q.cancel(ids[-1])
        q.log(ids[0], "info", "hello", {"k": 1})
        return ids


def snapshot(q):
    """Every row and count of the queue (without the age of the oldest task, which moves on)."""
    stats, rows = _snapshot(q)
    stats.pop("oldest_queued_age_seconds")
    return stats, rows


def sidecars(db):
    return [p for p in (f"{db}-wal", f"{db}-shm", f"{db}-journal") if os.path.exists(p)]


def test_backup_and_restore_roundtrip_with_json(tmp_path):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db)
    with Queue(db) as q:
        before = snapshot(q)
    out = json.loads(cli("backup", "--db", db, bak, "--json").stdout)
    assert out["path"] == str(bak) and out["bytes"] == bak.stat().st_size > 0 and out["seconds"] >= 0
    assert sidecars(bak) == []  # one self-contained file

    with Queue(db) as q:  # life goes on after the backup
        q.enqueue("after-backup")
        q.cancel(1)
    out = json.loads(cli("restore", "--db", db, bak, "--json").stdout)
    assert out["target"] == str(db) and out["schema_version"] == SCHEMA_VERSION and out["created"] is False
    assert sidecars(db) == []
    with Queue(db) as q:
        assert snapshot(q) == before
        assert q.integrity_check() == []
        assert [e.message for e in q.logs(1)] == ["hello"]

    fresh = tmp_path / "sub" / "fresh.db"
    fresh.parent.mkdir()
    out = json.loads(cli("restore", "--db", fresh, bak, "--json").stdout)
    assert out["created"] is True
    with Queue(fresh) as q:
        assert snapshot(q) == before


def page_size(db):
    return pragma(db, "page_size")


def test_files_with_sqlite_default_page_size_keep_working_and_restore_across_sizes(tmp_path):
    """New files get 2 KiB pages (fewer WAL bytes per claim); a file made by earlier builds keeps
    its 4 KiB pages, works as before, and backups restore in either direction."""
    new, old, bak_old, bak_new = tmp_path / "new.db", tmp_path / "old.db", tmp_path / "old.bak", tmp_path / "new.bak"
    filled(new)
    filled(old)
    con = sqlite3.connect(old)  # what an earlier build made: SQLite's default page size
    con.execute("PRAGMA journal_mode = DELETE")
    con.execute("PRAGMA page_size = 4096")
    con.execute("VACUUM")
    con.execute("PRAGMA journal_mode = WAL")
    con.close()
    assert (page_size(new), page_size(old)) == (2048, 4096)
    with Queue(old) as q:
        before_old = snapshot(q)
        q.enqueue("more")
        [t] = q.claim("w", types=["more"])
        q.complete(t)
        assert q.integrity_check() == []
        before_old = snapshot(q)
    assert page_size(old) == 4096
    with Queue(new) as q:
        before_new = snapshot(q)

    cli("backup", "--db", old, bak_old)
    cli("backup", "--db", new, bak_new)
    cli("restore", "--db", new, bak_old)  # 4 KiB pages into a 2 KiB file
    cli("restore", "--db", old, bak_new)  # and back
    assert (page_size(new), page_size(old)) == (4096, 2048)
    for db, before in ((new, before_old), (old, before_new)):
        with Queue(db) as q:
            assert snapshot(q) == before
            assert q.integrity_check() == []


HOLD = """
import sys
from prismq_queue import Queue
q = Queue(sys.argv[1])
q.stats()
print("open", flush=True)
sys.stdin.read()
q.close()
"""


def test_restore_is_refused_while_another_process_has_the_database_open(tmp_path):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db)
    cli("backup", "--db", db, bak)
    with Queue(db) as q:
        q.enqueue("only-in-the-live-db")
        live = snapshot(q)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "open"
        r = cli("restore", "--db", db, bak, code=EXIT_FAILED)
        assert "is in use" in r.stderr and "stop them" in r.stderr and r.stdout == ""
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    with Queue(db) as q:
        assert snapshot(q) == live  # nothing changed
    cli("restore", "--db", db, bak)  # once nobody has it open
    with Queue(db) as q:
        assert q.find("only-in-the-live-db") is None and q.stats()["total"] == live[0]["total"] - 1


WRITE_AND_DIE = """
import os, sys
from prismq_queue import Queue
q = Queue(sys.argv[1])
q.enqueue("written-after-the-backup", idempotency_key="late")
print("written", flush=True)
os._exit(0)  # dies with its connections open: the write stays in the WAL, which is not cleaned up
"""


def test_restore_leaves_no_stale_wal_to_replay(tmp_path):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db)
    cli("backup", "--db", db, bak)
    with Queue(db) as q:
        backed_up = snapshot(q)
    p = subprocess.run([sys.executable, "-c", WRITE_AND_DIE, str(db)], capture_output=True, text=True, env=env(),
                       timeout=60)
    assert "written" in p.stdout, p.stderr
    assert os.path.exists(f"{db}-wal") and os.path.getsize(f"{db}-wal") > 0  # the late write is in the WAL

    cli("restore", "--db", db, bak)
    assert sidecars(db) == []
    for _ in range(2):  # and it does not come back on any later open
        with Queue(db) as q:
            assert q.find("late") is None
            assert snapshot(q) == backed_up


@pytest.mark.parametrize(
    "content, code, message",
    [
        (b"definitely not a database " * 40, EXIT_USAGE, "is not a prismq_queue backup"),
        ("other-sqlite", EXIT_USAGE, "without the queue's tables"),
        ("newer", EXIT_FAILED, "schema version"),
        (None, EXIT_USAGE, "does not exist"),
    ],
    ids=["not-sqlite", "other-sqlite", "newer-schema", "missing"],
)
def test_restore_checks_the_backup_first_and_changes_nothing(tmp_path, content, code, message):
    db, bak = tmp_path / "q.db", tmp_path / "bad.bak"
    filled(db)
    with Queue(db) as q:
        before = snapshot(q)
    if content == "other-sqlite":
        with sqlite3.connect(bak) as c:
            c.execute("CREATE TABLE notes (x)")
    elif content == "newer":
        cli("backup", "--db", db, bak)
        with sqlite3.connect(bak) as c:
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    elif content is not None:
        bak.write_bytes(content)
    r = cli("restore", "--db", db, bak, "--json", code=code)
    assert message in r.stderr and r.stdout == ""
    with Queue(db) as q:
        assert snapshot(q) == before
    # A target that does not exist is not created by a failed restore.
    cli("restore", "--db", tmp_path / "new.db", bak, code=code)
    assert not (tmp_path / "new.db").exists()


def test_restore_refuses_to_overwrite_a_file_that_is_not_a_queue(tmp_path):
    db, bak, notes = tmp_path / "q.db", tmp_path / "q.bak", tmp_path / "notes.txt"
    filled(db)
    cli("backup", "--db", db, bak)
    notes.write_text("my precious notes " * 100)
    r = cli("restore", "--db", notes, bak, code=EXIT_USAGE)
    assert "is not a SQLite database: refusing to overwrite it" in r.stderr
    assert notes.read_text() == "my precious notes " * 100
    assert cli("restore", "--db", bak, bak, code=EXIT_USAGE).stderr.count("same file") == 1


def test_backup_refuses_an_existing_destination_unless_forced(tmp_path):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db)
    cli("backup", "--db", db, bak)
    first = bak.read_bytes()
    with Queue(db) as q:
        q.enqueue("newer")
    r = cli("backup", "--db", db, bak, code=EXIT_USAGE)
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert bak.read_bytes() == first
    cli("backup", "--db", db, bak, "--force")
    with Queue(bak) as q:
        assert q.stats()["total"] == 31
    missing = cli("backup", "--db", tmp_path / "nope.db", tmp_path / "x.bak", code=EXIT_USAGE)
    assert "does not exist" in missing.stderr
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "x.bak").exists()


def test_progress_goes_to_stderr_only_when_asked_and_never_into_json(tmp_path):
    db = tmp_path / "q.db"
    with Queue(db) as q:
        q.enqueue_many([{"type": "t", "payload": "x" * 4000} for _ in range(2000)])  # ~2000 pages: several steps
    shown = cli("backup", "--db", db, tmp_path / "a.bak", "--json", "--progress")
    report = json.loads(shown.stdout)  # stdout is the JSON and nothing else
    lines = [line for line in shown.stderr.splitlines() if line.startswith("backup: ")]
    assert lines and lines[-1].endswith("pages (100%)") and f"/{report['pages']} pages" in lines[-1]
    quiet = cli("backup", "--db", db, tmp_path / "b.bak", "--json")  # not a terminal: no progress
    assert quiet.stderr == "" and json.loads(quiet.stdout)["pages"] == report["pages"]

    restored = cli("restore", "--db", tmp_path / "c.db", tmp_path / "a.bak", "--json", "--progress")
    assert json.loads(restored.stdout)["pages"] == report["pages"]
    assert "restore: " in restored.stderr and "(100%)" in restored.stderr

    vac = cli("vacuum", "--db", db, "--json", "--progress")
    assert set(json.loads(vac.stdout)) == {"path", "bytes_before", "bytes", "seconds"}
    assert "vacuum: running" in vac.stderr


def test_purge_in_batches_deletes_exactly_the_old_finished_tasks(tmp_path):
    db = tmp_path / "q.db"
    with Queue(db) as q:
        def finish(kind, n):
            ids = q.enqueue_many([{"type": kind, "payload": i} for i in range(n)])
            tasks = {t.id: t for t in q.claim("w", types=[kind], limit=n)}
            for i in ids:
                if kind == "done":
                    q.complete(tasks[i])
                elif kind == "dead":
                    q.fail(tasks[i], "x", retry=False)
                else:
                    q.cancel(i)
            return ids

        old_done, old_dead, old_cancelled = finish("done", 10), finish("dead", 3), finish("cancelled", 2)
        for i in old_done:
            q.log(i, "info", "a log line that goes with its task")
        time.sleep(2.0)  # everything above is now over 1.5 s old; what follows is not
        new_done = finish("done", 4)
        running = q.enqueue("working")
        q.claim("w", types=["working"])
        waiting = q.enqueue("waiting")

    r = cli("purge", "--db", db, "--older-than", "1.5s", "--status", "completed", "--status", "cancelled",
            "--batch-size", 3, "--json", "--progress")
    assert json.loads(r.stdout) == {"deleted": 12}
    progress = [line for line in r.stderr.splitlines() if line.startswith("purge: ")]
    assert progress[0] == "purge: 0/12 tasks (0%)" and progress[-1] == "purge: 12/12 tasks (100%)"
    with Queue(db) as q:
        left = {t.id for t in q.list(limit=1000)}
        assert left == set(old_dead) | set(new_done) | {running, waiting}
        for i in old_done + old_cancelled:
            with pytest.raises(TaskNotFound):
                q.logs(i)
    assert cli("purge", "--db", db, "--older-than", "1.5s", "--status", "completed").stdout == "deleted 0 tasks\n"
    bad = cli("purge", "--db", db, "--older-than", "soon", code=EXIT_USAGE)
    assert "'soon' is not a duration" in bad.output


def test_vacuum_shrinks_the_file_after_a_purge(tmp_path):
    db = tmp_path / "q.db"
    with Queue(db) as q:
        q.enqueue_many([{"type": "t", "payload": "x" * 2000} for _ in range(3000)])
        for t in q.claim("w", limit=3000):
            q.complete(t)
    time.sleep(0.01)
    assert json.loads(cli("purge", "--db", db, "--older-than", 0, "--json").stdout) == {"deleted": 3000}
    out = json.loads(cli("vacuum", "--db", db, "--json").stdout)
    assert out["bytes"] < out["bytes_before"] and out["bytes"] == os.path.getsize(db)
    human = cli("vacuum", "--db", db).stdout
    assert human.startswith(f"vacuumed {db}: ")
