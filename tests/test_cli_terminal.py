"""Progress on a terminal: with stderr a terminal (a pseudo-terminal here), ``backup`` draws
click's progress bar and ``vacuum`` (which cannot tell how far it is) a spinner with the time
spent, both on stderr, with nothing asked for; stdout keeps only the result line. With
``--no-progress`` the terminal gets nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from prismq_queue import Queue

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals (the pty module) are POSIX only")


def run_with_terminal_stderr(*args, cwd):
    """Run the CLI with stderr on a pseudo-terminal: (exit code, stdout, what the terminal got)."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "prismq_queue", *map(str, args)], cwd=cwd,
                             stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out = p.stdout.read().decode()
        code = p.wait(60)
    finally:
        os.close(master)
        if slave != -1:
            os.close(slave)
    return code, out, b"".join(chunks).decode(errors="replace")


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "q.db"
    with Queue(path) as q:
        q.enqueue_many({"type": "job", "payload": {"n": i, "pad": "x" * 500}} for i in range(3000))
    return path


def test_backup_draws_a_progress_bar_on_a_terminal(tmp_path, db):
    code, out, tty = run_with_terminal_stderr("backup", "--db", db, tmp_path / "b.db", cwd=tmp_path)
    assert code == 0, tty
    assert out.startswith(f"backed up {db} to ") and "backup" not in out.splitlines()[-1][:8]
    # click's bar: the label, the bar, and the position as done/total pages, ending complete.
    pages = re.findall(r"backup  \[[#-]+\]  (\d+)/(\d+)", tty)
    assert pages and pages[-1][0] == pages[-1][1] != "0", repr(tty)
    with Queue(tmp_path / "b.db") as b:
        assert b.stats()["queued"] == 3000


def test_vacuum_shows_a_spinner_with_the_time_spent_on_a_terminal(tmp_path, db):
    code, out, tty = run_with_terminal_stderr("vacuum", "--db", db, cwd=tmp_path)
    assert code == 0, tty
    assert out.startswith(f"vacuumed {db}: ")
    assert "\rvacuum " in tty and tty.rstrip().endswith("s"), repr(tty)
    assert tty.endswith("\n") or tty.endswith("\r\n")  # the spinner's line is ended


def test_no_progress_leaves_the_terminal_alone(tmp_path, db):
    code, out, tty = run_with_terminal_stderr("vacuum", "--db", db, "--no-progress", cwd=tmp_path)
    assert code == 0 and out.startswith(f"vacuumed {db}: ")
    assert tty == ""
