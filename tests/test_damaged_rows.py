"""Issue 15, points 2 and 5: a row the queue cannot represent (a time outside the years 1..9999
UTC, JSON that does not parse, a column of the wrong type) never takes a reader down.

Rows are damaged behind the API's back with Python's own sqlite3 module, as a bug of an earlier
version, a stray tool or a bad disk would leave them; then the Python API, the command line and
the web app must all keep answering, showing the other tasks, and naming the damaged one.

The representation chosen: a time outside the range reads as the nearest of ``datetime.min``
and ``datetime.max`` (UTC); a JSON field that does not parse raises ``DatabaseError`` with
``kind == "corrupt"`` naming the task and the field when read, and is None in ``as_dict()``;
``Task.damaged`` (and the ``"damaged"`` key of ``as_dict()``, present only then) says what
could not be read as stored.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone

import pytest

from conftest import cli_runner
from prismq_queue import DatabaseError, InvalidArgument, Queue

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import web  # noqa: E402

UTC = timezone.utc
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)
# 9999-12-31T23:59:59-12:00 is 10000-01-01T11:59:59Z: what an earlier version stored for it.
PAST_9999_MS = 253_402_343_999_000


@pytest.fixture
def damaged(tmp_path):
    """A file with good tasks in two projects and the default queue, and one damaged row of
    each kind. Returns (path, {name: task id})."""
    path = str(tmp_path / "damaged.db")
    ids = {}
    with Queue(path) as q:
        ids["good_p1"] = q.enqueue("job", {"n": 1}, queue="project:p1")
        ids["good_p2"] = q.enqueue("job", {"n": 2}, queue="project:p2")
        ids["good_default"] = q.enqueue("job", {"n": 3})
        for name in ("far_run_after", "early_updated", "text_run_after", "bad_payload", "bad_requires"):
            ids[name] = q.enqueue("job", {"victim": name}, queue="project:p1")
        ids["bad_result"] = q.enqueue("other", {"victim": "bad_result"}, queue="project:p2")
        [t] = q.claim("w", types="other")
        q.complete(t, {"fine": True})
        q.heartbeat("good-worker", {"gpu": True})
        q.heartbeat("bad-worker", {"gpu": True})
        q.log(ids["good_p1"], "info", "fine", {"k": 1})
        q.log(ids["good_p1"], "info", "damaged details", {"k": 2})
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE tasks SET run_after = ? WHERE id = ?", (PAST_9999_MS, ids["far_run_after"]))
        con.execute("UPDATE tasks SET updated_at = ? WHERE id = ?", (-(2**62), ids["early_updated"]))
        con.execute("UPDATE tasks SET run_after = 'garbage' WHERE id = ?", (ids["text_run_after"],))
        con.execute("UPDATE tasks SET payload = '{\"cut\": ' WHERE id = ?", (ids["bad_payload"],))
        con.execute("UPDATE tasks SET requires = '{oops' WHERE id = ?", (ids["bad_requires"],))
        con.execute("UPDATE tasks SET result = '[1, 2' WHERE id = ?", (ids["bad_result"],))
        con.execute("UPDATE workers SET last_heartbeat = 'noon', capabilities = '{x' WHERE id = 'bad-worker'")
        con.execute("UPDATE task_logs SET details = '{k' WHERE message = 'damaged details'")
    con.close()
    return path, ids


def test_the_python_api_lists_every_task_and_names_the_damaged_ones(damaged):
    path, ids = damaged
    with Queue(path) as q:
        tasks = {t.id: t for t in q.list(limit=100)}
        assert set(tasks) == set(ids.values())
        for t in tasks.values():
            d = t.as_dict()  # never raises
            assert d["id"] == t.id
            assert json.dumps(d, default=str)
        assert q.get(ids["far_run_after"]).run_after == LATEST
        assert q.get(ids["early_updated"]).updated_at == EARLIEST
        assert q.get(ids["text_run_after"]).run_after == EARLIEST
        assert any(line.startswith("run_after:") for line in q.get(ids["far_run_after"]).damaged)
        assert any(line.startswith("updated_at:") for line in q.get(ids["early_updated"]).damaged)
        assert any("not an integer" in line for line in q.get(ids["text_run_after"]).damaged)
        assert q.get(ids["good_p1"]).damaged == [] and "damaged" not in q.get(ids["good_p1"]).as_dict()

        for name, field in (("bad_payload", "payload"), ("bad_requires", "requires"), ("bad_result", "result")):
            t = q.get(ids[name])
            with pytest.raises(DatabaseError) as e:
                getattr(t, field)
            assert e.value.kind == "corrupt"
            assert str(e.value).startswith(f"task {t.id}: its stored {field} is not valid JSON"), str(e.value)
            d = t.as_dict()
            assert d[field] is None and f"{field}: stored text is not valid JSON" in d["damaged"]
            assert d["type"] in ("job", "other")  # the rest still reads

        stats = q.stats()
        assert stats["total"] == len(ids)
        assert q.stats(queue="project:p1")["queued"] == 6
        assert q.metrics()["depth"]["queued"] >= 6
        changes, _ = q.changes_since(q.change_cursor(), limit=100)
        assert isinstance(changes, list)

        workers = {w.id: w for w in q.workers()}
        assert set(workers) == {"good-worker", "bad-worker"}
        assert workers["good-worker"].capabilities == {"gpu": True}
        # A worker's or a log line's damaged JSON only informs: it reads as None.
        assert workers["bad-worker"].capabilities is None and workers["bad-worker"].last_heartbeat == EARLIEST
        lines = q.logs(ids["good_p1"])
        assert [(line.message, line.details) for line in lines[-2:]] == [("fine", {"k": 1}), ("damaged details", None)]


def test_a_claimed_task_with_a_damaged_payload_fails_its_handler_not_the_claim(damaged):
    path, ids = damaged
    with Queue(path) as q:
        claimed = q.claim("w", queues="project:p1", limit=10)
        by_id = {t.id: t for t in claimed}
        assert ids["bad_payload"] in by_id and ids["good_p1"] in by_id
        with pytest.raises(DatabaseError, match=rf"^task {ids['bad_payload']}: its stored payload"):
            by_id[ids["bad_payload"]].payload
        assert by_id[ids["good_p1"]].payload == {"n": 1}


def test_the_command_line_lists_and_shows(damaged):
    from prismq_queue.cli import main

    path, ids = damaged
    runner = cli_runner()
    r = runner.invoke(main, ["list", "--db", path, "--limit", "100"])
    assert r.exit_code == 0, r.output
    for tid in ids.values():
        assert any(line.split()[:1] == [str(tid)] for line in r.output.splitlines()), (tid, r.output)
    r = runner.invoke(main, ["list", "--db", path, "--json", "--limit", "100"])
    assert r.exit_code == 0, r.output
    assert {t["id"] for t in json.loads(r.stdout)} == set(ids.values())
    for name in ("bad_payload", "far_run_after", "text_run_after", "good_p1"):
        r = runner.invoke(main, ["show", "--db", path, str(ids[name])])
        assert r.exit_code == 0, (name, r.output)
        assert "Traceback" not in r.output
    r = runner.invoke(main, ["show", "--db", path, "--json", str(ids["bad_payload"])])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["payload"] is None and shown["damaged"]
    r = runner.invoke(main, ["stats", "--db", path])
    assert r.exit_code == 0, r.output


def test_the_web_listings_answer_200_with_every_other_task(damaged):
    path, ids = damaged
    with Queue(path) as q, TestClient(web.create_app(q, auth=web.Auth.disabled())) as c:
        r = c.get("/api/queue/tasks", params={"limit": 1000})
        assert r.status_code == 200, r.text
        assert {t["task_id"] for t in r.json()} == set(ids.values())
        for project, names in (("p1", ("good_p1", "far_run_after", "bad_payload")), ("p2", ("good_p2",))):
            r = c.get(f"/api/projects/{project}/queue/status", params={"include_finished": "true"})
            assert r.status_code == 200, r.text
            shown = {i["item_id"] for i in r.json()["items"] + r.json()["finished"]}
            assert {ids[n] for n in names} <= shown
        for name in ("bad_payload", "far_run_after", "early_updated", "bad_result"):
            r = c.get("/api/queue/search", params={"q": str(ids[name])})
            assert r.status_code == 200, (name, r.text)
            r = c.get(f"/api/queue/tasks/{ids[name]}")
            assert r.status_code == 200, (name, r.text)
        r = c.get("/api/queue/stats")
        assert r.status_code == 200, r.text
        r = c.get("/api/queue/workers")
        assert r.status_code == 200, r.text


def test_the_dashboards_panels_answer_200_with_damaged_rows_running_and_failed(damaged):
    # The dashboard reads running tasks, workers and failures in one snapshot: a damaged row in
    # any of those panels must not take the snapshot (and so the whole page) down.
    path, ids = damaged
    with Queue(path) as q:
        claimed = {t.id: t for t in q.claim("w", queues="project:p1", limit=10)}
        assert ids["bad_payload"] in claimed
        q.fail(claimed[ids["good_p1"]], RuntimeError("boom"), retry=False)
    with Queue(path) as q, TestClient(web.create_app(q, auth=web.Auth.disabled())) as c:
        r = c.get("/api/queue/dashboard")
        assert r.status_code == 200, r.text
        snapshot = r.json()
        assert ids["bad_payload"] in {t["id"] for t in snapshot["running"]["items"]}
        assert ids["good_p1"] in {f["task"]["id"] for f in snapshot["failures"]["items"]}
        for route in ("/api/queue/failures", "/api/queue/breakdown"):
            r = c.get(route)
            assert r.status_code == 200, (route, r.text)


def test_the_web_refuses_a_time_past_9999_at_the_door(tmp_path):
    with Queue(str(tmp_path / "q.db")) as q, TestClient(web.create_app(q, auth=web.Auth.disabled())) as c:
        r = c.post("/api/queue/enqueue", json={"type": "t", "run_after_utc": "9999-12-31T23:59:59-12:00"})
        assert r.status_code == 422, r.text
        assert "9999-12-31T23:59:59.999Z" in r.text
        assert q.stats()["total"] == 0
        with pytest.raises(InvalidArgument):
            q.enqueue("t", run_after=datetime.fromisoformat("9999-12-31T23:59:59-12:00"))
