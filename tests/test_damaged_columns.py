"""Columns of a SQLite task row that hold what the queue never writes: a status that is not one
(the table's CHECK constraint switched off by the tool that wrote it), bytes that are not UTF-8,
a blob or a number where text belongs, text or a fraction where a number belongs. The promise
(docs/operations.md, "A damaged row never takes a listing down"): every reader keeps answering,
shows the other tasks, and ``Task.damaged`` says what could not be read as stored.

Rows are damaged behind the API's back with Python's own sqlite3 module, in another connection
after the queue is closed, as tests/test_damaged_rows.py does for times and JSON. SQLite only:
these are values SQLite's dynamic typing lets a stray tool store.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import cli_runner

from prismq_queue import Queue
from prismq_queue.cli import main


def damage(path, sql, *args, checks=True):
    con = sqlite3.connect(path)
    with con:
        if not checks:
            con.execute("PRAGMA ignore_check_constraints = ON")
        con.execute(sql, args)
    con.close()


@pytest.fixture
def three(tmp_path):
    path = str(tmp_path / "q.db")
    with Queue(path) as q:
        ids = q.enqueue_many([{"type": "t", "payload": {"n": n}} for n in range(3)])
    return path, ids


def test_a_row_with_a_status_that_is_not_one_is_listed_as_failed_and_named_damaged(three):
    path, (a, bad, c) = three
    damage(path, "UPDATE tasks SET status = 'bogus' WHERE id = ?", bad, checks=False)
    with Queue(path) as q:
        listed = {t.id: t for t in q.list(limit=10)}
        assert set(listed) == {a, bad, c}
        t = q.get(bad)
        assert t.status == "failed"
        assert t.damaged == ['status: stored text "bogus" is not a status; shown as failed']
        assert t.as_dict()["damaged"] == t.damaged and t.payload == {"n": 1}
        assert listed[a].status == "queued" and listed[a].damaged == []
        # No claim takes it: claims select queued rows in SQL, and this one is not.
        assert sorted(t.id for t in q.claim("w", limit=10)) == [a, c]
    r = cli_runner().invoke(main, ["list", "--db", path, "--json"])
    assert r.exit_code == 0, r.output
    assert {t["id"]: t["status"] for t in json.loads(r.stdout)}[bad] == "failed"
    r = cli_runner().invoke(main, ["show", "--db", path, str(bad)])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output


def test_columns_of_the_wrong_type_are_read_as_well_as_they_can_be_and_named(three):
    path, (a, bad, c) = three
    damage(
        path,
        """UPDATE tasks SET queue = 5, step = x'6869', message = CAST(x'6f6bff' AS TEXT), progress = 'half',
           timeout_ms = 2.5, lease_token = x'0102', priority = 7.5 WHERE id = ?""",
        bad,
    )
    with Queue(path) as q:
        assert {t.id for t in q.list(limit=10)} == {a, bad, c}
        t = q.get(bad)
        assert sorted(t.damaged) == [
            "lease_token: stored a blob of 2 bytes is not an integer",
            "message: stored text is not valid UTF-8",
            "priority: stored 7.5 is not an integer",
            "progress: stored text \"half\" is not a number",
            "step: stored as a blob of 2 bytes, not text",
            "timeout_ms: stored 2.5 is not an integer",
        ]
        # What could be read is shown: the number as text, the blob's bytes, the rest replaced.
        assert t.queue == "5" and t.step == "hi" and t.message == "ok\ufffd"
        assert t.progress is None and t.payload == {"n": 1}
        assert json.dumps(t.as_dict(), default=str)
        assert q.get(a).damaged == []
