"""Live events on both backends (issue 19): ``events.watch`` sync and async, changes made by another
process, the web router's WebSockets and the dashboard's live stream, and two ``serve`` processes
on one PostgreSQL schema where a change made through one reaches a WebSocket client of the other.

``queue_url`` is a temporary SQLite file or a PostgreSQL URL with a schema of the test's own, as in
tests/test_backends.py.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import threading
import time

import pytest

from prismq_queue import Queue, events

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "live.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def q(queue_url):
    with Queue(queue_url) as queue:
        yield queue


def next_matching(stream, predicate, limit=100):
    seen = []
    for ev in stream:
        seen.append((ev.kind, ev.task_id, ev.status))
        if predicate(ev):
            return ev
        assert len(seen) < limit, seen
    raise AssertionError(f"stream ended after {seen}")


# ---------------------------------------------------------------------- events.watch
@pytest.mark.timeout(60)
def test_watch_reports_a_tasks_life_once_per_change(q, queue_url):
    # The changes come through a second handle; tests/test_watch_own_writes.py covers writes
    # through the watched handle itself (a late waiter thread once slept through them).
    with Queue(queue_url) as w:
        before = w.enqueue("old")
        with events.watch(q, interval=0.2, min_gap=0) as stream:
            tid = w.enqueue("job", {"n": 1}, queue="mail")
            ev = next_matching(stream, lambda e: e.kind == "task.created")
            assert (ev.task_id, ev.type, ev.queue, ev.status) == (tid, "job", "mail", "queued")
            [t] = w.claim("w", types=["job"])
            ev = next_matching(stream, lambda e: e.kind == "task.status")
            assert (ev.task_id, ev.status, ev.data["attempts"], ev.data["worker"]) == (tid, "running", 1, "w")
            w.progress(t, 50, step="half", message="going")
            ev = next_matching(stream, lambda e: e.kind == "task.progress")
            assert (ev.task_id, ev.progress, ev.step, ev.message) == (tid, 50, "half", "going")
            w.complete(t, {"ok": True})
            ev = next_matching(stream, lambda e: e.kind == "task.status")
            assert (ev.task_id, ev.status) == (tid, "completed")
            w.cancel(before)
            ev = next_matching(stream, lambda e: e.kind == "task.status")
            assert (ev.task_id, ev.status) == (before, "cancelled")
            up = next_matching(stream, lambda e: e.kind == "queue.updated" and e.queue == "default")
            assert up.data["queued"] == 0


@pytest.mark.timeout(60)
def test_watch_pages_a_burst_and_reports_each_new_task_once(q):
    with events.watch(q, queues=["burst"], interval=0.2, min_gap=0) as stream:
        ids = q.enqueue_many([{"type": "t", "queue": "burst"} for _ in range(2500)])
        q.enqueue("elsewhere")
        created = []
        while len(created) < len(ids):
            ev = next(stream)
            if ev.kind == "task.created":
                created.append(ev.task_id)
        assert created == ids  # in order, each once, nothing from other queues


@pytest.mark.timeout(60)
async def test_async_watch_sees_changes(q):
    async with events.watch(q, interval=0.2, min_gap=0) as stream:
        tid = q.enqueue("job")
        async for ev in stream:
            if ev.kind == "task.created":
                assert ev.task_id == tid
                break
        q.cancel(tid)
        async for ev in stream:
            if ev.kind == "task.status":
                assert (ev.task_id, ev.status) == (tid, "cancelled")
                break


CHILD = """
import sys
from prismq_queue import Queue
with Queue(sys.argv[1]) as q:
    tid = q.enqueue("from.child", queue="child")
    [t] = q.claim("child-worker", queues=["child"])
    q.progress(t, 30, step="one")
    q.complete(t, {"pid": 1})
    print(tid)
"""


@pytest.mark.timeout(120)
def test_watch_sees_changes_made_by_another_process(q, queue_url):
    with events.watch(q, queues=["child"], interval=0.2, min_gap=0) as stream:
        out = subprocess.run([sys.executable, "-c", CHILD, queue_url], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        tid = int(out.stdout)
        ev = next_matching(stream, lambda e: e.kind == "task.created")
        assert (ev.task_id, ev.type) == (tid, "from.child")
        # The process was done before the look: its outcome, once.
        ev = next_matching(stream, lambda e: e.kind == "task.status")
        assert (ev.task_id, ev.status) == (tid, "completed")


@pytest.mark.timeout(60)
def test_two_watchers_in_two_handles_each_see_every_change_once(queue_url):
    with (
        Queue(queue_url) as a,
        Queue(queue_url) as b,
        events.watch(a, interval=0.2, min_gap=0) as sa,
        events.watch(b, interval=0.2, min_gap=0) as sb,
    ):
        ids = [b.enqueue("t") for _ in range(20)] + [a.enqueue("t") for _ in range(20)]
        for stream in (sa, sb):
            created = []
            while len(created) < len(ids):
                ev = next(stream)
                if ev.kind == "task.created":
                    created.append(ev.task_id)
            assert sorted(created) == sorted(ids)


# ---------------------------------------------------------------------- the web router and the dashboard
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import web  # noqa: E402
import web_helpers  # noqa: E402

AUTH = web.Auth(tokens={"reader": web.Token(scopes={"read"}), "all": web.Token(scopes={"read", "write", "admin"})})
ALL = {"Authorization": "Bearer all"}
SHARED = {"Authorization": "Bearer shared-secret"}


@pytest.fixture
def client(q):
    app = web.create_app(q, auth=AUTH, history_interval=0.2, events_interval=0.2, cache_ttl=0)
    with TestClient(app) as c:
        yield c


def receive_until(ws, predicate, limit=300):
    seen = []
    for _ in range(limit):
        m = ws.receive_json()
        seen.append(m)
        if predicate(m):
            return m
    raise AssertionError(f"not received; got {[m['event'] for m in seen]}")


@pytest.mark.timeout(60)
def test_dashboard_live_stream_sends_task_events_and_depths(client, q):
    with client.websocket_connect("/api/queue/ws?token=reader") as ws:
        assert ws.receive_json()["event"] == "ready"
        a = client.post("/api/queue/enqueue", json={"type": "a"}, headers=ALL).json()["task_id"]
        m = receive_until(ws, lambda m: m["event"] == "task.created")
        assert m["data"]["task_id"] == a
        [t] = q.claim("w", types=["a"])
        receive_until(ws, lambda m: m["event"] == "task.status" and m["data"]["status"] == "running")
        q.progress(t, 55, step="half")
        m = receive_until(ws, lambda m: m["event"] == "task.progress")
        assert (m["data"]["task_id"], m["data"]["progress"], m["data"]["step"]) == (a, 55, "half")
        d = receive_until(ws, lambda m: m["event"] == "queue.depth")
        assert d["data"]["running"] == 1


@pytest.mark.timeout(120)
def test_project_websocket_receives_progress_from_a_worker_in_another_process(client, queue_url):
    with client.websocket_connect("/api/projects/p1/queue/ws?token=reader") as ws:
        assert ws.receive_json()["event"] == "ready"
        r = client.post("/api/projects/p1/queue/add", json={"type": "web.progress", "payload": {"n": 1}}, headers=ALL)
        tid = r.json()["item_id"]
        proc = mp.get_context("spawn").Process(target=web_helpers.run_worker, args=(queue_url, "project:p1", 1))
        proc.start()
        try:
            msg = receive_until(ws, lambda m: m["event"] == "task:step:progress:p1")
            assert msg["data"]["task_id"] == tid and msg["data"]["progress"] in (40, 80)
            receive_until(ws, lambda m: m["event"] == "queue:updated:p1" and m["data"].get("status") == "completed")
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
        assert proc.exitcode == 0


# ---------------------------------------------------------------------- two serve processes, one schema
@pytest.mark.timeout(240)
def test_a_change_through_one_serve_reaches_a_websocket_of_another(postgres_url, tmp_path):
    websockets = pytest.importorskip("websockets.sync.client")
    from serve_helpers import Serve

    args = (
        "--db",
        postgres_url,
        "--port",
        0,
        "--workers",
        0,
        "--handlers",
        "worker_handlers:REGISTRY",
        "--token",
        "shared-secret",
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    servers = [Serve(tmp_path / "a", *args), Serve(tmp_path / "b", *args)]
    try:
        a, b = (s.start() for s in servers)
        assert a.base != b.base
        url = b.base.replace("http://", "ws://") + "/api/queue/ws"
        with websockets.connect(url) as ws, httpx.Client(base_url=a.base, timeout=30, headers=SHARED) as http:
            ws.send(json.dumps({"token": "shared-secret"}))
            assert json.loads(ws.recv(timeout=30))["event"] == "ready"

            def until(predicate):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    m = json.loads(ws.recv(timeout=60))
                    if predicate(m):
                        return m
                raise AssertionError("not received")

            tid = http.post("/api/queue/enqueue", json={"type": "far.away"}).json()["task_id"]
            m = until(lambda m: m["event"] == "task.created" and m["data"]["task_id"] == tid)
            assert m["data"]["type"] == "far.away"
            assert http.post(f"/api/queue/tasks/{tid}/cancel").status_code == 200
            until(
                lambda m: (
                    m["event"] == "task.status" and m["data"]["task_id"] == tid and m["data"]["status"] == "cancelled"
                )
            )
    finally:
        for s in servers:
            s.close()
        out = "\n".join(s.output() for s in servers)
        assert "Traceback" not in out, out


def test_a_watcher_thread_and_the_writer_share_nothing_but_the_database(queue_url):
    # A stream in one thread while another thread writes: every created task arrives once.
    with Queue(queue_url) as q, events.watch(q, interval=0.2, min_gap=0) as stream:
        ids: list[int] = []

        def write():
            for _ in range(10):
                ids.extend(q.enqueue_many([{"type": "t"} for _ in range(10)]))

        th = threading.Thread(target=write)
        th.start()
        th.join(30)
        created = []
        while len(created) < 100:
            ev = next(stream)
            if ev.kind == "task.created":
                created.append(ev.task_id)
        assert created == ids
