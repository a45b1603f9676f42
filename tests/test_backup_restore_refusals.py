"""What `Queue.backup` and `Queue.restore` refuse, and what they leave behind when they do: the
destinations a backup must not write, backups that are empty, damaged or cut short, restore
targets that are not files or not queues, paths the operating system will not create, and a
stale WAL left by a deleted database. Every refusal is a typed error whose message says what to
do, and nothing is written or left. SQLite only: PostgreSQL refuses both (test_backends.py).
(The CLI's exit codes for these are in test_cli_ops.py.)"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from serve_helpers import env

from prismq_queue import DatabaseError, InvalidArgument, Queue

# A name the file system takes, but not with ".partial-PID-RAND" appended (NAME_MAX is 255).
LONG_NAME = "b" * 240 + ".db"
unix_name_limit = pytest.mark.skipif(
    sys.platform == "win32", reason="NAME_MAX of 255 bytes per name is a unix file system limit"
)


def filled(path, n=20):
    with Queue(path) as q:
        q.enqueue_many([{"type": "t", "payload": {"n": i, "pad": "x" * 300}} for i in range(n)])


def contents(path):
    with Queue(path) as q:
        return sorted((t.id, t.payload["n"]) for t in q.list(limit=1000))


def damage_tasks_table(path):
    """Overwrite the root page of the tasks table with garbage (the schema page stays sound)."""
    con = sqlite3.connect(path)
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'tasks'").fetchone()
    (page_size,) = con.execute("PRAGMA page_size").fetchone()
    con.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xa5" * page_size)


def names(d, prefix):
    return sorted(n for n in os.listdir(d) if n.startswith(prefix))


# -- backup ----------------------------------------------------------------------------------------


def test_a_backup_refuses_an_empty_path_and_a_directory(tmp_path):
    filled(tmp_path / "q.db")
    with Queue(tmp_path / "q.db") as q:
        with pytest.raises(InvalidArgument, match="^backup destination must not be empty$"):
            q.backup("")
        (tmp_path / "dir").mkdir()
        with pytest.raises(InvalidArgument, match="is a directory: give a file path inside it"):
            q.backup(tmp_path / "dir", overwrite=True)
    assert os.listdir(tmp_path / "dir") == []


def test_overwrite_never_replaces_the_queues_own_file(tmp_path):
    db = tmp_path / "q.db"
    filled(db)
    before = contents(db)
    with Queue(db) as q:
        with pytest.raises(InvalidArgument, match="is this queue's own database file: choose another path"):
            q.backup(db, overwrite=True)
        assert names(tmp_path, "q.db.partial") == []
    assert contents(db) == before


def test_overwrite_never_replaces_a_database_with_a_wal_beside_it(tmp_path):
    """A live database (here open in this process) has a -wal: a copy put in its place would be
    paired with that log and the log replayed onto it."""
    filled(tmp_path / "q.db")
    other = tmp_path / "other.db"
    filled(other, n=3)
    with Queue(other) as live:
        live.enqueue("t", {"n": 99})
        assert os.path.exists(f"{other}-wal")
        with Queue(tmp_path / "q.db") as q:
            with pytest.raises(InvalidArgument) as e:
                q.backup(other, overwrite=True)
        assert "has a -wal file next to it" in str(e.value) and "use restore" in str(e.value)
        assert len(live.list(limit=100)) == 4
    assert contents(other) == [(1, 0), (2, 1), (3, 2), (4, 99)]


@unix_name_limit
def test_a_backup_that_cannot_create_its_file_says_so_and_leaves_nothing(tmp_path):
    filled(tmp_path / "q.db")
    with Queue(tmp_path / "q.db") as q:
        with pytest.raises(DatabaseError, match="cannot create the backup file") as e:
            q.backup(tmp_path / LONG_NAME)
    assert "check that the directory is writable" in str(e.value)
    assert names(tmp_path, "bbb") == []


def test_a_destination_made_a_directory_during_the_backup_is_left_and_the_copy_removed(tmp_path):
    filled(tmp_path / "q.db")
    dest = tmp_path / "copy.db"

    def someone_else_takes_the_name(done, total):
        if done == total and not dest.exists():
            dest.mkdir()

    with Queue(tmp_path / "q.db") as q:
        with pytest.raises(DatabaseError, match="could not move the finished backup to"):
            q.backup(dest, progress=someone_else_takes_the_name)
    assert dest.is_dir() and os.listdir(dest) == []
    assert names(tmp_path, "copy.db") == ["copy.db"]  # no partial left beside it


# -- restore: the backup ---------------------------------------------------------------------------


def test_an_empty_file_is_not_a_backup(tmp_path):
    (tmp_path / "empty.bak").write_bytes(b"")
    with pytest.raises(InvalidArgument, match=r"is not a prismq_queue backup \(it is empty\)"):
        Queue.restore(tmp_path / "empty.bak", tmp_path / "q.db")
    assert not (tmp_path / "q.db").exists()


@pytest.mark.parametrize("how", ["damaged", "truncated"])
def test_a_damaged_or_truncated_backup_is_refused_and_the_target_kept(tmp_path, how):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db, n=200)
    with Queue(db) as q:
        q.backup(bak)
        q.enqueue("t", {"n": 1000})
    if how == "damaged":
        damage_tasks_table(bak)
    else:
        data = bak.read_bytes()
        bak.write_bytes(data[: len(data) // 2])
    before = contents(db)
    with pytest.raises(InvalidArgument) as e:
        Queue.restore(bak, db)
    msg = str(e.value)
    assert msg.startswith(f'the backup "{bak}" is damaged (') and msg.endswith("): restore another backup"), msg
    if how == "damaged":
        assert "integrity_check" in msg
    assert contents(db) == before
    with pytest.raises(InvalidArgument, match="is damaged"):
        Queue.restore(bak, tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()


# -- restore: the target ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["", ":memory:", "file:q.db?mode=rwc"])
def test_restore_needs_a_file_path_as_target(tmp_path, target):
    filled(tmp_path / "q.db")
    with Queue(tmp_path / "q.db") as q:
        q.backup(tmp_path / "q.bak")
    with pytest.raises(InvalidArgument, match="restore needs a database file path as the target"):
        Queue.restore(tmp_path / "q.bak", target)


def test_restore_refuses_a_directory_and_another_applications_database(tmp_path):
    filled(tmp_path / "q.db")
    with Queue(tmp_path / "q.db") as q:
        q.backup(tmp_path / "q.bak")
    (tmp_path / "dir").mkdir()
    with pytest.raises(InvalidArgument, match="is a directory: give the database file's path"):
        Queue.restore(tmp_path / "q.bak", tmp_path / "dir")
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as c:
        c.execute("CREATE TABLE customers (name)")
        c.execute("INSERT INTO customers VALUES ('Ada')")
    c.close()
    with pytest.raises(InvalidArgument, match="is a SQLite database of something else"):
        Queue.restore(tmp_path / "q.bak", app)
    with sqlite3.connect(app) as c:
        assert c.execute("SELECT name FROM customers").fetchall() == [("Ada",)]
    c.close()


@unix_name_limit
def test_a_target_the_system_cannot_create_says_so_and_nothing_is_made(tmp_path):
    filled(tmp_path / "q.db")
    with Queue(tmp_path / "q.db") as q:
        q.backup(tmp_path / "q.bak")
    with pytest.raises(DatabaseError, match="cannot open the restore target") as e:
        Queue.restore(tmp_path / "q.bak", tmp_path / ("t" * 300 + ".db"))
    assert "check that this user may write it and its directory" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["q.bak", "q.db"]


def test_a_damaged_database_says_to_restore_and_restore_puts_the_backup_in_its_place(tmp_path):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db, n=200)
    with Queue(db) as q:
        q.backup(bak)
        good = sorted((t.id, t.payload["n"]) for t in q.list(limit=1000))
    damage_tasks_table(db)
    with Queue(db) as q:
        with pytest.raises(DatabaseError) as e:
            q.list()
        assert e.value.kind == "corrupt"
        assert str(e.value).endswith("(the database file is damaged: run integrity_check and restore from a backup)")
        # The check reports what it found, even when SQLite cannot walk past the damage.
        problems = q.integrity_check()
        assert problems and all(isinstance(p, str) and p for p in problems), problems
    shutil.copy(db, tmp_path / "damaged.bak")
    with pytest.raises(InvalidArgument, match=r"(?s)is damaged \(integrity_check: .+\): restore another backup"):
        Queue.restore(tmp_path / "damaged.bak", tmp_path / "elsewhere.db")
    assert not (tmp_path / "elsewhere.db").exists()
    report = Queue.restore(bak, db)
    assert report["created"] is False
    assert contents(db) == good
    with Queue(db) as q:
        assert q.integrity_check() == []


def test_a_target_whose_schema_page_is_damaged_is_kept_and_the_way_out_said(tmp_path):
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db)
    with Queue(db) as q:
        q.backup(bak)
    with open(db, "r+b") as f:  # page 1 past the file header: the schema cannot be read
        f.seek(100)
        f.write(b"\xa5" * 1900)
    damaged = db.read_bytes()
    with pytest.raises(InvalidArgument) as e:
        Queue.restore(bak, db)
    assert "is damaged (database disk image is malformed)" in str(e.value)
    assert "move it aside (keep it to inspect), then restore to this path again" in str(e.value)
    assert db.read_bytes() == damaged
    os.replace(db, tmp_path / "q.db.damaged")
    assert Queue.restore(bak, db)["created"] is True
    assert len(contents(db)) == 20


WRITE_AND_DIE = """
import os, sys
from prismq_queue import Queue
q = Queue(sys.argv[1])
q.enqueue("t", {"n": -1}, idempotency_key="late")
print("written", flush=True)
os._exit(0)  # its connections stay open: the write stays in the WAL
"""


def test_restore_into_the_path_of_a_deleted_database_leaves_its_stale_wal_unreplayed(tmp_path):
    """The file was deleted but its -wal (with a write not yet checkpointed) was left beside it,
    as a cleanup that removes only `*.db` does. The restored file must not get that log replayed
    onto it, then or at any later open, and no log file is left beside it."""
    db, bak = tmp_path / "q.db", tmp_path / "q.bak"
    filled(db)
    with Queue(db) as q:
        q.backup(bak)
        backed_up = sorted((t.id, t.payload["n"]) for t in q.list(limit=1000))
    p = subprocess.run([sys.executable, "-c", WRITE_AND_DIE, str(db)], capture_output=True, text=True, env=env(),
                       timeout=60)
    assert "written" in p.stdout, p.stderr
    assert os.path.getsize(f"{db}-wal") > 0
    os.remove(db)
    report = Queue.restore(bak, db)
    assert report["created"] is True
    assert names(tmp_path, "q.db") == ["q.db"]
    for _ in range(2):
        assert contents(db) == backed_up
        with Queue(db) as q:
            assert q.find("late") is None and q.integrity_check() == []
