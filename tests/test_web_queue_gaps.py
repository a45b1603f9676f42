"""Two promises of the older queue API (issue 20), on both backends:

- ``queue:updated:{project_id}`` is sent on every change that reorders a project's queue,
  priority changes included, whether made through the API or by another process;
- ``/queue/stats`` answers a client with the effect of its own writes through the API, while
  everyone else keeps being served from the cache.

``queue_url`` is a temporary SQLite file or a PostgreSQL URL with a schema of the test's own, as in
tests/test_backends.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import Queue, web  # noqa: E402
from web_helpers import QueueProxy  # noqa: E402

AUTH = web.Auth(
    tokens={
        "reader": web.Token(scopes={"read"}),
        "alice": web.Token(scopes={"read", "write"}),
        "bob": web.Token(scopes={"read", "write"}),
    }
)
ALICE = {"Authorization": "Bearer alice"}
BOB = {"Authorization": "Bearer bob"}


@pytest.fixture(params=["sqlite", "postgres"])
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "gaps.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def q(queue_url):
    with Queue(queue_url) as queue:
        yield queue


def receive_until(ws, predicate, limit=300):
    seen = []
    for _ in range(limit):
        m = ws.receive_json()
        seen.append(m)
        if predicate(m):
            return m
    raise AssertionError(f"not received; got {seen}")


def reordered(task_id):
    """A project message saying that ``task_id``, still queued, changed (its place in the queue)."""

    def match(m):
        d = m["data"]
        return d.get("reason") == "task.status" and d.get("task_id") == task_id and d.get("status") == "queued"

    return match


# ---------------------------------------------------------------------- priority changes are events
@pytest.mark.timeout(120)
def test_a_priority_change_sends_queue_updated_through_the_api_and_from_another_process(q, queue_url):
    app = web.create_app(q, auth=AUTH, events_interval=0.2, cache_ttl=0)
    with TestClient(app) as client, client.websocket_connect("/api/projects/p1/queue/ws?token=reader") as ws:
        assert ws.receive_json()["event"] == "ready"
        add = lambda: client.post("/api/projects/p1/queue/add", json={"type": "job"}, headers=ALICE).json()["item_id"]  # noqa: E731
        first, second = add(), add()
        receive_until(ws, lambda m: m["data"].get("reason") == "task.created" and m["data"]["task_id"] == second)

        r = client.put(f"/api/projects/p1/queue/{second}/priority", json={"priority": 1}, headers=ALICE)
        assert r.status_code == 200 and r.json()["position"] == 0  # first in line now
        m = receive_until(ws, reordered(second))
        assert m["event"] == "queue:updated:p1" and m["data"]["project_id"] == "p1"

        # Another process reorders the project: its change reaches this server's subscribers too.
        code = "import sys; from prismq_queue import Queue; Queue(sys.argv[1]).set_priority(int(sys.argv[2]), 1)"
        subprocess.run([sys.executable, "-c", code, queue_url, str(first)], check=True, timeout=60)
        receive_until(ws, reordered(first))
    assert [line.message for line in q.logs(first)] == ["priority changed from 100 to 1 by set_priority()"]


# ---------------------------------------------------------------------- stats see the caller's writes
def stats_total(client, headers):
    r = client.get("/api/queue/stats", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["total_tasks"]


def test_stats_show_the_callers_own_writes_and_the_cache_to_everyone_else(q):
    with TestClient(web.create_app(q, auth=AUTH, cache_ttl=600)) as c:
        assert stats_total(c, ALICE) == 0 and stats_total(c, BOB) == 0
        assert c.post("/api/queue/enqueue", json={"type": "a"}, headers=ALICE).status_code == 201
        assert stats_total(c, BOB) == 0  # not Bob's write: the cached count
        assert stats_total(c, ALICE) == 1  # Alice's own write
        assert stats_total(c, BOB) == 1  # Alice's fresh count serves everyone from then on

        q.enqueue("b")  # outside the API: the cache serves it to all, Alice included
        assert stats_total(c, ALICE) == 1 and stats_total(c, BOB) == 1
        # Any write through the API counts: a project's item, a cancel.
        item = c.post("/api/projects/p1/queue/add", json={"type": "c"}, headers=BOB).json()["item_id"]
        assert stats_total(c, ALICE) == 1 and stats_total(c, BOB) == 3
        assert c.delete(f"/api/projects/p1/queue/{item}", headers=ALICE).json()["cancelled"] is True
        r = c.get("/api/queue/stats", headers=ALICE).json()
        assert (r["total_tasks"], r["cancelled_tasks"]) == (3, 1)


def test_with_authentication_off_a_caller_is_its_address(q):
    app = FastAPI()
    app.include_router(web.create_router(q, auth=web.Auth.disabled(), cache_ttl=600))

    async def main():
        def client(host):
            transport = httpx.ASGITransport(app=app, client=(host, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://t")

        async with client("10.0.0.1") as writer, client("10.0.0.2") as other:
            totals = []
            for c in (writer, other):
                totals.append((await c.get("/queue/stats")).json()["total_tasks"])
            assert (await writer.post("/queue/enqueue", json={"type": "a"})).status_code == 201
            for c in (other, writer):
                totals.append((await c.get("/queue/stats")).json()["total_tasks"])
            return totals

    assert asyncio.run(main()) == [0, 0, 0, 1]


def test_a_writer_does_not_take_a_count_that_began_before_its_write(q):
    # Bob's read is being counted when Alice enqueues; Alice's next read must not wait for that
    # count and answer with it (it may not hold her task), but count again.
    calls, gate = [], threading.Event()

    def stats(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            assert gate.wait(60), "the first count was never let go"
        return q.stats(*a, **k)

    app = FastAPI()
    app.include_router(web.create_router(QueueProxy(q, stats=stats), auth=AUTH, cache_ttl=600))

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            bobs = asyncio.ensure_future(c.get("/queue/stats", headers=BOB))
            while not calls:
                await asyncio.sleep(0.01)
            assert (await c.post("/queue/enqueue", json={"type": "a"}, headers=ALICE)).status_code == 201
            alices = await c.get("/queue/stats", headers=ALICE)  # answered while Bob's count still waits
            gate.set()
            return alices, await bobs

    alices, bobs = asyncio.run(main())
    assert alices.json()["total_tasks"] == 1 and bobs.status_code == 200
    assert len(calls) == 2
