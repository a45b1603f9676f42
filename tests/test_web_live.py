"""Live events of the REST API: the WebSocket (authentication, refusals, a progress event made by
a worker in another process) and the Server-Sent Events fallback over a real uvicorn server."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from prismq_queue import web  # noqa: E402
import web_helpers  # noqa: E402

AUTH = web.Auth(
    tokens={
        "reader": web.Token(scopes={"read"}),
        "writer": web.Token(scopes={"write"}),
        "p1": web.Token(scopes={"read", "write"}, projects={"p1"}),
        "all": web.Token(scopes={"read", "write", "admin"}),
    }
)
ALL = {"Authorization": "Bearer all"}


@pytest.fixture
def client(queue):
    with TestClient(web.create_app(queue, auth=AUTH, events_interval=0.2)) as c:
        yield c


def receive_until(ws, event, limit=50):
    seen = []
    for _ in range(limit):
        m = ws.receive_json()
        seen.append(m)
        if m["event"] == event:
            return m, seen
    raise AssertionError(f"no {event} in {seen}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["query", "first_message", "header"])
def test_websocket_authenticates_and_sends_queue_updates(client, queue, how):
    url = "/api/projects/p1/queue/ws"
    headers = {}
    if how == "query":
        url += "?token=p1"
    elif how == "header":
        headers = {"Authorization": "Bearer p1"}
    with client.websocket_connect(url, headers=headers) as ws:
        if how == "first_message":
            ws.send_text(json.dumps({"token": "p1"}))
        ready = ws.receive_json()
        assert ready == {"event": "ready", "data": {"project_id": "p1", "events": ["queue:updated:p1", "task:step:progress:p1"]}}
        other = queue.enqueue("other-project", queue="project:p2")
        tid = client.post("/api/projects/p1/queue/add", json={"type": "job"}, headers=ALL).json()["item_id"]
        msg, seen = receive_until(ws, "queue:updated:p1")
        assert msg["data"]["reason"] == "task.created" and msg["data"]["status"] == "queued"
        assert msg["data"]["task_id"] == tid and msg["data"]["project_id"] == "p1" and msg["data"]["type"] == "job"
        while msg["data"]["reason"] != "queue.updated":
            msg = ws.receive_json()
            seen.append(msg)
        assert msg["data"]["counts"] == {"queued": 1, "running": 0}
        assert all(m["data"].get("project_id") == "p1" and m["data"].get("task_id") != other for m in seen)


@pytest.mark.timeout(60)
def test_connections_to_a_project_share_the_routers_one_stream_and_leave_it_with_the_last(client, queue):
    feeds = client.app.state.project_feeds
    with client.websocket_connect("/api/projects/p1/queue/ws?token=p1") as a, \
            client.websocket_connect("/api/projects/p1/queue/ws?token=reader") as b:
        assert a.receive_json()["event"] == "ready" and b.receive_json()["event"] == "ready"
        assert feeds.follows("p1") == 2
        # No thread of its own: the monitor's stream (over every queue) feeds the project.
        assert not [t for t in threading.enumerate() if t.name.startswith("prismq-web-events")]
        tid = queue.enqueue("job", queue="project:p1")
        for ws in (a, b):
            msg, _ = receive_until(ws, "queue:updated:p1")
            assert msg["data"]["task_id"] == tid
    deadline = time.monotonic() + 10
    while feeds.follows("p1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert feeds.follows("p1") == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "url, first, code",
    [
        ("/api/projects/p1/queue/ws?token=nope", None, 4401),
        ("/api/projects/p1/queue/ws", "not json", 4401),
        ("/api/projects/p1/queue/ws", json.dumps({"token": "nope"}), 4401),
        ("/api/projects/p2/queue/ws?token=p1", None, 4403),
        ("/api/projects/p1/queue/ws?token=writer", None, 4403),
        ("/api/projects/bad%20id/queue/ws?token=reader", None, 4422),
    ],
)
def test_websocket_refusals_close_with_4401_4403_or_4422(client, url, first, code):
    with client.websocket_connect(url) as ws:
        if first is not None:
            ws.send_text(first)
        err = ws.receive_json()
        assert err["event"] == "error" and err["data"]["status"] == code - 4000
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
        assert e.value.code == code


@pytest.mark.timeout(120)
def test_websocket_receives_progress_from_a_worker_in_another_process(client, queue, db_path):
    with client.websocket_connect("/api/projects/p1/queue/ws?token=reader") as ws:
        assert ws.receive_json()["event"] == "ready"
        r = client.post("/api/projects/p1/queue/add", json={"type": "web.progress", "payload": {"n": 1}}, headers=ALL)
        tid = r.json()["item_id"]
        proc = mp.get_context("spawn").Process(target=web_helpers.run_worker, args=(db_path, "project:p1", 1))
        proc.start()
        try:
            msg, seen = receive_until(ws, "task:step:progress:p1", limit=200)
            assert msg["data"]["task_id"] == tid
            assert msg["data"]["step"] in ("download", "encode") and msg["data"]["progress"] in (40, 80)
            assert msg["data"]["message"] in ("fetching", "encoding")
            # and the status changes made by that process arrive as queue updates
            statuses = {m["data"].get("status") for m in seen if m["event"] == "queue:updated:p1"}
            while "completed" not in statuses:
                m = ws.receive_json()
                if m["event"] == "queue:updated:p1":
                    statuses.add(m["data"]["status"])
        finally:
            proc.join(60)
            if proc.is_alive():
                proc.terminate()
        assert proc.exitcode == 0
        assert queue.get(tid).status == "completed" and queue.get(tid).result == {"ok": True}


# ---------------------------------------------------------------------- SSE over a real server
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(queue):
    import uvicorn

    port = free_port()
    app = web.create_app(queue, auth=AUTH, events_interval=0.2)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)


@pytest.mark.timeout(60)
def test_server_sent_events_fallback(server, queue):
    with httpx.Client(base_url=server, timeout=10) as c:
        assert c.get("/api/projects/p1/queue/events").status_code == 401
        assert c.get("/api/projects/p2/queue/events?token=p1").status_code == 403
        with c.stream("GET", "/api/projects/p1/queue/events?token=p1") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines) == "event: ready"
            assert json.loads(next(lines)[len("data: "):])["project_id"] == "p1"
            tid = queue.enqueue("job", queue="project:p1")
            event = None
            for line in lines:
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event == "queue:updated:p1":
                    data = json.loads(line[len("data: "):])
                    assert data["task_id"] == tid and data["reason"] == "task.created"
                    break
            else:
                raise AssertionError("stream ended")


@pytest.mark.timeout(60)
def test_real_websocket_over_uvicorn(server, queue):
    websockets = pytest.importorskip("websockets.sync.client")
    url = server.replace("http://", "ws://") + "/api/projects/p1/queue/ws"
    with websockets.connect(url) as ws:
        ws.send(json.dumps({"token": "p1"}))
        assert json.loads(ws.recv(timeout=10))["event"] == "ready"
        queue.enqueue("job", queue="project:p1")
        queue.enqueue("job", queue="project:p2")
        m = json.loads(ws.recv(timeout=10))
        assert m["event"] == "queue:updated:p1"
