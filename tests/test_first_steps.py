"""What a new user meets first on the command line: help text without markup, times marked UTC,
empty listings that say so, a banner in plain English, and a refused serve that leaves nothing
behind (issue 16, point 10)."""

from __future__ import annotations

import re
import socket

import pytest

from conftest import cli_runner
from prismq_queue import Queue
from prismq_queue.cli import EXIT_FAILED, main
from serve_helpers import Serve, run_serve

pytestmark = pytest.mark.timeout(240)


def run(*args):
    result = cli_runner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_help_texts_are_plain_text_without_markup():
    commands = sorted(main.commands)
    assert "backup" in commands and "serve" in commands
    for args in [["--help"], *([name, "--help"] for name in commands)]:
        text = run(*args)
        assert "`" not in text, f"prismq-queue {' '.join(args)} shows markup:\n{text}"
    assert "Times are UTC" in run("--help")


def test_times_are_marked_utc(tmp_path):
    db = tmp_path / "t.db"
    with Queue(db) as q:
        tid = q.enqueue("t")
        q.log(tid, "info", "hello")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.search(stamp, run("list", "--db", db))
    shown = run("show", "--db", db, tid)
    assert re.search(rf"created_at: {stamp}", shown) and re.search(rf"{stamp} info +hello", shown)


def test_empty_listings_say_so(tmp_path):
    db = tmp_path / "e.db"
    assert run("list", "--db", db).strip() == "no tasks"
    assert run("list", "--db", db, "--status", "failed").strip() == "no tasks (status failed)"
    assert run("workers", "--db", db).strip().startswith("no workers")
    with Queue(db) as q:
        q.enqueue("t")
    assert "no tasks" not in run("list", "--db", db)


def test_a_serve_refused_for_a_taken_port_creates_no_database(tmp_path):
    db = tmp_path / "never.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        code, _, err = run_serve(tmp_path, "--db", db, "--port", taken.getsockname()[1], "--workers", 0)
    assert code == EXIT_FAILED and "already in use" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workers, words", [(1, "1 process running"), (2, "2 processes running")])
def test_the_banner_counts_worker_processes_in_english(tmp_path, workers, words):
    s = Serve(tmp_path, "--port", 0, "--workers", workers, "--handlers", "worker_handlers:REGISTRY").start()
    try:
        assert f"workers:   {words}" in s.out.text()
    finally:
        s.close()
