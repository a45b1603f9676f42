"""``prismq-queue worker`` as a newcomer meets it: handlers imported from the current directory
(worker and serve), one-line import errors that say where Python looked or which file and line
failed, and what the worker prints: a banner, a line per failed task, a stop line; -q and -v."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from prismq_queue import Queue
from prismq_queue.cli import EXIT_USAGE
from serve_helpers import CTRL_BREAK_UNDER_WINE, Lines, URL, wait_until
from worker_cli_helpers import WorkerCLI, console_script

TOUR = '''
from prismq_queue import TaskHandlerRegistry

registry = TaskHandlerRegistry()


@registry.handler("email.send")
def send(ctx):
    return {"sent_to": ctx.payload["to"]}
'''


BROKEN = TOUR.replace("def send(ctx):", "def send(ctx:")


def plain_env():
    """The environment of a user's shell: nothing on PYTHONPATH, no prismq settings."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PRISMQ_DB", "PRISMQ_TOKEN") and not k.startswith("PRISMQ_WORKER_")}


def tour(tmp_path, source=TOUR):
    """The tour's layout: ``app/tasks.py`` (no ``__init__.py``) in the folder the user is in."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "tasks.py").write_text(source, encoding="utf-8")
    return tmp_path


def run_cli(cwd, *args, timeout=120):
    return subprocess.run([*console_script(), *map(str, args)], cwd=cwd, env=plain_env(), capture_output=True,
                          text=True, timeout=timeout)


@CTRL_BREAK_UNDER_WINE
def test_worker_imports_handlers_from_the_current_directory(tmp_path):
    cwd = tour(tmp_path)
    with Queue(cwd / "app.db") as q:
        tid = q.enqueue("email.send", {"to": "ada@example.com"})
    w = WorkerCLI("--db", "app.db", "--handlers", "app.tasks:registry", cwd=cwd, command=console_script(),
                  environ=plain_env())
    try:
        with Queue(cwd / "app.db") as q:
            wait_until(lambda: q.get(tid).status == "completed" or not w.alive(), what="the task ran")
            assert q.get(tid).result == {"sent_to": "ada@example.com"}, w.output()
        w.interrupt()
        assert w.wait() == 0, w.output()
    finally:
        w.close()


@CTRL_BREAK_UNDER_WINE
def test_serve_imports_handlers_from_the_current_directory(tmp_path):
    pytest.importorskip("uvicorn")
    cwd = tour(tmp_path)
    with Queue(cwd / "app.db") as q:
        tid = q.enqueue("email.send", {"to": "ada@example.com"})
    kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32" else {}
    proc = subprocess.Popen([*console_script(), "serve", "--db", "app.db", "--handlers", "app.tasks:registry",
                             "--port", "0", "--workers", "1"], cwd=cwd, env=plain_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        out.wait_for(URL.pattern, 90)
        with Queue(cwd / "app.db") as q:
            wait_until(lambda: q.get(tid).status == "completed", what="serve's worker ran the task")
            assert q.get(tid).result == {"sent_to": "ada@example.com"}
        proc.send_signal(signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGINT)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        out.join()
        err.join()


def test_a_missing_module_says_where_python_looked(tmp_path):
    p = run_cli(tmp_path, "worker", "--db", "x.db", "--handlers", "nothere.tasks:registry")
    assert p.returncode == EXIT_USAGE
    [line] = p.stderr.splitlines()
    assert line.startswith("error: handlers: cannot import module 'nothere.tasks': No module named 'nothere'")
    assert f"looked in {os.path.realpath(tmp_path)} (the current directory)" in line
    assert "from the folder that holds 'nothere'" in line
    assert not (tmp_path / "x.db").exists()  # nothing created


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_syntax_error_in_the_handlers_is_one_line_with_file_and_line(tmp_path, command):
    cwd = tour(tmp_path, BROKEN)
    p = run_cli(cwd, command, "--db", "app.db", "--handlers", "app.tasks:registry")
    assert p.returncode == EXIT_USAGE, p.stderr
    [line] = p.stderr.splitlines()
    where = os.path.join("app", "tasks.py")
    lineno = BROKEN.splitlines().index("def send(ctx:") + 1
    assert re.fullmatch(rf"error: handlers: cannot import module 'app\.tasks': SyntaxError in {re.escape(where)}, "
                        rf"line {lineno}: .+", line), line
    assert not (cwd / "app.db").exists()


def test_a_syntax_error_with_v_shows_the_traceback(tmp_path):
    cwd = tour(tmp_path, BROKEN)
    p = run_cli(cwd, "worker", "-v", "--db", "app.db", "--handlers", "app.tasks:registry")
    assert p.returncode == EXIT_USAGE
    assert "Traceback (most recent call last)" in p.stderr and "def send(ctx:" in p.stderr
    assert p.stderr.splitlines()[-1].startswith("error: handlers: cannot import module 'app.tasks': SyntaxError in")


def test_an_error_while_the_module_runs_names_its_file_and_line(tmp_path):
    source = TOUR + "settings = {}['missing']\n"
    cwd = tour(tmp_path, source)
    p = run_cli(cwd, "worker", "--db", "app.db", "--handlers", "app.tasks:registry")
    assert p.returncode == EXIT_USAGE
    [line] = p.stderr.splitlines()
    lineno = len(source.splitlines())
    assert line.endswith(f"KeyError at {os.path.join('app', 'tasks.py')}, line {lineno}: 'missing'"), line


# ---------------------------------------------------------------- what the worker prints

def output_run(tmp_path, *flags):
    """A worker that runs one good task, one that fails twice (dead letter) and one that is
    still running when it is stopped; returns its exit code, stderr and the task ids."""
    db, side = tmp_path / "o.db", tmp_path / "runs.txt"
    with Queue(db) as q:
        good = q.enqueue("ok", 1)
        bad = q.enqueue("bad", 2, max_attempts=2, retry={"base": 0.05, "jitter": 0.0})
        held = q.enqueue("record", {"n": 0, "runs": str(side), "gate": str(tmp_path / "never")}, queue="slow")
    w = WorkerCLI("--db", db, "--handlers", "fault_handlers:registry", "--queues", "default,slow", "--worker-id",
                  "talker", "--concurrency", 3, "--shutdown-grace", 0.3, *flags)
    try:
        with Queue(db) as q:
            wait_until(lambda: (q.get(good).status, q.get(bad).status, q.get(held).status)
                       == ("completed", "failed", "running"), what="every task settled or running")
        w.interrupt()
        code = w.wait()
    finally:
        w.close()
    with Queue(db) as q:
        assert q.get(held).status == "queued"
    return code, w.err.text(), (good, bad, held), db


@CTRL_BREAK_UNDER_WINE
def test_the_worker_prints_a_banner_failed_tasks_and_how_it_stopped(tmp_path):
    code, err, (good, bad, held), db = output_run(tmp_path)
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == f"prismq-queue worker talker on {os.path.abspath(db)}"
    assert lines[1] == "  handlers: fault_handlers:registry (types: bad, ok, record)"
    assert lines[2] == "  queues: default, slow; concurrency 3"
    assert re.search(rf"task {bad} \(bad\) failed, attempt 1 of 2, will be retried: ValueError: bad input 2$", err, re.M)
    assert re.search(rf"task {bad} \(bad\) dead-lettered after attempt 2 of 2: ValueError: bad input 2$", err, re.M)
    assert re.search(r"worker talker stopping \((SIGINT|SIGBREAK)\)", err)
    assert lines[-1].endswith("worker talker stopped: 1 done, 2 failed, 1 lease handed back"), err
    assert f"task {good} (ok)" not in err  # successes only with -v
    assert len(lines) == 8, err  # nothing else: no duplicate line from the core, no traceback


@CTRL_BREAK_UNDER_WINE
def test_quiet_prints_nothing(tmp_path):
    code, err, _, _ = output_run(tmp_path, "-q")
    assert code == 0 and err == ""


@CTRL_BREAK_UNDER_WINE
def test_verbose_prints_every_task(tmp_path):
    code, err, (good, bad, held), _ = output_run(tmp_path, "-v")
    assert code == 0, err
    assert re.search(rf"task {good} \(ok\) completed in \d+\.\d+s", err), err
    assert re.search(rf"task {held} \(record\) handed back to the queue", err), err
