"""``GET /queue/status`` of the older queue API (issue 20): counts, running tasks, capacity, and each
queued task's position, on both backends, through fastapi's TestClient."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import Queue, web  # noqa: E402

TOKENS = {"r": web.Token(scopes={"read"}), "w": web.Token(scopes={"write"})}
READ = {"Authorization": "Bearer r"}


@pytest.fixture
def queue(queue_url):
    with Queue(queue_url) as q:
        yield q


def client_for(queue, **options):
    app = FastAPI()
    app.include_router(web.create_router(queue, auth=web.Auth(tokens=TOKENS), cache_ttl=0, **options))
    return TestClient(app)


def test_status_gives_counts_running_capacity_and_positions_in_claim_order(queue):
    q = queue
    done = q.enqueue("render", priority=1)
    [t] = q.claim("w-0", limit=1)
    q.complete(t)
    running = q.enqueue("render", priority=1)
    [t] = q.claim("w-1", limit=1)
    assert t.id == running
    # Mixed types: positions count across them, in the order a worker taking the queue claims.
    a = q.enqueue("encode", priority=50)
    b = q.enqueue("render", priority=10)
    c = q.enqueue("upload", priority=50)
    later = q.enqueue("render", priority=100, delay=3600)  # not due: listed last, behind the due ones
    q.enqueue("render", queue="elsewhere")  # another queue: not counted, not listed

    with client_for(q, capacity=4) as client:
        r = client.get("/queue/status", headers=READ)
        assert r.status_code == 200, r.text
        s = r.json()
        assert s["queue"] == "default"
        assert (s["total_tasks"], s["queued_tasks"], s["processing_tasks"], s["completed_tasks"]) == (6, 4, 1, 1)
        assert (s["failed_tasks"], s["cancelled_tasks"], s["scheduled_tasks"]) == (0, 0, 1)
        assert (s["capacity"], s["available_slots"]) == (4, 3)
        assert [(i["task_id"], i["status"], i["locked_by"]) for i in s["running"]] == [(running, "processing", "w-1")]
        assert [(i["task_id"], i["position"]) for i in s["queued"]] == [(b, 0), (a, 1), (c, 2), (later, 3)]
        assert all(i["position"] == q.position(i["task_id"]) for i in s["queued"])
        assert done not in {i["task_id"] for i in s["running"] + s["queued"]}

        # Positions are the claims before each task.
        claimed = [q.claim("w-2", queues=["default"], limit=1)[0].id for _ in range(3)]
        assert claimed == [b, a, c]

        s = client.get("/queue/status?queue=elsewhere&limit=5", headers=READ).json()
        assert (s["queue"], s["queued_tasks"], [i["position"] for i in s["queued"]]) == ("elsewhere", 1, [0])


def test_without_a_capacity_given_it_is_the_live_workers_concurrency(queue):
    q = queue
    with client_for(q) as client:
        s = client.get("/queue/status", headers=READ).json()
        assert (s["capacity"], s["available_slots"], s["total_tasks"], s["queued"], s["running"]) == (
            None,
            None,
            0,
            [],
            [],
        )
        q.heartbeat("all-queues", concurrency=3)
        q.heartbeat("default-only", queues=["default", "mail"], concurrency=2)
        q.heartbeat("elsewhere", queues=["elsewhere"], concurrency=7)
        q.heartbeat("old-build")  # says nothing: counts for nothing
        q.enqueue("render")
        q.claim("all-queues")
        s = client.get("/queue/status", headers=READ).json()
        assert (s["capacity"], s["available_slots"], s["processing_tasks"]) == (5, 4, 1)
        s = client.get("/queue/status?queue=elsewhere", headers=READ).json()
        assert (s["capacity"], s["available_slots"]) == (10, 10)
    said = {w.id: w.concurrency for w in q.workers()}
    assert said == {"all-queues": 3, "default-only": 2, "elsewhere": 7, "old-build": None}


def test_a_worker_reports_its_concurrency(queue):
    import threading
    import time

    from prismq_queue.worker import Worker
    from worker_handlers import Registry

    w = Worker(queue, Registry({"x": lambda ctx: None}), worker_id="w-1", concurrency=4, poll_interval=0.05)
    seen = []

    def stop_once_seen():
        while not seen:
            seen.extend(x.concurrency for x in queue.workers() if x.id == "w-1")
            time.sleep(0.01)
        w.stop()

    threading.Thread(target=stop_once_seen, daemon=True).start()
    w.run(install_signal_handlers=False)
    assert seen[0] == 4


def test_refusals(queue):
    with client_for(queue) as client:
        assert client.get("/queue/status").status_code == 401
        assert client.get("/queue/status", headers={"Authorization": "Bearer w"}).status_code == 403
        for bad in ("limit=0", "limit=1001", "queue="):
            assert client.get(f"/queue/status?{bad}", headers=READ).status_code == 422, bad
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="capacity must be an integer >= 1 or None"):
            web.create_router(queue, auth=web.Auth(tokens=TOKENS), capacity=bad)


def test_a_deep_backlog_asks_the_core_for_positions(queue, monkeypatch):
    from prismq_queue.web import _router

    ids = [queue.enqueue(["a", "b"][i % 2], priority=10 - i) for i in range(6)]
    monkeypatch.setattr(_router, "MAX_QUEUED_SCAN", 3)  # fewer than are queued: read 3, ask the core
    with client_for(queue) as client:
        s = client.get("/queue/status", headers=READ).json()
    shown = {i["task_id"]: i["position"] for i in s["queued"]}
    assert len(shown) == 3 and shown == {t: queue.position(t) for t in shown}
    assert sorted(shown.values()) == [3, 4, 5]  # the 3 oldest ids are the least urgent here
    assert set(shown) == set(ids[:3])
