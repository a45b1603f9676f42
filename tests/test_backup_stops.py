"""A backup stopped in every way a process can be stopped leaves nothing behind: SIGTERM and
SIGHUP unwind it like Ctrl-C (its partial file and -journal removed), and the partial files of a
backup killed outright (kill -9) are removed, and named, by the next backup to the same
destination; a running backup's partial is never touched (issue 16, point 5). Real processes:
the command line in a child, slowed between its progress reports (slow_backup.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from prismq_queue import Queue
from prismq_queue.cli import EXIT_FAILED
from serve_helpers import Lines, env

TESTS = Path(__file__).resolve().parent
TASKS = 2000

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals (SIGTERM, SIGHUP, SIGKILL) sent to a child; "
                       "Windows stops a console process with console events"),
]


@pytest.fixture
def db(tmp_path):
    """A database of a few thousand pages: the backup reports its progress several times."""
    path = tmp_path / "big.db"
    with Queue(path) as q:
        q.enqueue_many([{"type": "blob", "payload": {"n": n, "data": "x" * 4000}} for n in range(TASKS)])
    return path


def start_backup(db, dest, pause=0.5):
    proc = subprocess.Popen([sys.executable, str(TESTS / "slow_backup.py"), str(pause), "backup", "--db", str(db),
                             str(dest), "--progress"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    err = Lines(proc.stderr)
    err.wait_for(r"^backup: \d+/\d+ pages")  # under way: its partial file is being written
    return proc, err


def files(dest):
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(dest.name))


def partials(dest, pid):
    return [n for n in files(dest) if n.startswith(f"{dest.name}.partial-{pid}-")]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_stop_signal_unwinds_the_backup_and_removes_its_partial_file(db, tmp_path, sig):
    dest = tmp_path / "copy.db"
    proc, err = start_backup(db, dest)
    assert partials(dest, proc.pid), files(dest)
    proc.send_signal(getattr(signal, sig))
    assert proc.wait(60) == EXIT_FAILED
    err.join()
    assert f"backup stopped by {sig}" in err.text()
    assert files(dest) == [], "left behind"


def test_a_killed_backup_leaves_partials_that_the_next_backup_removes_and_names(db, tmp_path):
    dest = tmp_path / "copy.db"
    killed, _ = start_backup(db, dest)
    killed.kill()
    killed.wait(60)
    left = partials(dest, killed.pid)
    assert left and any(n.endswith("-journal") for n in left), left  # what a kill -9 leaves

    again = subprocess.run([sys.executable, "-m", "prismq_queue", "backup", "--db", str(db), str(dest)], env=env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    [partial] = [n for n in left if not n.endswith("-journal")]
    assert f"removed {partial}:" in again.stderr and "did not finish" in again.stderr
    assert files(dest) == ["copy.db"]
    with Queue(dest) as q:
        assert q.stats()["queued"] == TASKS


def test_the_partial_file_of_a_running_backup_is_left_alone(db, tmp_path):
    dest = tmp_path / "copy.db"
    running, err = start_backup(db, dest, pause=2.0)
    mine = partials(dest, running.pid)
    same_dest = subprocess.run([sys.executable, "-m", "prismq_queue", "backup", "--db", str(db), str(dest)],
                               env=env(), capture_output=True, text=True, timeout=120)
    assert same_dest.returncode == 0, same_dest.stderr
    assert "removed" not in same_dest.stderr
    assert running.poll() is None and partials(dest, running.pid) == mine
    running.send_signal(signal.SIGTERM)
    assert running.wait(60) == EXIT_FAILED
    assert partials(dest, running.pid) == []
