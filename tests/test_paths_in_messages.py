"""Paths in error messages are shown as the user wrote them, on every platform.

A backslash is a separator on Windows and a plain character in a file name elsewhere: each test
puts one in a directory name, so on Linux too a message that escaped it (Rust's ``{:?}``, which
writes ``C:\\\\Users\\\\...`` for ``C:\\Users\\...``) fails the test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from prismq_queue import Queue
from prismq_queue.errors import DatabaseError, InvalidArgument, QueueError

ODD_DIR = "no\\such dir"


def shown(path) -> str:
    return f'"{path}"'


def assert_shown_as_written(message: str, path) -> None:
    assert shown(path) in message, message
    assert "\\\\" not in message, message


def test_opening_a_queue_in_a_missing_directory(tmp_path):
    path = tmp_path / ODD_DIR / "q.db"
    with pytest.raises(InvalidArgument) as e:
        Queue(str(path))
    assert_shown_as_written(str(e.value), path)
    assert_shown_as_written(str(e.value), path.parent)


def test_a_backup_into_a_missing_directory(queue, tmp_path):
    dest = tmp_path / ODD_DIR / "backup.db"
    with pytest.raises(InvalidArgument) as e:
        queue.backup(str(dest))
    assert_shown_as_written(str(e.value), dest.parent)


def test_a_backup_onto_an_existing_file(queue, tmp_path):
    (tmp_path / "odd\\name").mkdir(parents=True)  # two directories on Windows
    dest = tmp_path / "odd\\name" / "taken.db"
    dest.write_bytes(b"")
    with pytest.raises(InvalidArgument) as e:
        queue.backup(str(dest))
    assert "already exists" in str(e.value)
    assert_shown_as_written(str(e.value), dest)


def test_a_restore_from_a_missing_backup(tmp_path):
    backup = tmp_path / ODD_DIR / "backup.db"
    with pytest.raises(InvalidArgument) as e:
        Queue.restore(str(backup), str(tmp_path / "q.db"))
    assert_shown_as_written(str(e.value), backup)


def test_importing_a_missing_legacy_file(queue, tmp_path):
    old = tmp_path / ODD_DIR / "old.db"
    with pytest.raises(InvalidArgument) as e:
        queue.import_legacy(str(old))
    assert_shown_as_written(str(e.value), old)



def odd_db(tmp_path):
    (tmp_path / "odd\\dir").mkdir(parents=True)  # two directories on Windows
    return tmp_path / "odd\\dir" / "q.db"


def test_a_closed_queue(tmp_path):
    path = odd_db(tmp_path)
    q = Queue(str(path))
    q.close()
    with pytest.raises(QueueError) as e:
        q.stats()
    assert_shown_as_written(str(e.value), path)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows refuses to delete a file another handle holds open")
def test_a_database_file_deleted_under_the_queue(tmp_path):
    path = odd_db(tmp_path)
    with Queue(str(path)) as q:
        q.enqueue("t")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        time.sleep(0.05)  # the moved-file check runs at most every 10 ms
        with pytest.raises(DatabaseError) as e:
            q.enqueue("t")
    assert e.value.kind == "file_moved"
    assert_shown_as_written(str(e.value), path)


def test_the_cli_names_a_missing_database_as_written(tmp_path):
    from prismq_queue.cli import main

    from conftest import cli_runner

    path = tmp_path / ODD_DIR / "q.db"
    result = cli_runner().invoke(main, ["backup", "--db", str(path), str(tmp_path / "b.db")])
    assert result.exit_code != 0
    assert_shown_as_written(result.output, path)
