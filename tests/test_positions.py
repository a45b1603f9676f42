"""Positions across types (issue 20): ``Queue.position`` and a project's item positions count every
queued task of the queue in the order a worker taking every type claims them, on both backends.
Before, they counted only tasks of the same type, so a mixed project showed 0, 0, 0, 1."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import Queue, web  # noqa: E402

AUTH = web.Auth(tokens={"t": web.Token(scopes={"read", "write"})})
HEADERS = {"Authorization": "Bearer t"}


@pytest.fixture
def queue(queue_url):
    with Queue(queue_url) as q:
        yield q


@pytest.fixture
def client(queue):
    app = FastAPI()
    app.include_router(web.create_router(queue, auth=AUTH, cache_ttl=0))
    with TestClient(app) as c:
        yield c


def claim_order(q, **kw):
    out = []
    while got := q.claim("w", limit=1, **kw):
        out.append(got[0].id)
    return out


@pytest.mark.parametrize("strategy", ["priority", "fifo", "lifo", "weighted_random"])
def test_position_counts_every_type_of_the_queue_in_claim_order(queue, strategy):
    q = queue
    ids = [
        q.enqueue(
            ["render", "encode", "upload"][i % 3],
            {"i": i},
            priority=[5, 1, 50, 5, 900][i % 5],
            requires={"gpu": True} if i % 4 == 1 else None,
        )
        for i in range(24)
    ]
    q.enqueue("render", queue="elsewhere", priority=1)  # another queue is never ahead
    positions = {i: q.position(i, strategy=strategy) for i in ids}
    order = claim_order(q, strategy=strategy, queues=["default"], capabilities={"gpu": True})
    assert sorted(order) == sorted(ids)
    # The n-th task claimed had n claims before it: positions are 0..23 across the three types.
    assert [positions[i] for i in order] == list(range(len(ids)))


def test_a_mixed_project_numbers_its_items_in_claim_order(client, queue, monkeypatch):
    # Claim order 1..4 alternates types; each item's position is the claims before it.
    adds = [("render", 10), ("encode", 20), ("render", 30), ("encode", 40)]
    ids = []
    for kind, prio in adds:
        r = client.post("/projects/mix/queue/add", json={"type": kind, "priority": prio}, headers=HEADERS)
        assert r.status_code == 201, r.text
        assert r.json()["position"] == len(ids)  # each new item queues behind the earlier ones
        ids.append(r.json()["item_id"])
    status = client.get("/projects/mix/queue/status", headers=HEADERS).json()
    shown = [(i["item_id"], i["position"]) for i in status["items"]]
    assert shown == [(ids[0], 0), (ids[1], 1), (ids[2], 2), (ids[3], 3)]
    assert [queue.position(i) for i in ids] == [0, 1, 2, 3]
    assert claim_order(queue, queues=["project:mix"]) == ids  # what the positions promised

    # The same numbers when the backlog is deeper than the status endpoint reads at once, so
    # positions come from the core one by one.
    ids = [
        client.post("/projects/mix/queue/add", json={"type": kind, "priority": prio}, headers=HEADERS).json()["item_id"]
        for kind, prio in adds
    ]
    from prismq_queue.web import _router

    monkeypatch.setattr(_router, "MAX_QUEUED_SCAN", 2)
    status = client.get("/projects/mix/queue/status", headers=HEADERS).json()
    queued = [(i["item_id"], i["position"]) for i in status["items"] if i["status"] == "queued"]
    assert queued == [(ids[0], 0), (ids[1], 1)]  # the first 2 read, numbered by the core
