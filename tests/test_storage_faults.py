"""Issue 15, point 13: storage faults are told apart and recovered from.

- A full disk is made for real, without root: a child process lowers its own RLIMIT_FSIZE (with
  SIGXFSZ ignored, a write past the limit fails with EFBIG, as on a full disk), then raises it.
- A read-only file is made for real: a child process that cannot write the file opens it (as
  another user when the tests run as root, since root ignores file modes), then the file is
  made writable again.
- A file deleted or replaced under a running handle, and a damaged schema version field.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from prismq_queue import SCHEMA_VERSION, DatabaseBusy, DatabaseError, Queue, SchemaVersionError

unix_only = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE, SIGXFSZ and file modes are unix")


def run_child(code, *args, env=None, timeout=120):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


# -- a full disk ---------------------------------------------------------------------------------

FULL_DISK = """
import json, os, resource, signal, sys
from prismq_queue import DatabaseError, Queue

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
path = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
with Queue(path) as q:
    before = q.enqueue("t", {"n": 0})
    size = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        q.enqueue("t", {"blob": "x" * (size + 200_000)})
        print(json.dumps({"full": None}))
    except DatabaseError as e:
        print(json.dumps({"full": [e.kind, str(e)]}))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    after = q.enqueue("t", {"blob": "x" * (size + 200_000)})
    print(json.dumps({"after": after, "total": q.stats()["total"], "before": before}))
"""


@unix_only
def test_a_full_disk_is_disk_full_and_recovers_by_itself(db_path):
    Queue(db_path).close()
    full, after = run_child(FULL_DISK, db_path)
    kind, message = full["full"]
    assert kind == "disk_full", message
    assert "disk is full or a file size limit was reached" in message and "free space, then retry" in message
    # Nothing of the refused enqueue was written; the next one went through without reopening.
    assert after["total"] == 2 and after["after"] == after["before"] + 1


FULL_DISK_WEB = """
import json, os, resource, signal, sys
from fastapi.testclient import TestClient
from prismq_queue import Queue, web

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path = sys.argv[1]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
with Queue(path) as q, TestClient(web.create_app(q, auth=web.Auth.disabled())) as c:
    r = c.post("/api/queue/enqueue", json={"type": "t"})
    assert r.status_code == 201, r.text
    size = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    big = {"type": "t", "payload": {"blob": "x" * (size + 200_000)}}
    r = c.post("/api/queue/enqueue", json=big)
    print(json.dumps({"full": [r.status_code, r.json(), r.headers.get("retry-after")]}))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    r = c.post("/api/queue/enqueue", json=big)
    print(json.dumps({"after": [r.status_code, q.stats()["total"]]}))
"""


@unix_only
def test_the_web_answers_503_with_the_reason_on_a_full_disk(db_path):
    pytest.importorskip("fastapi")
    Queue(db_path).close()
    full, after = run_child(FULL_DISK_WEB, db_path)
    status, body, retry_after = full["full"]
    assert status == 503, body
    assert "disk is full" in body["detail"] and "nothing was written" in body["detail"]
    assert retry_after is not None and int(retry_after) > 0
    assert after["after"] == [201, 2]


# -- a read-only file ----------------------------------------------------------------------------

READ_ONLY = """
import json, os, sys, time
from prismq_queue import DatabaseError, Queue

path, flag, uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
if uid >= 0:
    os.setgid(uid)
    os.setuid(uid)
with Queue(path) as q:
    try:
        q.enqueue("t")
        print(json.dumps({"ro": None}))
    except DatabaseError as e:
        print(json.dumps({"ro": [e.kind, str(e)]}))
    print(json.dumps({"listed": len(q.list()), "boot_seq": q.lease_clock()["boot_seq"]}), flush=True)
    while not os.path.exists(flag):  # the parent makes the file writable, then says so
        time.sleep(0.02)
    tid = q.enqueue("t")
    claimed = [t.id for t in q.claim("after", types="t")]
    print(json.dumps({"after": tid, "claimed": claimed, "total": q.stats()["total"],
                      "boot_seq": q.lease_clock()["boot_seq"]}))
"""


@unix_only
def test_a_handle_opened_read_only_recovers_once_the_file_is_writable(tmp_path):
    import tempfile

    # A directory every user may write in (the -wal and -shm files are created beside the file).
    d = tempfile.mkdtemp(prefix="prismq-ro-")
    os.chmod(d, 0o777)
    path = os.path.join(d, "q.db")
    flag = os.path.join(d, "writable-now")
    try:
        with Queue(path) as q:  # registers this boot, so the read-only opener need not write
            q.enqueue("seed")
        os.chmod(path, 0o444)
        uid = -1
        if os.geteuid() == 0:
            import pwd

            uid = pwd.getpwnam("nobody").pw_uid  # root ignores file modes: open as a user who cannot
        # A boot the file has not seen: a handle that may not write opens anyway, and registers
        # the boot with its first write that needs it.
        env = {**os.environ, "PRISMQ_DEBUG_BOOT_ID": "read-only-test-boot"}
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(READ_ONLY), path, flag, str(uid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        ro = json.loads(proc.stdout.readline())
        listed = json.loads(proc.stdout.readline())
        os.chmod(path, 0o666)
        open(flag, "w").close()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        after = json.loads(out.splitlines()[-1])
        kind, message = ro["ro"]
        assert kind == "read_only", message
        assert "read-only" in message
        assert listed == {"listed": 1, "boot_seq": None}  # reads work meanwhile
        assert after["total"] == 2, "the same handle wrote once the file was writable again"
        assert after["claimed"] == [after["after"]] and after["boot_seq"] == 2
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)


# -- a file deleted or replaced under a running handle -------------------------------------------


def _remove_db(path):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


@pytest.mark.skipif(sys.platform == "win32", reason="Windows does not let an open database file be deleted")
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_writes_to_a_deleted_or_replaced_file_are_refused(tmp_path, how):
    path = str(tmp_path / "q.db")
    q = Queue(path)
    try:
        q.enqueue("before")
        if how == "deleted":
            _remove_db(path)
        else:
            other = str(tmp_path / "other.db")
            with Queue(other) as o:
                o.enqueue("other file")
            _remove_db(path)
            os.replace(other, path)
        time.sleep(0.05)  # the check runs at most every 10 ms
        with pytest.raises(DatabaseError) as e:
            q.enqueue("lost")
        assert e.value.kind == "file_moved"
        assert "was deleted or replaced after this process opened it" in str(e.value)
        assert "open a new Queue (restart the process)" in str(e.value)
        # Every later write is refused too, whatever it is.
        for write in (lambda: q.claim("w"), lambda: q.enqueue("again"), lambda: q.sweep()):
            with pytest.raises(DatabaseError) as e:
                write()
            assert e.value.kind == "file_moved"
        with Queue(path) as fresh:  # a new handle works on the file that is there now
            assert [t.type for t in fresh.list()] == ([] if how == "deleted" else ["other file"])
    finally:
        q.close()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows does not let an open database file be deleted")
def test_the_web_answers_503_when_the_file_was_replaced(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from prismq_queue import web

    path = str(tmp_path / "q.db")
    with Queue(path) as q, TestClient(web.create_app(q, auth=web.Auth.disabled())) as c:
        assert c.post("/api/queue/enqueue", json={"type": "t"}).status_code == 201
        _remove_db(path)
        Queue(path).close()
        time.sleep(0.05)
        r = c.post("/api/queue/enqueue", json={"type": "t"})
        assert r.status_code == 503, r.text
        assert "deleted or replaced" in r.json()["detail"] and "retry-after" not in r.headers


# -- a damaged schema version field --------------------------------------------------------------


def _set_user_version(path, v):
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {v}")
    con.commit()
    con.close()


@pytest.mark.parametrize("version", [-1, 1_000_000, 2**31 - 1, 0])
def test_a_damaged_version_field_is_reported_as_damage(db_path, version):
    Queue(db_path).close()
    _set_user_version(db_path, version)
    with pytest.raises(DatabaseError) as e:
        Queue(db_path)
    assert not isinstance(e.value, SchemaVersionError)
    assert e.value.kind == "corrupt"
    msg = str(e.value)
    assert msg.startswith(f"the database file is damaged: its schema version field reads {version}"), msg
    assert "integrity_check" in msg and "restore it from a backup" in msg


def test_a_version_field_contradicted_by_the_tables_is_damage(tmp_path):
    path = str(tmp_path / "empty.db")
    _set_user_version(path, 3)  # a SQLite file with no tables at all says version 3
    with pytest.raises(DatabaseError) as e:
        Queue(path)
    assert e.value.kind == "corrupt" and "but the file has no tables" in str(e.value)


def test_a_plausible_newer_version_is_still_a_newer_schema(db_path):
    Queue(db_path).close()
    _set_user_version(db_path, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match="upgrade prismq_queue"):
        Queue(db_path)


def test_someone_elses_database_is_still_named_as_such(tmp_path):
    path = str(tmp_path / "app.db")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.execute("PRAGMA user_version = 42")  # other applications use the field as they like
    con.commit()
    con.close()
    with pytest.raises(DatabaseError, match="is not a prismq_queue database"):
        Queue(path)


# -- a lock held past busy_timeout ---------------------------------------------------------------


HOLD_LOCK = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


def test_a_lock_held_past_busy_timeout_is_database_busy(db_path):
    Queue(db_path).close()
    # Another process: POSIX locks belong to a process, so a holder in this one would not block.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, db_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with Queue(db_path, busy_timeout=0.2) as q:
            with pytest.raises(DatabaseBusy) as e:
                q.enqueue("t")
        assert isinstance(e.value, DatabaseError) and e.value.kind == "busy"
        assert "busy_timeout" in str(e.value)
    finally:
        holder.communicate("\n", timeout=30)
