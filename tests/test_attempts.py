"""Each attempt's error and traceback (issue 16 point 2): a worker process stores the handler's
traceback with every failed attempt, ``Queue.attempts`` lists them, ``Task.traceback`` is the
last one; sizes and counts are bounded; timeouts, lost leases and interrupted runs say what
happened; purge removes the records; files of the previous schema migrate."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
import traceback as tb_module

import pytest
from attempts_handlers import failing_line, registry
from conftest import cli_runner
from serve_helpers import wait_until
from worker_cli_helpers import WorkerCLI

from prismq_queue import (
    MAX_ATTEMPT_RECORDS,
    MAX_ERROR_BYTES,
    MAX_TRACEBACK_BYTES,
    SCHEMA_VERSION,
    InvalidArgument,
    Queue,
    QueuedTaskManager,
    Run,
    RunRegistry,
    TaskAttempt,
    TaskNotFound,
    Worker,
)
from prismq_queue.cli import main as cli

NO_WAIT = {"base": 0.0, "jitter": 0.0}
HANDLERS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "attempts_handlers.py")


def fail_with(q, exc_factory, **kw):
    """Claim the next task and fail it with a raised exception: its traceback is real."""
    [task] = q.claim("w1", **kw)
    try:
        exc_factory()
    except Exception as e:  # noqa: BLE001 - the failure under test
        return task, q.fail(task, e)
    raise AssertionError("the factory did not raise")


def raise_nested():
    def inner_step():
        raise KeyError("missing column")

    inner_step()


# ------------------------------------------------------------------ a real worker process
def test_a_worker_process_keeps_every_attempts_error_and_the_handlers_traceback(tmp_path):
    db = tmp_path / "w.db"
    with Queue(db) as q:
        tid = q.enqueue("invoice.nested", {"invoice": 1187}, max_attempts=3, retry=NO_WAIT)
    w = WorkerCLI("--db", db, "--handlers", "attempts_handlers:registry", "--worker-id", "tb-worker", "-q")
    try:
        with Queue(db) as q:
            wait_until(lambda: q.get(tid).status == "failed", what="the task dead-lettered after 3 attempts")
            attempts = q.attempts(tid)
            task = q.get(tid)
    finally:
        w.stop()
    # Three attempts, three records, each with its own error: not only the last.
    assert [(a.seq, a.number, a.max_attempts, a.outcome, a.worker) for a in attempts] == [
        (1, 1, 3, "failed", "tb-worker"),
        (2, 2, 3, "failed", "tb-worker"),
        (3, 3, 3, "failed", "tb-worker"),
    ]
    assert [a.error for a in attempts] == [
        f"ValueError: invoice 1187 has no customer (attempt {n})" for n in (1, 2, 3)
    ]
    for a in attempts:
        assert isinstance(a, TaskAttempt) and a.task_id == tid
        assert a.started_at is not None and a.started_at <= a.finished_at
        # The traceback names the inner function and its failing line, in the handler's file.
        assert f'File "{HANDLERS_FILE}", line {failing_line()}, in _parse_invoice' in a.traceback, a.traceback
        assert "in _load" in a.traceback and "in nested" in a.traceback
        assert a.traceback.startswith("Traceback (most recent call last):")
        assert a.traceback.rstrip().endswith(a.error)
        assert "worker.py" not in a.traceback  # the runtime's own frame says nothing
    # The task keeps its last error as before, and its last traceback.
    assert task.error == attempts[-1].error and task.traceback == attempts[-1].traceback
    assert task.as_dict()["traceback"] == task.traceback


def run_in_thread(q, **kw):
    worker = Worker(q, registry, poll_interval=0.05, **kw)
    runner = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    runner.start()
    return worker, runner


def test_a_timed_out_attempt_says_so_without_the_engines_traceback(queue):
    tid = queue.enqueue("invoice.slow", {}, timeout=0.2, max_attempts=1)
    worker, runner = run_in_thread(queue)
    try:
        wait_until(lambda: queue.get(tid).status == "failed", what="the attempt timing out")
    finally:
        worker.stop()
        runner.join(30)
    [a] = queue.attempts(tid)
    assert a.outcome == "failed" and a.error == "TimeoutError: attempt ran longer than its timeout of 0.2s"
    assert a.traceback is None and queue.get(tid).traceback is None


# ------------------------------------------------------------------ Queue.fail and its forms
def test_fail_takes_the_traceback_from_the_exception_and_keeps_chained_causes(queue):
    tid = queue.enqueue("x", max_attempts=2, retry=NO_WAIT)

    def chained():
        try:
            raise_nested()
        except KeyError as e:
            raise RuntimeError("could not load the sheet") from e

    _, next_at = fail_with(queue, chained)
    assert next_at is not None  # retried: a failure with attempts left also keeps its record
    [a] = queue.attempts(tid)
    assert a.error == "RuntimeError: could not load the sheet"
    assert "in inner_step" in a.traceback and "KeyError: 'missing column'" in a.traceback
    assert "The above exception was the direct cause" in a.traceback
    assert queue.get(tid).status == "queued" and queue.get(tid).traceback == a.traceback


def test_an_error_given_as_text_has_no_traceback_unless_one_is_given(queue):
    a_id = queue.enqueue("x", max_attempts=1)
    b_id = queue.enqueue("x", max_attempts=1)
    c_id = queue.enqueue("x", max_attempts=1)
    [a, b, c] = queue.claim("w", limit=3)
    queue.fail(a, "plain text")
    queue.fail(b, RuntimeError("never raised"))  # an exception object that was not raised
    assert queue.fail_many([(c, "from elsewhere", False, "Traceback (most recent call last):\n  remote\n")]) == [True]
    assert (queue.get(a_id).traceback, queue.attempts(a_id)[0].traceback) == (None, None)
    assert queue.attempts(b_id)[0].error == "RuntimeError: never raised" and queue.get(b_id).traceback is None
    assert queue.get(c_id).traceback == "Traceback (most recent call last):\n  remote\n"


def test_settle_stores_each_failures_traceback_with_its_own_attempt(queue):
    ids = [queue.enqueue("x", {"n": n}, max_attempts=1) for n in range(3)]
    tasks = queue.claim("w", limit=3)
    errors = []
    for n in range(2):
        try:
            raise ValueError(f"bad row {n}")
        except ValueError as e:
            errors.append(e)
    done, failed, _ = queue.settle([tasks[2]], [(tasks[0], errors[0]), (tasks[1], errors[1], True, "given text")])
    assert (done, failed) == ([True], [True, True])
    first, second = queue.attempts(ids[0]), queue.attempts(ids[1])
    assert "ValueError: bad row 0" in first[0].traceback and second[0].traceback == "given text"
    assert queue.attempts(ids[2]) == []  # a completion writes no attempt record


def test_a_bad_traceback_argument_is_refused_and_nothing_is_written(queue):
    tid = queue.enqueue("x")
    [t] = queue.claim("w")
    with pytest.raises(InvalidArgument, match="traceback must be a str or None"):
        queue.fail(t, "boom", traceback=123)
    with pytest.raises(InvalidArgument, match=r"\(task, error, retry, traceback\)"):
        queue.fail_many([(t, "boom", True, "tb", "extra")])
    assert queue.get(tid).status == "running" and queue.attempts(tid) == []


def test_text_that_is_not_valid_unicode_is_stored_with_replacement_characters(queue):
    # A traceback may hold file names decoded with surrogateescape: the failure is still recorded.
    ids = [queue.enqueue("x", max_attempts=1) for _ in range(2)]
    a, b = queue.claim("w", limit=2)
    queue.fail(a, "boom", traceback="File \"/srv/caf\udce9.py\", line 3\n")
    try:
        raise ValueError("bad byte \udcff")
    except ValueError as e:
        queue.fail(b, e)
    first, second = queue.attempts(ids[0])[0].traceback, queue.attempts(ids[1])[0].traceback
    assert first.startswith("File \"/srv/caf\ufffd") and first.endswith(".py\", line 3\n")
    assert "ValueError: bad byte \ufffd" in second
    first.encode(), second.encode()  # valid Unicode now


def test_attempts_of_an_unknown_task_is_task_not_found(queue):
    with pytest.raises(TaskNotFound):
        queue.attempts(12345)


# ------------------------------------------------------------------ bounds
def deep(n):
    # Chained exceptions, each with its own frames and message: well over the bound.
    try:
        if n == 0:
            raise KeyError("the root cause, at the very start")
        deep(n - 1)
    except Exception as e:
        raise RuntimeError(f"level {n}: " + "x" * 400) from e


def test_a_huge_traceback_is_cut_from_the_front_at_the_bound(queue):
    tid = queue.enqueue("x", max_attempts=1)
    [t] = queue.claim("w")
    try:
        deep(250)
    except RuntimeError as e:
        full = "".join(tb_module.format_exception(type(e), e, e.__traceback__))
        queue.fail(t, e)
    assert len(full.encode()) > 2 * MAX_TRACEBACK_BYTES
    [a] = queue.attempts(tid)
    assert len(a.traceback.encode()) <= MAX_TRACEBACK_BYTES
    note, rest = a.traceback.split("\n", 1)
    dropped = len(full.encode()) - len(rest.encode())
    assert note == f"[traceback cut: its first {dropped} bytes were dropped; the last {len(rest.encode())} are kept]"
    # The end is kept (where it failed: the outermost error), from the start of a line.
    assert full.endswith(rest) and full[: len(full) - len(rest)].endswith("\n")
    assert rest.rstrip().endswith("RuntimeError: level 250: " + "x" * 400)
    assert "the root cause" not in a.traceback
    assert queue.get(tid).traceback == a.traceback


def test_a_huge_error_keeps_its_beginning_in_the_task_and_the_attempt(queue):
    tid = queue.enqueue("x", max_attempts=1)
    [t] = queue.claim("w")
    queue.fail(t, "ValueError: the start " + "é" * MAX_ERROR_BYTES)
    [a] = queue.attempts(tid)
    assert len(a.error.encode()) <= MAX_ERROR_BYTES
    assert a.error.startswith("ValueError: the start éé") and a.error.endswith("more bytes not kept]")
    assert queue.get(tid).error == a.error


def test_retry_starts_the_count_over_and_a_task_keeps_its_latest_records(queue):
    tid = queue.enqueue("x", max_attempts=2, retry=NO_WAIT)
    for _ in range(2):
        fail_with(queue, raise_nested)
    assert queue.get(tid).status == "failed"
    assert queue.retry(tid)
    fail_with(queue, raise_nested)
    assert [(a.seq, a.number) for a in queue.attempts(tid)] == [(1, 1), (2, 2), (3, 1)]

    many = queue.enqueue("y", max_attempts=MAX_ATTEMPT_RECORDS + 10, retry=NO_WAIT)
    for n in range(MAX_ATTEMPT_RECORDS + 5):
        [t] = queue.claim("w", types=["y"])
        assert t.id == many
        queue.fail(t, f"failure {n + 1}")
    kept = queue.attempts(many)
    assert len(kept) == MAX_ATTEMPT_RECORDS == 25
    assert [a.seq for a in kept] == list(range(6, MAX_ATTEMPT_RECORDS + 6))
    assert kept[-1].error == f"failure {MAX_ATTEMPT_RECORDS + 5}" and kept[0].error == "failure 6"


# ------------------------------------------------------------------ lost leases, interrupted runs
def test_an_expired_lease_records_an_attempt_that_says_what_happened(db_path):
    with Queue(db_path) as q, Queue(db_path) as other:
        tid = q.enqueue("x", max_attempts=2)
        [held] = q.claim("crashed-worker", lease=0.05)
        wait_until(lambda: other.sweep() == 1, interval=0.02, what="the lease expiring and being rescued")
        [a] = other.attempts(tid)
        assert (a.outcome, a.number, a.max_attempts, a.worker, a.traceback) == ("lease_expired", 1, 2, "crashed-worker", None)
        assert a.error == "lease expired on attempt 1 of 2 (worker crashed-worker stopped renewing it): re-queued"
        assert a.started_at == held.started_at
        [again] = other.claim("w2", lease=0.05)
        wait_until(lambda: other.sweep() == 1, interval=0.02, what="the second lease expiring")
        attempts = other.attempts(tid)
        assert [x.outcome for x in attempts] == ["lease_expired", "lease_expired"]
        assert attempts[-1].error.endswith("(worker w2 stopped renewing it): dead letter")
        assert other.get(tid).status == "failed" and other.get(tid).error == attempts[-1].error


def test_an_interrupted_run_records_its_attempt(queue):
    t = queue.start_run("export-9", "catalog.export", {}, worker_id="app-1")
    [item] = queue.recover_runs(dead_holders=["app-1"])
    [a] = queue.attempts(t.id)
    assert (a.outcome, a.worker, a.error, a.traceback) == ("interrupted", "app-1", item["error"], None)
    assert a.error.startswith("interrupted:")
    # An app that starts a run again, taking it over from a dead process, ends that attempt too.
    again = queue.start_run("import-3", "catalog.import", {}, worker_id="app-2")
    queue.start_run("import-3", "catalog.import", {}, worker_id="app-3", takeover_from=["app-2"])
    [b] = queue.attempts(again.id)
    assert (b.outcome, b.worker, b.number) == ("interrupted", "app-2", 1)
    assert b.error.startswith('interrupted: run "import-3" was started again by app-3 (taken over from app-2')


async def test_a_failed_run_of_the_task_manager_keeps_its_traceback(db_path):
    q = Queue(db_path)
    mgr = QueuedTaskManager(q, RunRegistry(q))
    try:
        async def fetch_source():
            raise ConnectionError("source unreachable")

        async def job():
            await fetch_source()

        mgr.start_task(Run(run_id="sync-7", module_id="m"), job())
        await mgr.wait_all()
        row = q.find("sync-7")
        [a] = q.attempts(row.id)
        assert row.status == "failed" and a.error == "ConnectionError: source unreachable"
        assert "in fetch_source" in a.traceback and row.traceback == a.traceback
    finally:
        await mgr.close()
        q.close()


# ------------------------------------------------------------------ retention and migration
def test_purge_removes_a_tasks_attempts_with_it(db_path):
    with Queue(db_path) as q:
        gone = q.enqueue("x", max_attempts=1)
        retrying = q.enqueue("x", max_attempts=2, queue="other", retry={"base": 3600})
        fail_with(q, raise_nested, queues=["default"])
        fail_with(q, raise_nested, queues=["other"])
        assert len(q.attempts(gone)) == len(q.attempts(retrying)) == 1
        wait_until(lambda: q.purge(older_than=0, statuses=["failed"]) == 1, interval=0.01, what="the purge")
        with pytest.raises(TaskNotFound):
            q.attempts(gone)
        assert len(q.attempts(retrying)) == 1  # a task not purged keeps its records
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("SELECT task_id FROM task_attempts").fetchall() == [(retrying,)]
    finally:
        con.close()


def downgrade_to_v8(path):
    """The file as the previous release (schema 8) left it: no task_attempts table."""
    con = sqlite3.connect(path)
    try:
        con.execute("DROP TABLE task_attempts")
        con.execute("DROP TABLE schedules")  # schema 10's
        con.execute("PRAGMA user_version = 8")
        con.commit()
    finally:
        con.close()


def test_a_file_of_the_previous_schema_migrates_and_its_failures_show_their_last_error(db_path):
    assert SCHEMA_VERSION == 10
    with Queue(db_path) as q:
        old = q.enqueue("x", max_attempts=1)
        [t] = q.claim("w")
        q.fail(t, "RuntimeError: boom before the upgrade")
    downgrade_to_v8(db_path)
    with Queue(db_path) as q:
        task = q.get(old)
        assert (task.status, task.error, task.traceback) == ("failed", "RuntimeError: boom before the upgrade", None)
        assert q.attempts(old) == []  # nothing recorded then
        out = cli_runner().invoke(cli, ["show", "--db", db_path, str(old)])
        assert out.exit_code == 0, out.output
        assert "RuntimeError: boom before the upgrade" in out.output and "failed attempts" not in out.output
        # New failures of the migrated file are recorded.
        new = q.enqueue("x", max_attempts=1)
        fail_with(q, raise_nested)
        assert len(q.attempts(new)) == 1
    con = sqlite3.connect(db_path)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        con.close()


# ------------------------------------------------------------------ the CLI
def test_show_prints_each_attempts_error_and_the_last_traceback(db_path):
    with Queue(db_path) as q:
        tid = q.enqueue("x", max_attempts=2, retry=NO_WAIT)
        [t] = q.claim("w1")
        q.fail(t, "OSError: share offline")
        fail_with(q, raise_nested)
    out = cli_runner().invoke(cli, ["show", "--db", db_path, str(tid), "--no-logs"])
    assert out.exit_code == 0, out.output
    text = out.output
    assert "failed attempts (2):" in text
    assert "#1 attempt 1/2: failed" in text and "      OSError: share offline" in text
    assert "#2 attempt 2/2: failed" in text and "      KeyError: 'missing column'" in text
    after = text.split("traceback of the last failure (#2, attempt 2/2):", 1)[1]
    assert "in inner_step" in after and "KeyError: 'missing column'" in after

    out = cli_runner().invoke(cli, ["show", "--db", db_path, str(tid), "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert [a["error"] for a in d["failed_attempts"]] == ["OSError: share offline", "KeyError: 'missing column'"]
    assert d["failed_attempts"][0]["traceback"] is None and "in inner_step" in d["failed_attempts"][1]["traceback"]
    assert d["traceback"] == d["failed_attempts"][1]["traceback"] and d["attempts"] == 2


def test_show_of_a_lost_lease_says_there_is_no_traceback(db_path):
    with Queue(db_path) as q:
        tid = q.enqueue("x", max_attempts=1)
        q.claim("gone", lease=0.05)
        wait_until(lambda: q.sweep() == 1, interval=0.02, what="the lease expiring")
    out = cli_runner().invoke(cli, ["show", "--db", db_path, str(tid), "--no-logs"])
    assert out.exit_code == 0, out.output
    assert "#1 attempt 1/1: lease_expired" in out.output and "on gone" in out.output
    assert "no traceback for the last failure (#1: lease_expired)" in out.output


# ------------------------------------------------------------------ the web API
@pytest.fixture
def client(queue):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from prismq_queue import web

    with TestClient(web.create_app(queue, auth=web.Auth(tokens={"t": web.Token(scopes={"read"})}))) as c:
        c.headers["Authorization"] = "Bearer t"
        yield c


def test_the_task_endpoint_gives_every_failed_attempt_with_its_traceback(client, queue):
    tid = queue.enqueue("x", max_attempts=2, retry=NO_WAIT)
    [t] = queue.claim("w1")
    queue.fail(t, "OSError: share offline")
    fail_with(queue, raise_nested)
    body = client.get(f"/api/queue/tasks/{tid}").json()
    assert body["status"] == "failed" and body["error_message"] == "KeyError: 'missing column'"
    attempts = body["failed_attempts"]
    assert [(a["seq"], a["number"], a["outcome"], a["worker"], a["error"]) for a in attempts] == [
        (1, 1, "failed", "w1", "OSError: share offline"),
        (2, 2, "failed", "w1", "KeyError: 'missing column'"),
    ]
    assert attempts[0]["traceback"] is None and "in inner_step" in attempts[1]["traceback"]
    assert body["traceback"] == attempts[1]["traceback"]
    # The listing stays small: no attempts, no tracebacks.
    [listed] = client.get("/api/queue/tasks").json()
    assert "failed_attempts" not in listed and "traceback" not in listed
    # The dashboard's task detail (search) has them too.
    [match] = client.get(f"/api/queue/search?q={tid}").json()["matches"]
    assert [a["error"] for a in match["failed_attempts"]] == ["OSError: share offline", "KeyError: 'missing column'"]
    assert "in inner_step" in match["failed_attempts"][1]["traceback"]


def test_the_task_endpoint_of_a_task_that_never_failed_has_no_attempts(client, queue):
    tid = queue.enqueue("x")
    body = client.get(f"/api/queue/tasks/{tid}").json()
    assert body["failed_attempts"] == [] and body["traceback"] is None
    assert client.get("/api/queue/tasks/999").status_code == 404
