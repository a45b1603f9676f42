"""import-legacy: the older Python queue's SQLite file into a prismq_queue, through the public API and the CLI.

The old files are built here with Python's sqlite3 module, in the older queue's format.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import cli_runner, snapshot
from prismq_queue import InvalidArgument, Queue
from prismq_queue.cli import EXIT_FAILED, EXIT_USAGE, main

UTC = timezone.utc

LEGACY_SCHEMA = """
CREATE TABLE task_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 100,
    payload TEXT,
    compatibility TEXT,
    status TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    run_after_utc TEXT,
    lease_until_utc TEXT,
    reserved_at_utc TEXT,
    processing_started_utc TEXT,
    finished_at_utc TEXT,
    locked_by TEXT,
    error_message TEXT,
    idempotency_key TEXT UNIQUE,
    created_at_utc TEXT,
    updated_at_utc TEXT
);
CREATE TABLE workers (worker_id TEXT PRIMARY KEY, capabilities TEXT, heartbeat_utc TEXT);
CREATE TABLE task_logs (
    log_id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER,
    at_utc TEXT,
    level TEXT,
    message TEXT,
    details TEXT
);
"""

COLUMNS = [
    "id", "type", "priority", "payload", "compatibility", "status", "attempts", "max_attempts", "run_after_utc",
    "lease_until_utc", "reserved_at_utc", "processing_started_utc", "finished_at_utc", "locked_by", "error_message",
    "idempotency_key", "created_at_utc", "updated_at_utc",
]


def make_legacy(path: Path, tasks=(), logs=(), workers=(), wal: bool = False) -> Path:
    """An old-format file: `tasks` are dicts of task_queue columns, `logs` (task_id, at, level, message, details)."""
    c = sqlite3.connect(path)
    if wal:
        c.execute("PRAGMA journal_mode = WAL")
    c.executescript(LEGACY_SCHEMA)
    for t in tasks:
        cols = list(t)
        c.execute(f"INSERT INTO task_queue ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                  [t[k] for k in cols])
    c.executemany("INSERT INTO task_logs (task_id, at_utc, level, message, details) VALUES (?, ?, ?, ?, ?)", logs)
    c.executemany("INSERT INTO workers VALUES (?, ?, ?)", workers)
    c.commit()
    c.close()
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def by_legacy_n(q: Queue) -> dict:
    """Imported tasks keyed by the `n` their payload carries (every legacy row here has one)."""
    return {t.payload["n"]: t for t in q.list(limit=10_000) if isinstance(t.payload, dict) and "n" in t.payload}


def contents(q: Queue):
    """conftest.snapshot without the age of the oldest task, which grows while the test runs."""
    stats, rows = snapshot(q)
    stats.pop("oldest_queued_age_seconds", None)
    return stats, rows


def cli(*args, ok: bool = True):
    result = cli_runner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


# Every legacy status, both time formats, keys, compatibility, an out-of-range priority, a bad row.
ROWS = [
    dict(id=1, type="email.send", priority=5, payload='{"n": 1, "to": "a@example.com"}', compatibility="{}",
         status="queued", attempts=0, max_attempts=3, run_after_utc="2031-05-06 07:08:09",
         idempotency_key="welcome-a", created_at_utc="2024-01-02 03:04:05", updated_at_utc="2024-01-02 03:04:06"),
    dict(id=2, type="render", priority=2000, payload='{"n": 2, "scene": 7}', compatibility='{"gpu": true}',
         status="leased", attempts=1, max_attempts=4, run_after_utc="2024-01-02T03:00:00+00:00",
         lease_until_utc="2024-01-02T03:10:00+00:00", reserved_at_utc="2024-01-02T03:05:00Z", locked_by="old-gpu-1",
         created_at_utc="2024-01-02T03:00:00+00:00", updated_at_utc="2024-01-02T03:05:00.250+00:00"),
    dict(id=3, type="render", priority=0, payload='{"n": 3}', compatibility=None, status="processing", attempts=2,
         max_attempts=5, reserved_at_utc="2024-01-02 04:00:00", processing_started_utc="2024-01-02 04:00:01",
         lease_until_utc="2024-01-02 04:10:00", locked_by="old-cpu-1", created_at_utc="2024-01-02 03:59:00",
         updated_at_utc="2024-01-02 04:00:01"),
    dict(id=4, type="email.send", priority=100, payload='{"n": 4}', compatibility="null", status="completed",
         attempts=1, max_attempts=3, processing_started_utc="2024-01-02 03:04:05",
         finished_at_utc="2024-01-02T05:04:09.500+02:00", locked_by="old-cpu-1", idempotency_key="receipt-4",
         created_at_utc="2024-01-02 03:00:00", updated_at_utc="2024-01-02 03:04:09"),
    dict(id=5, type="email.send", priority=100, payload='{"n": 5}', status="failed", attempts=3, max_attempts=3,
         finished_at_utc="2024-01-02 05:00:00", locked_by="old-cpu-1", error_message="SMTPError: 550",
         created_at_utc="2024-01-02 03:00:00", updated_at_utc="2024-01-02 05:00:00"),
    dict(id=6, type="report", priority=300, payload='{"n": 6}', status="dead_letter", attempts=3, max_attempts=3,
         error_message="gave up", created_at_utc="2024-01-02 03:00:00", updated_at_utc="2024-01-02 06:00:00"),
    dict(id=7, type="report", priority=1, payload='{"n": 7, broken', status="queued",
         created_at_utc="2024-01-02 03:00:00"),
    dict(id=8, type="report", priority=1, payload='{"n": 8}', status="queued", created_at_utc="last tuesday"),
]
LOGS = [
    (4, "2024-01-02 03:04:05", "INFO", "sending", '{"attempt": 1}'),
    (4, "2024-01-02T03:04:09Z", "Warn", "slow server", "not json"),
    (4, "2024-01-02 03:04:09", "CRITICAL", "done anyway", None),
    (5, "2024-01-02 05:00:00", "error", "SMTPError: 550", None),
    (7, "2024-01-02 03:00:00", "info", "log of the bad row", None),
    (99, "2024-01-02 03:00:00", "info", "a line whose task is gone", None),
]
WORKERS = [("old-gpu-1", '{"gpu": true}', "2024-01-02 03:05:00"), ("old-cpu-1", "{}", "2024-01-02 04:00:01")]


@pytest.fixture
def old_db(tmp_path):
    return make_legacy(tmp_path / "old.db", ROWS, LOGS, WORKERS)


def test_every_status_and_field_is_imported(old_db, tmp_path):
    before = datetime.now(UTC)
    with Queue(tmp_path / "new.db") as q:
        report = q.import_legacy(old_db)
        t = by_legacy_n(q)
        assert sorted(t) == [1, 2, 3, 4, 5, 6]

        assert report["source"] == str(old_db.resolve())
        assert (report["total"], report["imported"], report["skipped_invalid"]) == (8, 6, 2)
        assert report["by_status"] == {"queued": 3, "completed": 1, "failed": 2}
        assert report["by_legacy_status"] == {"queued": 1, "leased": 1, "processing": 1, "completed": 1,
                                              "failed": 1, "dead_letter": 1}
        assert (report["requeued_from_lease"], report["priority_clamped"]) == (2, 2)
        assert (report["logs_imported"], report["logs_orphaned"]) == (4, 1)
        assert any("from 0 to 2000" in n for n in report["notes"]), report["notes"]
        workers = {w["worker_id"]: w["capabilities"] for w in report["legacy_workers"]}
        assert workers == {"old-gpu-1": '{"gpu": true}', "old-cpu-1": "{}"}, "listed, not imported"
        assert q.workers() == []
        assert report["problem_count"] == 2
        problems = {p["legacy_id"]: p for p in report["problems"]}
        assert problems[7]["column"] == "payload" and "not valid JSON" in problems[7]["reason"]
        assert problems[7]["action"] == "skipped" and problems[7]["value"] == '{"n": 7, broken'
        assert problems[8]["column"] == "created_at_utc" and problems[8]["value"] == "last tuesday"

        queued = t[1]
        assert (queued.type, queued.queue, queued.status, queued.priority) == ("email.send", "default", "queued", 5)
        assert queued.payload == {"n": 1, "to": "a@example.com"}
        assert (queued.attempts, queued.max_attempts, queued.requires) == (0, 3, None)
        assert queued.idempotency_key == "welcome-a" and q.find("welcome-a").id == queued.id
        assert queued.run_after == at(2031, 5, 6, 7, 8, 9)
        assert (queued.created_at, queued.updated_at) == (at(2024, 1, 2, 3, 4, 5), at(2024, 1, 2, 3, 4, 6))
        assert (queued.started_at, queued.finished_at, queued.locked_by, queued.error) == (None, None, None, None)

        leased = t[2]
        assert (leased.status, leased.priority, leased.attempts, leased.max_attempts) == ("queued", 1000, 1, 4)
        assert (leased.requires, leased.locked_by, leased.lease_until) == ({"gpu": True}, None, None)
        assert leased.run_after == at(2024, 1, 2, 3) and leased.run_after <= before, "claimable at once"
        assert leased.started_at == at(2024, 1, 2, 3, 5)
        assert leased.updated_at == at(2024, 1, 2, 3, 5, 0) + timedelta(milliseconds=250)
        lines = q.logs(leased.id)
        lease_line = next(line for line in lines if line.message.startswith("imported from a lease"))
        assert "old-gpu-1" in lease_line.message and lease_line.level == "info"
        assert lease_line.details["lease_until_utc"] == "2024-01-02T03:10:00+00:00"
        assert any(line.level == "warning" and "priority 2000" in line.message for line in lines)

        processing = t[3]
        assert (processing.status, processing.priority, processing.attempts) == ("queued", 1, 2)
        assert processing.started_at == at(2024, 1, 2, 4, 0, 1)
        assert any("old-cpu-1" in line.message for line in q.logs(processing.id))

        done = t[4]
        assert (done.status, done.locked_by, done.idempotency_key, done.requires) == (
            "completed", "old-cpu-1", "receipt-4", None)
        assert done.finished_at == at(2024, 1, 2, 3, 4, 9) + timedelta(milliseconds=500)
        assert done.started_at == at(2024, 1, 2, 3, 4, 5)
        assert [(line.level, line.message, line.details) for line in q.logs(done.id)] == [
            ("info", "sending", {"attempt": 1}),
            ("warning", "slow server", "not json"),
            ("critical", "done anyway", None),
        ]
        assert [line.at for line in q.logs(done.id)] == [at(2024, 1, 2, 3, 4, 5), at(2024, 1, 2, 3, 4, 9),
                                                        at(2024, 1, 2, 3, 4, 9)]

        failed = t[5]
        assert (failed.status, failed.error, failed.attempts) == ("failed", "SMTPError: 550", 3)
        assert failed.finished_at == at(2024, 1, 2, 5)
        assert [line.level for line in q.logs(failed.id)] == ["error"]

        dead = t[6]
        assert (dead.status, dead.error, dead.priority) == ("failed", "gave up", 300)
        assert dead.finished_at == at(2024, 1, 2, 6), "no finished time: the last update is used"
        assert q.retry(dead.id) and q.get(dead.id).status == "queued", "an imported dead letter can be retried"

        assert q.stats()["total"] == 6


def test_running_twice_imports_nothing_twice_and_the_source_is_unchanged(old_db, tmp_path):
    digest = sha(old_db)
    new = tmp_path / "new.db"
    with Queue(new) as q:
        first = q.import_legacy(old_db)
        state = contents(q)
        logs = {t.id: [(line.message, line.at) for line in q.logs(t.id)] for t in q.list()}
        again = q.import_legacy(str(old_db))
        assert (again["imported"], again["skipped_already_imported"], again["logs_imported"]) == (0, 6, 0)
        assert again["mapped_to_existing"] == 0
        assert again["skipped_invalid"] == 2, "the bad rows are reported again until they are fixed"
        assert contents(q) == state
        assert {t.id: [(line.message, line.at) for line in q.logs(t.id)] for t in q.list()} == logs
    # Through another path to the same file, and through the CLI: still nothing new.
    out = cli("import-legacy", tmp_path / ".." / tmp_path.name / "old.db", "--db", new, "--json", ok=False)
    assert out.exit_code == EXIT_FAILED
    assert json.loads(out.stdout)["skipped_already_imported"] == first["imported"]
    with Queue(new) as q:
        assert q.stats()["total"] == 6
    assert sha(old_db) == digest
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("old.db")) == ["old.db"]


def test_fixed_rows_are_imported_by_the_next_run(old_db, tmp_path):
    with Queue(tmp_path / "new.db") as q:
        q.import_legacy(old_db)
        c = sqlite3.connect(old_db)
        c.execute("""UPDATE task_queue SET payload = '{"n": 7}' WHERE id = 7""")
        c.execute("UPDATE task_queue SET created_at_utc = '2024-01-09 10:00:00' WHERE id = 8")
        c.commit()
        c.close()
        report = q.import_legacy(old_db)
        assert (report["imported"], report["skipped_already_imported"], report["skipped_invalid"]) == (2, 6, 0)
        assert report["logs_imported"] == 1 and report["problems"] == []
        t = by_legacy_n(q)
        assert [line.message for line in q.logs(t[7].id)] == ["log of the bad row"]
        assert t[8].created_at == at(2024, 1, 9, 10)


def test_imported_tasks_are_claimable_and_routed_by_compatibility(old_db, tmp_path):
    with Queue(tmp_path / "new.db") as q:
        q.import_legacy(old_db)
        t = by_legacy_n(q)
        # The CPU worker gets the re-queued processing task; the future task and the GPU task are not its.
        assert [x.id for x in q.claim("cpu", limit=10)] == [t[3].id]
        assert q.claim("cpu-again", limit=10) == []
        [gpu] = q.claim("gpu", capabilities={"gpu": True}, limit=10)
        assert gpu.id == t[2].id and gpu.attempts == 2 and gpu.status == "running"
        q.complete(gpu, {"ok": True})
        assert q.get(t[2].id).result == {"ok": True}


def test_an_idempotency_key_already_in_the_new_queue_maps_to_that_task(old_db, tmp_path):
    with Queue(tmp_path / "new.db") as q:
        existing = q.enqueue("email.send", {"enqueued": "by the new app"}, idempotency_key="receipt-4")
        report = q.import_legacy(old_db)
        assert (report["imported"], report["mapped_to_existing"]) == (5, 1)
        task = q.get(existing)
        assert task.payload == {"enqueued": "by the new app"} and task.status == "queued", "not overwritten"
        messages = [line.message for line in q.logs(existing)]
        assert messages[:3] == ["sending", "slow server", "done anyway"]
        assert "idempotency key" in messages[3] and "task 4" in messages[3]
        assert len(q.list(limit=100)) == 6
        assert q.import_legacy(old_db)["mapped_to_existing"] == 0


def test_a_file_that_is_not_a_legacy_database_is_refused_and_nothing_is_written(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a database, just some text that is long enough to have a header\n" * 3)
    foreign = tmp_path / "foreign.db"
    c = sqlite3.connect(foreign)
    c.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT)")
    c.commit()
    c.close()
    partial = tmp_path / "partial.db"
    c = sqlite3.connect(partial)
    c.execute("CREATE TABLE task_queue (id INTEGER PRIMARY KEY, type TEXT, priority INTEGER)")
    c.commit()
    c.close()
    digests = {p: sha(p) for p in (text, foreign, partial)}

    with Queue(tmp_path / "new.db") as q:
        q.enqueue("keep", {"n": 0})
        state = contents(q)
        with pytest.raises(InvalidArgument, match="is not a SQLite database") as e:
            q.import_legacy(text)
        assert "task_queue(id, type, priority, payload" in str(e.value), "says what it expects"
        with pytest.raises(InvalidArgument, match=r"has no table task_queue \(it has the tables jobs\)"):
            q.import_legacy(foreign)
        with pytest.raises(InvalidArgument, match="lacks the columns payload, status"):
            q.import_legacy(partial)
        with pytest.raises(InvalidArgument, match="does not exist"):
            q.import_legacy(tmp_path / "missing.db")
        with pytest.raises(InvalidArgument, match="own file"):
            q.import_legacy(tmp_path / "new.db")
        assert contents(q) == state
    assert {p: sha(p) for p in digests} == digests

    for bad, message in [(text, "is not a SQLite database"), (foreign, "has no table task_queue")]:
        out = cli("import-legacy", bad, "--db", tmp_path / "never.db", ok=False)
        assert out.exit_code == EXIT_USAGE and message in out.output and "import-legacy expects" in out.output
    assert not any(p.name.startswith("never.db") for p in tmp_path.iterdir()), "the new queue file is not created"
    assert not (tmp_path / "missing.db").exists()


def test_progress_is_reported_and_a_stopped_import_resumes(tmp_path):
    rows = [dict(id=i, type="t", payload=json.dumps({"n": i}), status="queued",
                 created_at_utc="2024-01-02 03:04:05") for i in range(1, 26)]
    logs = [(i, "2024-01-02 03:04:05", "info", f"line {i}", None) for i in range(1, 26)]
    old = make_legacy(tmp_path / "old.db", rows, logs)
    with Queue(tmp_path / "new.db") as q:
        seen = []

        def stop_after_first_batch(done, total):
            seen.append((done, total))
            if done >= 10:
                raise KeyboardInterrupt("operator pressed Ctrl-C")

        with pytest.raises(KeyboardInterrupt, match="Ctrl-C"):
            q.import_legacy(old, progress=stop_after_first_batch, batch_size=10)
        assert seen == [(0, 25), (10, 25)]
        assert q.stats()["total"] == 10, "the committed batch stays, whole"
        calls = []
        report = q.import_legacy(old, progress=lambda d, t: calls.append((d, t)), batch_size=10)
        assert calls == [(0, 25), (10, 25), (20, 25), (25, 25)]
        assert (report["imported"], report["skipped_already_imported"], report["logs_imported"]) == (15, 10, 15)
        t = by_legacy_n(q)
        assert sorted(t) == list(range(1, 26))
        assert all([line.message for line in q.logs(t[n].id)] == [f"line {n}"] for n in t)
        with pytest.raises(InvalidArgument, match="batch_size"):
            q.import_legacy(old, batch_size=0)


def test_cli_prints_a_summary_and_lists_problems(old_db, tmp_path):
    new = tmp_path / "new.db"
    out = cli("import-legacy", old_db, "--db", new, ok=False)
    assert out.exit_code == EXIT_FAILED, "some rows could not be imported"
    text = out.output
    assert f"imported 6 of 8 tasks from {old_db.resolve()} into {new}" in text
    assert "by status: completed 1, failed 2, queued 3" in text
    assert "logs imported: 4" in text
    assert "task 7, payload" in text and "task 8, created_at_utc (value 'last tuesday'): not a time" in text
    assert "2 rows of" in out.stderr and "run import-legacy again" in out.stderr
    assert "clamped" in text and "old-gpu-1: {\"gpu\": true}" in text  # priority note, old workers

    clean = make_legacy(tmp_path / "clean.db", [dict(id=1, type="a", payload='{"n": 1}', status="queued")])
    out = cli("import-legacy", clean, "--db", tmp_path / "clean-new.db", "--json")
    report = json.loads(out.stdout)
    assert report["imported"] == 1 and report["problems"] == [] and report["by_status"] == {"queued": 1}
    same = cli("import-legacy", clean, "--db", clean, ok=False)
    assert same.exit_code == EXIT_USAGE and "is OLD.db itself" in same.output


def test_a_wal_mode_source_is_read_without_changing_it(tmp_path):
    old = make_legacy(tmp_path / "old.db", [dict(id=1, type="a", payload='{"n": 1}', status="leased")], wal=True)
    digest = sha(old)
    with Queue(tmp_path / "new.db") as q:
        assert q.import_legacy(old)["imported"] == 1
        assert q.claim("w")[0].payload == {"n": 1}
    assert sha(old) == digest


def test_inspect_legacy_counts_without_writing(old_db, tmp_path):
    info = Queue.inspect_legacy(old_db)
    assert info["tasks"] == 8 and info["logs"] == 6 and info["workers"] == 2
    assert info["by_status"]["queued"] == 3 and info["by_status"]["dead_letter"] == 1
    assert info["missing_columns"] == [] and info["source"] == str(old_db.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def test_a_20000_row_import_finishes(tmp_path):
    statuses = ["queued", "leased", "processing", "completed", "failed", "dead_letter"]
    old = tmp_path / "big.db"
    c = sqlite3.connect(old)
    c.executescript(LEGACY_SCHEMA)
    c.executemany(
        "INSERT INTO task_queue (id, type, priority, payload, compatibility, status, attempts, max_attempts, "
        "idempotency_key, created_at_utc, updated_at_utc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(i, f"type.{i % 7}", i % 1200, json.dumps({"n": i}), '{"gpu": true}' if i % 10 == 0 else None,
          statuses[i % 6], i % 3, 3, f"key-{i}" if i % 2 else None,
          f"2024-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00",
          f"2024-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:30+00:00")
         for i in range(1, 20_001)],
    )
    c.executemany("INSERT INTO task_logs (task_id, at_utc, level, message) VALUES (?, ?, ?, ?)",
                  [(i, "2024-01-01 00:00:00", "info", "created") for i in range(1, 20_001, 4)])
    c.commit()
    c.close()
    new = tmp_path / "new.db"
    report = json.loads(cli("import-legacy", old, "--db", new, "--json").stdout)
    assert (report["total"], report["imported"], report["skipped_invalid"]) == (20_000, 20_000, 0)
    assert report["logs_imported"] == 5000
    with Queue(new) as q:
        s = q.stats()
        assert s["total"] == 20_000
        legacy = [statuses[i % 6] for i in range(1, 20_001)]
        assert s["queued"] == sum(x in ("queued", "leased", "processing") for x in legacy)
        assert s["completed"] == legacy.count("completed")
        assert s["failed"] == sum(x in ("failed", "dead_letter") for x in legacy)
        assert q.find("key-19999").payload == {"n": 19999}
    again = json.loads(cli("import-legacy", old, "--db", new, "--json").stdout)
    assert (again["imported"], again["skipped_already_imported"]) == (0, 20_000)
