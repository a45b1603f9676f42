"""The REST API (prismq_queue.web) through fastapi's TestClient: every endpoint, every error code,
every scope and project rule."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from conftest import snapshot  # noqa: E402
from prismq_queue import DatabaseBusy, Queue, web  # noqa: E402
from web_helpers import QueueProxy  # noqa: E402

TOKENS = {
    "all": web.Token(scopes={"read", "write", "admin"}),
    "reader": web.Token(scopes={"read"}),
    "writer": web.Token(scopes={"write"}),
    "admin-only": web.Token(scopes={"admin"}),
    "p1": web.Token(scopes={"read", "write"}, projects={"p1"}),
    "p1-reader": web.Token(scopes={"read"}, projects={"p1"}),
    "p1-admin": web.Token(scopes={"read", "write", "admin"}, projects={"p1"}),
}
AUTH = web.Auth(tokens=TOKENS)


def h(token):
    return {"Authorization": f"Bearer {token}"}


ALL = h("all")


@pytest.fixture
def client(queue):
    with TestClient(web.create_app(queue, auth=AUTH)) as c:
        yield c


def api(path):
    return "/api" + path


# ====================================================================== the older queue API
def test_enqueue_returns_201_and_stores_every_field(client, queue):
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    r = client.post(
        api("/queue/enqueue"),
        json={
            "type": "video_processing",
            "priority": 50,
            "payload": {"format": "mp4"},
            "compatibility": {"region": "us-west"},
            "max_attempts": 3,
            "run_after_utc": when.isoformat(),
            "idempotency_key": "video-1",
        },
        headers=ALL,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "queued" and body["message"] == "Task enqueued successfully"
    assert set(body) == {"task_id", "status", "created_at_utc", "message"}
    t = queue.get(body["task_id"])
    assert (t.type, t.priority, t.payload, t.requires, t.max_attempts, t.queue, t.idempotency_key) == (
        "video_processing", 50, {"format": "mp4"}, {"region": "us-west"}, 3, "default", "video-1",
    )
    assert abs((t.run_after - when).total_seconds()) < 0.002
    assert r.headers["x-request-id"]


def test_enqueue_defaults_and_naive_time_is_utc(client, queue):
    r = client.post(api("/queue/enqueue"), json={"type": "t", "run_after_utc": "2030-01-02T03:04:05"}, headers=ALL)
    assert r.status_code == 201
    t = queue.get(r.json()["task_id"])
    assert (t.priority, t.max_attempts, t.payload, t.requires) == (100, 5, {}, None)
    assert t.run_after == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_enqueue_existing_idempotency_key_returns_the_existing_task(client, queue):
    first = client.post(api("/queue/enqueue"), json={"type": "a", "idempotency_key": "k1"}, headers=ALL).json()
    again = client.post(api("/queue/enqueue"), json={"type": "a", "payload": {"x": 2}, "idempotency_key": "k1"}, headers=ALL)
    assert again.status_code == 201
    assert again.json()["task_id"] == first["task_id"]
    assert again.json()["message"] == "Task already exists (idempotency key match)"
    assert queue.stats()["total"] == 1


@pytest.mark.parametrize(
    "body, loc",
    [
        ({}, ["body", "type"]),
        ({"type": "   "}, ["body", "type"]),
        ({"type": ""}, ["body", "type"]),
        ({"type": "a", "priority": 0}, ["body", "priority"]),
        ({"type": "a", "priority": 1001}, ["body", "priority"]),
        ({"type": "a", "max_attempts": 0}, ["body", "max_attempts"]),
        ({"type": "a", "max_attempts": 11}, ["body", "max_attempts"]),
        ({"type": "a", "run_after_utc": "tomorrow"}, ["body", "run_after_utc"]),
        ({"type": "a", "compatibility": [1]}, ["body", "compatibility"]),
        ({"type": "a", "idempotency_key": ""}, ["body", "idempotency_key"]),
        ({"type": "a", "colour": "red"}, ["body", "colour"]),
    ],
)
def test_enqueue_invalid_field_is_422_with_its_location_and_writes_nothing(client, queue, body, loc):
    r = client.post(api("/queue/enqueue"), json=body, headers=ALL)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert loc in [e["loc"] for e in errors]
    assert all(set(e) == {"loc", "msg", "type"} for e in errors)
    assert r.json()["request_id"] == r.headers["x-request-id"]
    assert queue.stats()["total"] == 0


def test_malformed_json_is_400(client):
    # Not JSON at all is a bad request (400, as the schema says), not an invalid field (422).
    r = client.post(api("/queue/enqueue"), content=b'{"type": ', headers={**ALL, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith("the body is not valid JSON") and r.json()["request_id"]


def test_core_refusal_is_422(queue):
    # A payload over max_payload_bytes passes the model but the core refuses it: InvalidArgument.
    with Queue(queue.path, max_payload_bytes=100) as small, TestClient(web.create_app(small, auth=AUTH)) as c:
        r = c.post(api("/queue/enqueue"), json={"type": "a", "payload": {"x": "y" * 500}}, headers=ALL)
        assert r.status_code == 422
        assert "payload" in r.json()["detail"][0]["msg"]


def test_get_task_old_fields_and_processing_status(client, queue):
    tid = queue.enqueue("render", {"n": 1}, requires={"gpu": True}, priority=7)
    r = client.get(api(f"/queue/tasks/{tid}"), headers=ALL)
    assert r.status_code == 200
    body = r.json()
    for field in ("task_id", "type", "status", "priority", "attempts", "max_attempts", "payload", "compatibility",
                  "error_message", "created_at_utc", "processing_started_utc", "finished_at_utc", "locked_by"):
        assert field in body
    assert (body["task_id"], body["status"], body["compatibility"], body["priority"]) == (tid, "queued", {"gpu": True}, 7)

    [task] = queue.claim("w-1", capabilities={"gpu": True})
    queue.progress(task, 30, step="frames", message="3/10")
    body = client.get(api(f"/queue/tasks/{tid}"), headers=ALL).json()
    assert body["status"] == "processing" and body["locked_by"] == "w-1" and body["processing_started_utc"]
    assert (body["progress"], body["step"], body["progress_message"]) == (30, "frames", "3/10")
    queue.fail(task, "boom", retry=False)
    body = client.get(api(f"/queue/tasks/{tid}"), headers=ALL).json()
    assert body["status"] == "failed" and "boom" in body["error_message"] and body["finished_at_utc"]


def test_get_task_absent_is_404_and_bad_id_is_422(client):
    r = client.get(api("/queue/tasks/999"), headers=ALL)
    assert r.status_code == 404 and r.json()["request_id"]
    assert client.get(api("/queue/tasks/abc"), headers=ALL).status_code == 422


def test_list_tasks_newest_first_with_filters_and_limit(client, queue):
    ids = [queue.enqueue("a" if i % 2 else "b", {"i": i}) for i in range(6)]
    [running] = queue.claim("w", types=["a"])
    r = client.get(api("/queue/tasks"), headers=ALL)
    assert [t["task_id"] for t in r.json()] == ids[::-1]
    r = client.get(api("/queue/tasks?type=a"), headers=ALL)
    assert [t["task_id"] for t in r.json()] == [i for i in ids[::-1] if i % 2 == 0]
    r = client.get(api("/queue/tasks?status=processing"), headers=ALL)
    assert [t["task_id"] for t in r.json()] == [running.id]
    assert r.json()[0]["status"] == "processing"
    assert [t["task_id"] for t in client.get(api("/queue/tasks?status=running"), headers=ALL).json()] == [running.id]
    assert len(client.get(api("/queue/tasks?status=queued&limit=2"), headers=ALL).json()) == 2
    for bad in ("limit=0", "limit=1001", "status=leased", "limit=x"):
        r = client.get(api(f"/queue/tasks?{bad}"), headers=ALL)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"][0] == "query"


def test_cancel_task(client, queue):
    tid = queue.enqueue("a")
    r = client.post(api(f"/queue/tasks/{tid}/cancel"), headers=ALL)
    assert r.status_code == 200
    assert r.json() == {"task_id": tid, "status": "cancelled", "message": "Task cancelled successfully"}
    assert queue.get(tid).status == "cancelled"
    r = client.post(api(f"/queue/tasks/{tid}/cancel"), headers=ALL)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and "cannot cancel" in r.json()["message"]
    done = queue.enqueue("b")
    [t] = queue.claim("w")
    queue.complete(t)
    r = client.post(api(f"/queue/tasks/{done}/cancel"), headers=ALL)
    assert r.json() == {"task_id": done, "status": "completed", "message": "Task already completed, cannot cancel"}
    assert client.post(api("/queue/tasks/424242/cancel"), headers=ALL).status_code == 404


def test_stats_use_the_old_names(client, queue):
    for _ in range(4):
        queue.enqueue("a")
    queue.enqueue("later", delay=3600)
    [t1, t2] = queue.claim("w", limit=2)
    queue.complete(t1)
    queue.fail(t2, "x", retry=False)
    [t3] = queue.claim("w")
    queue.cancel(queue.enqueue("c"))
    r = client.get(api("/queue/stats"), headers=ALL)
    assert r.status_code == 200
    s = r.json()
    assert {k: s[k] for k in ("total_tasks", "queued_tasks", "processing_tasks", "completed_tasks", "failed_tasks",
                              "cancelled_tasks", "scheduled_tasks")} == {
        "total_tasks": 6, "queued_tasks": 2, "processing_tasks": 1, "completed_tasks": 1, "failed_tasks": 1,
        "cancelled_tasks": 1, "scheduled_tasks": 1,
    }
    assert s["oldest_queued_age_seconds"] is not None
    assert t3.id


# ====================================================================== projects
def add(client, project, token="all", **body):
    body.setdefault("type", "job")
    return client.post(api(f"/projects/{project}/queue/add"), json=body, headers=h(token))


def test_project_add_puts_the_task_in_the_project_queue(client, queue):
    r = add(client, "p1", payload={"doc": 1}, priority=20, compatibility={"gpu": True}, timeout_seconds=30, max_attempts=2)
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["created"] is True and item["project_id"] == "p1" and item["status"] == "queued"
    assert item["position"] == 0
    t = queue.get(item["item_id"])
    assert (t.queue, t.payload, t.priority, t.requires, t.timeout, t.max_attempts) == (
        "project:p1", {"doc": 1}, 20, {"gpu": True}, 30.0, 2,
    )


def test_project_add_delay_and_validation(client, queue):
    r = add(client, "p1", delay_seconds=600)
    assert r.status_code == 201
    assert queue.get(r.json()["item_id"]).run_after > datetime.now(timezone.utc) + timedelta(seconds=590)
    r = add(client, "p1", delay_seconds=5, run_after_utc="2030-01-01T00:00:00Z")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "delay_seconds"]
    for body in ({"type": " "}, {"type": "a", "priority": 0}, {"type": "a", "max_attempts": 11}, {"type": "a", "delay_seconds": -1}):
        r = client.post(api("/projects/p1/queue/add"), json=body, headers=ALL)
        assert r.status_code == 422, body
    assert queue.stats()["total"] == 1


def test_project_idempotency_keys_are_per_project(client, queue):
    a = add(client, "p1", idempotency_key="doc-7")
    again = add(client, "p1", idempotency_key="doc-7", payload={"other": True})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["item_id"] == a.json()["item_id"] and again.json()["idempotency_key"] == "doc-7"
    other = add(client, "p2", idempotency_key="doc-7")
    assert other.status_code == 201 and other.json()["item_id"] != a.json()["item_id"]
    assert queue.stats()["total"] == 2


def test_invalid_project_id_is_422(client):
    for pid in ("bad%20id", "-x", "a" * 129, "p:1"):
        r = client.get(api(f"/projects/{pid}/queue/status"), headers=ALL)
        assert r.status_code == 422, pid
        assert r.json()["detail"][0]["loc"] == ["path", "project_id"]


def test_project_status_positions_progress_and_counts(client, queue):
    low = add(client, "p1", priority=500).json()["item_id"]
    urgent = add(client, "p1", priority=1).json()["item_id"]
    mid = add(client, "p1", priority=50).json()["item_id"]
    later = add(client, "p1", delay_seconds=3600).json()["item_id"]
    running = add(client, "p1", priority=1).json()["item_id"]
    add(client, "p2")
    queue.enqueue("elsewhere", queue="default")
    # claim `running` (priority 1, after `urgent`): take both, give `urgent` back
    tasks = queue.claim("w-9", queues=["project:p1"], limit=2)
    assert {t.id for t in tasks} == {urgent, running}
    for t in tasks:
        if t.id == urgent:
            queue.release(t)
        else:
            queue.progress(t, 60, step="encode", message="frame 6/10")

    r = client.get(api("/projects/p1/queue/status"), headers=ALL)
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["project_id"] == "p1" and s["queue"] == "project:p1"
    assert s["counts"]["queued"] == 4 and s["counts"]["running"] == 1 and s["counts"]["total"] == 5
    items = s["items"]
    assert [i["item_id"] for i in items] == [running, urgent, mid, low, later]
    assert items[0]["status"] == "running" and items[0]["position"] is None
    assert (items[0]["progress"], items[0]["step"], items[0]["message"]) == (60, "encode", "frame 6/10")
    positions = [i["position"] for i in items[1:4]]
    assert positions == sorted(positions) and positions[0] == 0
    assert s["finished"] == []

    queue.cancel(low)
    s = client.get(api("/projects/p1/queue/status?include_finished=true&limit=2"), headers=ALL).json()
    assert [i["item_id"] for i in s["finished"]] == [low]
    assert len(s["items"]) == 3  # the running item and two queued ones (limit=2 each)
    assert client.get(api("/projects/p1/queue/status?limit=0"), headers=ALL).status_code == 422
    empty = client.get(api("/projects/nobody/queue/status"), headers=ALL).json()
    assert empty["items"] == [] and empty["counts"]["total"] == 0



@pytest.mark.parametrize("scan_limit", [None, 10], ids=["whole queue read", "backlog deeper than the scan"])
def test_project_status_positions_are_queue_position_for_every_item(client, queue, monkeypatch, scan_limit):
    """Positions counted from the listing (or, past the scan limit, asked of the core) are the
    core's Queue.position: every type of the queue, due tasks only, every `requires` variant in the same line."""
    from prismq_queue.web import _router

    if scan_limit is not None:
        monkeypatch.setattr(_router, "MAX_QUEUED_SCAN", scan_limit)
    qn = "project:p7"
    for i in range(30):
        queue.enqueue(
            ["render", "encode"][i % 2],
            queue=qn,
            priority=[5, 1, 50, 5, 900][i % 5],
            delay=3600 if i % 7 == 3 else None,
            requires={"gpu": True} if i % 4 == 1 else None,
        )
    [taken] = queue.claim("w-1", queues=[qn], types=["render"])
    s = client.get(api("/projects/p7/queue/status?limit=1000"), headers=ALL).json()
    queued = [i for i in s["items"] if i["status"] == "queued"]
    assert len(queued) == (29 if scan_limit is None else scan_limit) and taken.id in {i["item_id"] for i in s["items"] if i["status"] == "running"}
    got = {i["item_id"]: i["position"] for i in queued}
    assert got == {tid: queue.position(tid) for tid in got}
    assert len(set(got.values())) > 3  # the positions differ: the check can fail

def test_project_delete_cancels_queued_and_running_and_leaves_finished(client, queue):
    q_item = add(client, "p1").json()["item_id"]
    r_item = add(client, "p1").json()["item_id"]
    [t] = queue.claim("w", queues=["project:p1"])
    assert t.id == q_item
    r = client.delete(api(f"/projects/p1/queue/{q_item}"), headers=ALL)
    assert r.status_code == 200 and r.json()["cancelled"] is True and r.json()["status"] == "cancelled"
    assert queue.get(q_item).status == "cancelled"
    r = client.delete(api(f"/projects/p1/queue/{r_item}"), headers=ALL)
    assert r.json()["cancelled"] is True
    r = client.delete(api(f"/projects/p1/queue/{r_item}"), headers=ALL)
    assert r.status_code == 200 and r.json()["cancelled"] is False and r.json()["status"] == "cancelled"
    assert client.delete(api("/projects/p1/queue/987654"), headers=ALL).status_code == 404


def test_item_of_another_project_is_404_and_untouched(client, queue):
    theirs = add(client, "p2", priority=9).json()["item_id"]
    plain = queue.enqueue("default-queue-task")
    for tid in (theirs, plain):
        before = queue.get(tid).as_dict()
        r = client.delete(api(f"/projects/p1/queue/{tid}"), headers=ALL)
        assert r.status_code == 404
        assert r.json()["detail"] == client.delete(api("/projects/p1/queue/987654"), headers=ALL).json()["detail"].replace("987654", str(tid))
        r = client.put(api(f"/projects/p1/queue/{tid}/priority"), json={"priority": 1}, headers=ALL)
        assert r.status_code == 404
        assert queue.get(tid).as_dict() == before


def test_project_priority(client, queue):
    a = add(client, "p1", priority=100).json()["item_id"]
    b = add(client, "p1", priority=100).json()["item_id"]
    r = client.put(api(f"/projects/p1/queue/{b}/priority"), json={"priority": 3}, headers=ALL)
    assert r.status_code == 200 and r.json()["priority"] == 3 and r.json()["position"] == 0
    assert queue.get(b).priority == 3
    [t] = queue.claim("w", queues=["project:p1"])
    assert t.id == b
    for bad in ({"priority": 0}, {"priority": 1001}, {}, {"priority": "high"}):
        assert client.put(api(f"/projects/p1/queue/{a}/priority"), json=bad, headers=ALL).status_code == 422
    queue.complete(t)
    r = client.put(api(f"/projects/p1/queue/{b}/priority"), json={"priority": 5}, headers=ALL)
    assert r.status_code == 409 and "completed" in r.json()["detail"]


def test_stats_and_project_status_are_reused_for_cache_ttl_and_dropped_on_own_writes(queue):
    with TestClient(web.create_app(queue, auth=AUTH, cache_ttl=60)) as c:
        assert c.get(api("/queue/stats"), headers=ALL).json()["total_tasks"] == 0
        queue.enqueue("a")  # a change made elsewhere: seen once the entry is older than cache_ttl
        assert c.get(api("/queue/stats"), headers=ALL).json()["total_tasks"] == 0
        assert c.get(api("/projects/p1/queue/status"), headers=ALL).json()["items"] == []
        queue.enqueue("b", queue="project:p1")
        assert c.get(api("/projects/p1/queue/status"), headers=ALL).json()["items"] == []
        add(c, "p1")  # a change through this router drops the project's entries at once
        assert len(c.get(api("/projects/p1/queue/status"), headers=ALL).json()["items"]) == 2
    with TestClient(web.create_app(queue, auth=AUTH, cache_ttl=0)) as c:
        before = c.get(api("/queue/stats"), headers=ALL).json()["total_tasks"]
        queue.enqueue("c")
        assert c.get(api("/queue/stats"), headers=ALL).json()["total_tasks"] == before + 1
    with pytest.raises(ValueError):
        web.create_router(queue, auth=AUTH, cache_ttl=-1)


# ====================================================================== operations
def test_statistics_are_the_metrics(client, queue):
    queue.enqueue("a", queue="project:p1")
    [t] = queue.claim("w")
    queue.complete(t)
    queue.enqueue("b")
    r = client.get(api("/queue/statistics?window=60"), headers=ALL)
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["depth"]["completed"] == 1 and m["depth"]["queued"] == 1
    assert m["by_queue"]["default"]["queued"] == 1
    assert m["window"]["completed"] == 1 and m["window"]["failed"] == 0
    assert set(queue.metrics(window=60)) <= set(m)
    assert client.get(api("/queue/statistics?window=0"), headers=ALL).status_code == 422


def test_active_lists_running_tasks(client, queue):
    queue.enqueue("a")
    queue.enqueue("b")
    [t] = queue.claim("w-1", types=["a"])
    queue.progress(t, 10, step="s1")
    r = client.get(api("/queue/active"), headers=ALL)
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 1 and [i["id"] for i in body["items"]] == [t.id]
    item = body["items"][0]
    assert item["locked_by"] == "w-1" and item["step"] == "s1" and item["running_seconds"] >= 0
    assert "lease_token" not in item


def test_workers(client, queue):
    queue.heartbeat("w-a", {"gpu": True}, queues=["default"], host="h1", pid=123, tasks_done=4)
    r = client.get(api("/queue/workers"), headers=ALL)
    assert r.status_code == 200
    body = r.json()
    assert body["active"] == 1 and body["stale"] == 0
    [w] = body["workers"]
    assert (w["id"], w["capabilities"], w["queues"], w["host"], w["pid"], w["tasks_done"], w["stale"]) == (
        "w-a", {"gpu": True}, ["default"], "h1", 123, 4, False,
    )


def test_dead_letters_list_and_retry(client, queue):
    ids = [queue.enqueue("a", max_attempts=1) for _ in range(3)]
    for t in queue.claim("w", limit=3):
        queue.fail(t, "no luck")
    assert queue.stats()["failed"] == 3
    r = client.get(api("/queue/dead-letters?limit=2"), headers=ALL)
    assert r.status_code == 200
    page = r.json()
    assert [t["id"] for t in page["items"]] == ids[::-1][:2] and page["next_after_id"] == ids[1]
    rest = client.get(api(f"/queue/dead-letters?after_id={page['next_after_id']}"), headers=ALL).json()
    assert [t["id"] for t in rest["items"]] == [ids[0]] and rest["next_after_id"] is None

    r = client.post(api(f"/queue/dead-letters/{ids[0]}/retry"), headers=ALL)
    assert r.status_code == 200 and r.json() == {"task_id": ids[0], "retried": True, "status": "queued"}
    assert queue.get(ids[0]).status == "queued"
    r = client.post(api(f"/queue/dead-letters/{ids[0]}/retry"), headers=ALL)
    assert r.status_code == 409
    assert client.post(api("/queue/dead-letters/99999/retry"), headers=ALL).status_code == 404


def test_clear_cancels_queued_but_not_running_unless_asked(client, queue):
    for _ in range(5):
        queue.enqueue("a")
    queue.enqueue("b", queue="other")
    [run] = queue.claim("w")
    r = client.post(api("/queue/clear"), json={"queue": "default"}, headers=ALL)
    assert r.status_code == 200
    assert r.json() == {"cancelled_queued": 4, "cancelled_running": 0, "running_left": 1}
    assert queue.get(run.id).status == "running"
    assert queue.stats(queue="other")["queued"] == 1
    r = client.post(api("/queue/clear"), headers=ALL)  # no body: everything queued, nothing running
    assert r.json()["cancelled_queued"] == 1 and queue.get(run.id).status == "running"
    r = client.post(api("/queue/clear"), json={"include_running": True}, headers=ALL)
    assert r.json() == {"cancelled_queued": 0, "cancelled_running": 1, "running_left": 0}
    assert queue.get(run.id).status == "cancelled"
    assert client.post(api("/queue/clear"), json={"include_running": "maybe"}, headers=ALL).status_code == 422


def test_prometheus_metrics(client, queue):
    from prismq_queue.prometheus import CONTENT_TYPE

    queue.enqueue("a")
    r = client.get(api("/metrics"), headers=ALL)
    assert r.status_code == 200
    assert r.headers["content-type"] == CONTENT_TYPE
    assert "# TYPE" in r.text


# ====================================================================== access control
READ = [
    ("GET", "/queue/tasks/1"), ("GET", "/queue/tasks"), ("GET", "/queue/stats"), ("GET", "/queue/statistics"),
    ("GET", "/queue/active"), ("GET", "/queue/workers"), ("GET", "/queue/dead-letters"), ("GET", "/metrics"),
]
WRITE = [("POST", "/queue/enqueue"), ("POST", "/queue/tasks/1/cancel"), ("POST", "/queue/dead-letters/1/retry")]
ADMIN = [("POST", "/queue/clear")]
PROJECT_READ = [("GET", "/projects/{p}/queue/status")]
PROJECT_WRITE = [("POST", "/projects/{p}/queue/add"), ("DELETE", "/projects/{p}/queue/1"), ("PUT", "/projects/{p}/queue/1/priority")]
EVERY = READ + WRITE + ADMIN + [(m, p.format(p="p1")) for m, p in PROJECT_READ + PROJECT_WRITE]
BODIES = {"/queue/enqueue": {"type": "a"}, "/projects/p1/queue/add": {"type": "a"}, "/projects/p1/queue/1/priority": {"priority": 1}}


def call(client, method, path, token=None, headers=None):
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    return client.request(method, api(path), headers=hdrs, json=BODIES.get(path))


@pytest.mark.parametrize("method, path", EVERY)
def test_no_token_is_401_with_www_authenticate(client, queue, method, path):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        r = call(client, method, path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["request_id"]
    r = call(client, method, path, token="wrong")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert queue.stats()["total"] == 0


def test_401_comes_before_validation(client):
    r = client.post(api("/queue/enqueue"), json={"type": ""})
    assert r.status_code == 401
    r = client.get(api("/projects/bad%20id/queue/status"))
    assert r.status_code == 401


@pytest.mark.parametrize(
    "scope, endpoints",
    [("read", READ + [(m, p.format(p="p1")) for m, p in PROJECT_READ]),
     ("write", WRITE + [(m, p.format(p="p1")) for m, p in PROJECT_WRITE]),
     ("admin", ADMIN)],
)
def test_each_endpoint_needs_its_scope_and_scopes_are_independent(client, queue, scope, endpoints):
    lacking = [t for t in ("reader", "writer", "admin-only") if scope not in TOKENS[t].scopes]
    having = [t for t in ("reader", "writer", "admin-only") if scope in TOKENS[t].scopes]
    queue.enqueue("a", queue="project:p1")  # item 1: something the refused requests could have touched
    for method, path in endpoints:
        before = snapshot(queue)[1]
        for token in lacking:
            r = call(client, method, path, token)
            assert r.status_code == 403, (token, method, path, r.text)
            assert scope in r.json()["detail"]
        assert snapshot(queue)[1] == before
        for token in having:
            r = call(client, method, path, token)
            assert r.status_code not in (401, 403), (token, method, path, r.text)


def test_project_token_only_reaches_its_projects(client, queue):
    theirs = add(client, "p2").json()["item_id"]
    # its own project: allowed
    r = add(client, "p1", token="p1")
    assert r.status_code == 201
    mine = r.json()["item_id"]
    assert client.get(api("/projects/p1/queue/status"), headers=h("p1")).status_code == 200
    assert client.put(api(f"/projects/p1/queue/{mine}/priority"), json={"priority": 2}, headers=h("p1")).status_code == 200
    assert client.delete(api(f"/projects/p1/queue/{mine}"), headers=h("p1")).status_code == 200
    # another project: 403 whatever the item, and nothing touched
    for method, path in PROJECT_READ + PROJECT_WRITE:
        r = call(client, method, path.format(p="p2").replace("/1", f"/{theirs}"), "p1")
        assert r.status_code == 403, (method, path)
    assert queue.get(theirs).status == "queued" and queue.get(theirs).priority == 100
    # an item of p2 through p1's path: 404 (the project check passes, the item is not p1's)
    assert client.delete(api(f"/projects/p1/queue/{theirs}"), headers=h("p1")).status_code == 404
    # every endpoint about all projects: 403, even with every scope
    for method, path in READ + WRITE + ADMIN:
        r = call(client, method, path, "p1-admin")
        assert r.status_code == 403, (method, path)
        assert "restricted" in r.json()["detail"]
    # and the project token still needs the scope
    assert add(client, "p1", token="p1-reader").status_code == 403


def test_token_and_auth_configuration_errors():
    with pytest.raises(ValueError):
        web.Token(scopes={"read", "superuser"})
    with pytest.raises(ValueError):
        web.Token(scopes=set())
    with pytest.raises(ValueError):
        web.Token(scopes={"read"}, projects={"bad id"})
    with pytest.raises(ValueError):
        web.Auth(tokens={})
    with pytest.raises(TypeError):
        web.Auth(tokens={"x": {"read"}})
    with Queue(":memory:") as q:
        with pytest.raises(TypeError):
            web.create_router(q, auth=None)
        with pytest.raises(TypeError):
            web.create_router(q)  # auth is required: turning it off must be explicit


def test_auth_disabled_is_explicit_and_logs_a_warning(queue, caplog):
    with caplog.at_level(logging.WARNING, logger="prismq_queue.web"):
        app = web.create_app(queue, auth=web.Auth.disabled())
    assert any(r.name == "prismq_queue.web" and r.levelno == logging.WARNING and "DISABLED" in r.getMessage() for r in caplog.records)
    with TestClient(app) as c:
        assert c.post(api("/queue/enqueue"), json={"type": "a"}).status_code == 201
        assert c.post(api("/queue/clear")).status_code == 200
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="prismq_queue.web"):
        web.create_app(queue, auth=AUTH)
    assert not [r for r in caplog.records if r.name == "prismq_queue.web"]


# ====================================================================== errors, mounting, schema
def test_internal_error_is_a_generic_500_without_trace_or_sql(queue, caplog):
    def explode(*a, **k):
        raise RuntimeError('SELECT secret FROM tasks WHERE id = 1 -- near "x": syntax error')

    app = FastAPI()
    app.include_router(web.create_router(QueueProxy(queue, stats=explode), auth=AUTH))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR, logger="prismq_queue.web"):
        r = c.get("/queue/stats", headers={**ALL, "X-Request-ID": "req-42"})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error", "request_id": "req-42"}
    assert r.headers["x-request-id"] == "req-42"
    for leak in ("SELECT", "Traceback", "RuntimeError", "secret", "File "):
        assert leak not in r.text
    [rec] = [x for x in caplog.records if x.name == "prismq_queue.web" and x.levelno == logging.ERROR]
    assert "req-42" in rec.getMessage() and rec.exc_info and "SELECT secret" in str(rec.exc_info[1])


def test_busy_database_is_503_not_500(queue):
    def busy(*a, **k):
        raise DatabaseBusy("database is busy: database is locked (another process held the write lock for longer than busy_timeout)")

    with TestClient(web.create_app(QueueProxy(queue, stats=busy), auth=AUTH)) as c:
        r = c.get(api("/queue/stats"), headers=ALL)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "locked" not in r.text and r.json()["detail"].startswith("the queue database is busy")


def test_router_mounts_under_any_prefix_and_ignores_the_apps_handlers(queue):
    app = FastAPI()

    @app.exception_handler(Exception)
    async def _weird(request, exc):  # the host app's own handler: the router does not depend on it
        return JSONResponse({"host": "handler"}, status_code=418)

    app.include_router(web.create_router(queue, auth=AUTH), prefix="/backend/v2/jobs")
    with TestClient(app) as c:
        r = c.post("/backend/v2/jobs/queue/enqueue", json={"type": "a"}, headers=ALL)
        assert r.status_code == 201
        assert c.get(f"/backend/v2/jobs/queue/tasks/{r.json()['task_id']}", headers=ALL).status_code == 200
        assert c.get("/backend/v2/jobs/queue/tasks/999", headers=ALL).status_code == 404
        assert c.get("/backend/v2/jobs/queue/stats").status_code == 401
        assert c.get("/backend/v2/jobs/queue/tasks?limit=0", headers=ALL).status_code == 422
        assert c.get("/queue/stats", headers=ALL).status_code == 404


def test_request_id_is_echoed_or_made(client):
    r = client.get(api("/queue/stats"), headers={**ALL, "X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = client.get(api("/queue/stats"), headers={**ALL, "X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32


def test_openapi_has_response_models_errors_and_security(client):
    spec = client.get("/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    ops = [(p, m, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(ops) >= 17
    for path, method, op in ops:
        ok = op["responses"].get("200") or op["responses"].get("201")
        assert ok, (path, method)
        content = ok.get("content", {})
        if path.endswith("/metrics"):
            assert any(ct.startswith("text/plain") for ct in content)
            continue
        if path.endswith("/events"):
            assert "text/event-stream" in content
            continue
        schema = content["application/json"]["schema"]
        assert "$ref" in schema or schema.get("type") == "array", (path, method, schema)
        for code in ("401", "403", "422", "500"):
            assert code in op["responses"], (path, method, code)
        assert op.get("security"), (path, method)
    schemas = spec["components"]["schemas"]
    for name in ("EnqueueTaskRequest", "EnqueueTaskResponse", "TaskStatusResponse", "QueueStatsResponse",
                 "ProjectQueueStatus", "ProjectItem", "ErrorResponse", "ValidationErrorResponse", "MetricsResponse"):
        assert name in schemas


def test_the_dashboard_page_is_served_at_the_root_without_a_token_and_knows_the_api_prefix(client):
    # The page itself holds no data (it asks for a token, then calls the API), so it needs none.
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/api" in r.text


def test_create_app_with_a_path_opens_and_closes_the_queue(tmp_path):
    path = str(tmp_path / "app.db")
    app = web.create_app(path, auth=AUTH)
    with TestClient(app) as c:
        assert c.post(api("/queue/enqueue"), json={"type": "a"}, headers=ALL).status_code == 201
    assert app.state.queue.closed
    with Queue(path) as q:
        assert q.stats()["total"] == 1


async def test_queue_calls_never_block_the_event_loop(queue):
    import httpx

    spans = []  # (start, end) of each slow call, in its worker thread

    def slow_get(*a, **k):
        started = time.monotonic()
        time.sleep(0.5)  # a long SQLite call, holding its thread (not the loop)
        out = queue.get(*a, **k)
        spans.append((started, time.monotonic()))
        return out

    ids = [queue.enqueue("t") for _ in range(3)]  # three different reads (stats would be shared)
    app = web.create_app(QueueProxy(queue, get=slow_get), auth=AUTH)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/api/queue/tasks", headers=ALL)).status_code == 200  # warm-up

        async def timed(path):
            r = await c.get(path, headers=ALL)
            return r, time.monotonic()

        slow = [asyncio.ensure_future(timed(f"/api/queue/tasks/{i}")) for i in ids]
        await asyncio.sleep(0.05)
        fast, fast_done = await timed("/api/queue/tasks")
        results = await asyncio.gather(*slow)
    # Relative timings only (the machine is noisy): had a slow call run on the loop, the fast
    # request would have waited for it; had they run one after another, their spans would not overlap.
    assert fast.status_code == 200
    assert all(r.status_code == 200 for r, _ in results)
    assert fast_done < min(done for _, done in results), "the fast request waited for a slow one"
    assert len(spans) == 3
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the slow calls did not overlap: {spans}"


def test_import_prismq_queue_does_not_import_fastapi():
    code = (
        "import sys, prismq_queue\n"
        "assert 'fastapi' not in sys.modules and 'prismq_queue.web' not in sys.modules\n"
        "from prismq_queue import web\n"
        "import prismq_queue as p\n"
        "assert p.web is web and 'fastapi' in sys.modules and callable(web.create_router)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_router_thread_pool_runs_calls_off_the_loop_and_passes_errors():
    import threading

    from prismq_queue.web._threads import ThreadPool

    pool = ThreadPool(2, "test-pool")
    assert await pool.run(threading.get_ident) != threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        await pool.run(lambda: 1 / 0)
    slow = asyncio.ensure_future(pool.run(lambda: time.sleep(0.2) or "late"))
    await asyncio.sleep(0.05)
    slow.cancel()  # the caller stops waiting; the call finishes and the pool goes on
    results = await asyncio.gather(*[pool.run(lambda i=i: i) for i in range(50)])
    assert results == list(range(50)) and len(pool._threads) <= 2
    pool.shutdown()
    with pytest.raises(RuntimeError):
        await pool.run(lambda: None)


def test_concurrent_misses_of_the_stats_cache_count_once(queue):
    # When the cached stats expire under load, the requests that arrive while they are being
    # recounted wait for that one count instead of each starting another.
    import asyncio
    import threading

    import httpx

    calls, gate = [], threading.Event()

    def slow_stats(*a, **k):
        calls.append(1)
        gate.wait(30)
        return queue.stats(*a, **k)

    app = FastAPI()
    app.include_router(web.create_router(QueueProxy(queue, stats=slow_stats), auth=AUTH, cache_ttl=60))

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            pending = [asyncio.ensure_future(c.get("/queue/stats", headers=ALL)) for _ in range(6)]
            while not calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # let the other five arrive and miss too
            gate.set()
            return await asyncio.gather(*pending)

    queue.enqueue("a")
    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 6
    assert len({r.text for r in responses}) == 1 and responses[0].json()["queued_tasks"] == 1
    assert len(calls) == 1
