"""The dashboard over HTTP: the page and its static files, and the endpoints it reads (history,
breakdown, failures, search, workers' current tasks, the live stream over every queue), each with
its access rules and its answers to bad input. The page itself runs in a real browser in
test_dashboard_browser.py."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocketDisconnect  # noqa: E402

from conftest import snapshot  # noqa: E402
from prismq_queue import Queue, web  # noqa: E402

TOKENS = {
    "all": web.Token(scopes={"read", "write", "admin"}),
    "reader": web.Token(scopes={"read"}),
    "writer": web.Token(scopes={"write"}),
    "p1": web.Token(scopes={"read", "write"}, projects={"p1"}),
}
AUTH = web.Auth(tokens=TOKENS)
ALL = {"Authorization": "Bearer all"}
READER = {"Authorization": "Bearer reader"}
STATIC = Path(web.__file__).resolve().parent / "static"


@pytest.fixture
def client(queue):
    app = web.create_app(queue, auth=AUTH, history_interval=0.2, events_interval=0.2, cache_ttl=0)
    with TestClient(app) as c:
        yield c


def wait_until(predicate, seconds=30.0, what="the condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def dead_letter(q, type_="a", error="no luck", **kw):
    tid = q.enqueue(type_, max_attempts=1, **kw)
    [t] = q.claim("w-test", types=[type_])
    assert t.id == tid
    q.fail(t, error)
    return tid


# ====================================================================== the page and its files
def test_page_is_public_and_served_with_a_strict_content_security_policy(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert '<meta name="prismq-api" content="/api">' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-content-type-options"] == "nosniff"
    # every file the page and its modules load is served, with a type browsers accept
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', r.text)
    assert {"static/js/main.js", "static/dashboard.css", "static/vendor/uplot/uPlot.iife.min.js"} <= set(assets)
    for js in STATIC.glob("js/*.js"):
        for module in re.findall(r'from "\./([a-z]+\.js)"', js.read_text(encoding="utf-8")):
            assets.append(f"static/js/{module}")
    for path in set(assets):
        a = client.get("/" + path)
        assert a.status_code == 200, path
        kind = a.headers["content-type"]
        if path.endswith(".js"):
            assert kind.startswith("text/javascript"), (path, kind)
        elif path.endswith(".css"):
            assert kind.startswith("text/css"), (path, kind)
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/vendor/uplot/LICENSE").status_code == 200


def test_page_follows_the_api_prefix_and_html_escapes_it(queue):
    with TestClient(web.create_app(queue, auth=AUTH, prefix="/v1")) as c:
        assert '<meta name="prismq-api" content="/v1">' in c.get("/").text
        assert c.get("/v1/queue/history", headers=ALL).status_code == 200
    with TestClient(web.create_app(queue, auth=AUTH, prefix='/a"b')) as c:
        assert 'content="/a&quot;b"' in c.get("/").text


def test_scripts_insert_no_markup():
    # User data (payloads, errors, step names) reaches the DOM as text only.
    for js in STATIC.glob("js/*.js"):
        text = js.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (js.name, sink)


def test_vendored_chart_library_is_pinned_with_its_license():
    vendor = STATIC / "vendor" / "uplot"
    assert "MIT License" in (vendor / "LICENSE").read_text(encoding="utf-8")
    version = re.search(r"uPlot (\d+\.\d+\.\d+)", (vendor / "README.md").read_text(encoding="utf-8")).group(1)
    assert f"(v{version})" in (vendor / "uPlot.iife.min.js").read_text(encoding="utf-8")[:200]


# ====================================================================== access control
NEW_READS = ["/queue/history", "/queue/breakdown", "/queue/failures", "/queue/search?q=1"]


@pytest.mark.parametrize("path", NEW_READS)
def test_new_endpoints_need_a_read_token_for_every_project(client, path):
    r = client.get("/api" + path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/api" + path, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api" + path, headers={"Authorization": "Bearer writer"}).status_code == 403
    assert client.get("/api" + path, headers={"Authorization": "Bearer p1"}).status_code == 403  # shows every project
    assert client.get("/api" + path, headers=READER).status_code == 200


def test_auth_disabled_needs_no_token(queue):
    with TestClient(web.create_app(queue, auth=web.Auth.disabled())) as c:
        for path in NEW_READS + ["/queue/workers", "/queue/dead-letters"]:
            assert c.get("/api" + path).status_code == 200, path


def test_retry_needs_write_and_a_refusal_changes_nothing(client, queue):
    tid = dead_letter(queue)
    before = snapshot(queue)
    r = client.post(f"/api/queue/dead-letters/{tid}/retry", headers=READER)
    assert r.status_code == 403 and "write" in r.json()["detail"]
    assert snapshot(queue) == before
    r = client.post(f"/api/queue/dead-letters/{tid}/retry", headers=ALL)
    assert r.status_code == 200 and queue.get(tid).status == "queued"


# ====================================================================== history
def test_history_keeps_samples_and_filters_by_time(client, queue):
    queue.enqueue("a")
    queue.enqueue("a", delay=3600)
    body = wait_until(
        lambda: (b := client.get("/api/queue/history", headers=READER).json()) and len(b["samples"]) >= 3 and b,
        what="three depth samples",
    )
    assert body["interval"] == 0.2 and body["size"] == 720 and body["started_at"] <= body["samples"][0]["at"]
    last = body["samples"][-1]
    assert (last["queued"], last["scheduled"], last["running"], last["total"]) == (2, 1, 0, 2)
    ats = [s["at"] for s in body["samples"]]
    assert ats == sorted(ats)
    later = client.get(f"/api/queue/history?since={ats[-2]}", headers=READER).json()["samples"]
    assert later and all(s["at"] > ats[-2] for s in later)


@pytest.mark.parametrize("query", ["since=-1", "since=soon"])
def test_history_bad_input_is_422(client, query):
    r = client.get(f"/api/queue/history?{query}", headers=READER)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "since"]


def test_history_ring_is_bounded(queue):
    with TestClient(web.create_app(queue, auth=AUTH, history_interval=0.05, history_size=3)) as c:
        def samples():
            return c.get("/api/queue/history", headers=READER).json()["samples"]

        first = wait_until(samples, what="a first sample")[0]["at"]
        # once the oldest sample is gone, the ring went round: it holds `history_size` samples
        body = wait_until(lambda: (s := samples()) and s[0]["at"] > first and s, what="the ring going round")
        assert len(body) == 3


@pytest.mark.parametrize("option", [{"history_interval": 0}, {"history_size": 1}, {"history_interval": "5"}])
def test_create_app_refuses_bad_history_options(queue, option):
    with pytest.raises(ValueError):
        web.create_app(queue, auth=AUTH, **option)


# ====================================================================== breakdown
def test_breakdown_counts_by_status_per_queue_and_type(client, queue):
    queue.enqueue("resize", queue="media")
    queue.enqueue("resize", queue="media", delay=3600)
    queue.enqueue("encode", queue="media")
    [running] = queue.claim("w", types=["encode"])
    dead_letter(queue, "bill", queue="billing")
    dead_letter(queue, "bill", queue="billing")
    flaky = queue.enqueue("send", queue="emails")
    queue.cancel(queue.enqueue("send", queue="emails"))
    [t] = queue.claim("w", types=["send"])
    assert t.id == flaky
    queue.fail(t, "try again")  # back in the queue with an error, after a backoff: retrying
    queue.enqueue("send", queue="emails")
    body = client.get("/api/queue/breakdown", headers=READER).json()
    types = {(r["queue"], r["type"]): r for r in body["types"]}
    assert {k: (r["queued"], r["retrying"], r["running"], r["failed"], r["cancelled"]) for k, r in types.items()} == {
        ("billing", "bill"): (0, 0, 0, 2, 0),
        ("emails", "send"): (2, 1, 0, 0, 1),
        ("media", "encode"): (0, 0, 1, 0, 0),
        ("media", "resize"): (2, 0, 0, 0, 0),
    }
    queues = {r["queue"]: r for r in body["queues"]}
    assert list(queues) == ["billing", "emails", "media"] and all(r["type"] is None for r in body["queues"])
    assert (queues["media"]["queued"], queues["media"]["running"]) == (2, 1)
    t = body["totals"]
    assert (t["queued"], t["scheduled"], t["running"], t["retrying"], t["failed"], t["cancelled"], t["total"]) == (4, 2, 1, 1, 2, 1, 8)
    assert body["finished_scan_capped"] is False and body["finished_scan_limit"] >= 1000

    # outcomes since the server started come from its event stream
    queue.complete(running, {"ok": 1})
    body = wait_until(
        lambda: (b := client.get("/api/queue/breakdown", headers=READER).json())
        # the lane may be absent for a moment: nothing of it is active any more and the
        # completion is not yet seen
        and {(r["queue"], r["type"]): r for r in b["types"]}.get(("media", "encode"), {}).get("since_start", {}).get("completed")
        == 1
        and b,
        what="the completion counted since start",
    )
    assert {r["queue"]: r for r in body["queues"]}["media"]["since_start"]["completed"] == 1
    assert body["totals"]["completed"] == 1


# ====================================================================== failures
def test_failures_list_retrying_attempts_and_dead_letters_with_the_task_now(queue):
    old = dead_letter(queue, "old", error="before the server")  # known from the database only
    with TestClient(web.create_app(queue, auth=AUTH, events_interval=0.2)) as client:
        # the monitor watches from its start: wait until it runs
        wait_until(lambda: client.get("/api/queue/history", headers=READER).json()["samples"], what="the monitor")
        tid = queue.enqueue("flaky", max_attempts=3)
        [t] = queue.claim("w-9", types=["flaky"])
        queue.fail(t, "ConnectionError: upstream <b>down</b>")
        body = wait_until(
            lambda: (b := client.get("/api/queue/failures", headers=READER).json()) and len(b["items"]) == 2 and b,
            what="the failed attempt in /queue/failures",
        )
        first, second = body["items"]
        assert first["task"]["id"] == tid and first["task"]["status"] == "queued" and first["attempts"] == 1
        assert first["error"] == "ConnectionError: upstream <b>down</b>" and first["worker"] == "w-9"
        assert second["task"]["id"] == old and second["task"]["status"] == "failed" and second["error"] == "before the server"
        assert body["since"] is not None
        assert [i["task"]["id"] for i in client.get("/api/queue/failures?limit=1", headers=READER).json()["items"]] == [tid]

        # a dead letter known only from the database leaves the list once retried; a failed
        # attempt the server saw stays, with the task's status now
        assert client.post(f"/api/queue/dead-letters/{old}/retry", headers=ALL).status_code == 200
        items = client.get("/api/queue/failures", headers=READER).json()["items"]
        assert [(i["task"]["id"], i["task"]["status"]) for i in items] == [(tid, "queued")]


@pytest.mark.parametrize("limit", ["0", "201", "x"])
def test_failures_bad_limit_is_422(client, limit):
    r = client.get(f"/api/queue/failures?limit={limit}", headers=READER)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


# ====================================================================== search
def test_search_by_id_and_by_idempotency_key_with_logs(client, queue):
    tid = queue.enqueue("report", {"month": "2026-10"}, idempotency_key="report-oct")
    queue.log(tid, "info", "made by the test", {"n": 1})
    for q in (str(tid), f"#{tid}", f"  {tid} "):
        body = client.get("/api/queue/search", params={"q": q}, headers=READER).json()
        [m] = body["matches"]
        assert m["matched_by"] == "id" and m["task"]["id"] == tid and m["task"]["payload"] == {"month": "2026-10"}
        assert [(lg["level"], lg["message"], lg["details"]) for lg in m["logs"]] == [("info", "made by the test", {"n": 1})]
    [m] = client.get("/api/queue/search?q=report-oct", headers=READER).json()["matches"]
    assert m["matched_by"] == "idempotency_key" and m["task"]["id"] == tid and "lease_token" not in m["task"]
    # a key that reads like another task's id finds both
    other = queue.enqueue("x", idempotency_key=str(tid))
    body = client.get(f"/api/queue/search?q={tid}", headers=READER).json()
    assert [(m["matched_by"], m["task"]["id"]) for m in body["matches"]] == [("id", tid), ("idempotency_key", other)]
    assert client.get("/api/queue/search?q=nothing-here", headers=READER).json() == {"query": "nothing-here", "matches": []}
    assert client.get("/api/queue/search?q=99999999", headers=READER).json()["matches"] == []


@pytest.mark.parametrize("params", [{}, {"q": ""}, {"q": "   "}, {"q": "k" * 201}])
def test_search_bad_input_is_422(client, params):
    r = client.get("/api/queue/search", params=params, headers=READER)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "q"]


# ====================================================================== workers
def test_workers_list_their_current_tasks(client, queue):
    queue.heartbeat("w-a", host="h1", pid=1)
    queue.heartbeat("w-b", host="h2", pid=2)
    queue.enqueue("a", queue="q1")
    queue.enqueue("b", queue="q2")
    [ta] = queue.claim("w-a", types=["a"])
    queue.progress(ta, 30, step="one", message="m")
    body = client.get("/api/queue/workers", headers=READER).json()
    by_id = {w["id"]: w for w in body["workers"]}
    [current] = by_id["w-a"]["current_tasks"]
    assert (current["id"], current["type"], current["queue"], current["progress"], current["step"], current["message"]) == (
        ta.id, "a", "q1", 30, "one", "m",
    )
    assert current["started_at"] is not None
    assert by_id["w-b"]["current_tasks"] == []


# ====================================================================== the live stream over every queue
def receive_until(ws, predicate, limit=200):
    seen = []
    for _ in range(limit):
        m = ws.receive_json()
        seen.append(m)
        if predicate(m):
            return m
    raise AssertionError(f"not received; got {[m['event'] for m in seen]}")


@pytest.mark.timeout(60)
def test_global_websocket_sends_every_queue_events_and_depth_samples(client, queue):
    with client.websocket_connect("/api/queue/ws") as ws:
        ws.send_text(json.dumps({"token": "reader"}))
        ready = ws.receive_json()
        assert ready["event"] == "ready" and "queue.depth" in ready["data"]["events"]
        assert ready["data"]["history_interval"] == 0.2
        a = queue.enqueue("a", queue="one")
        b = queue.enqueue("b", queue="project:p2")
        created = []
        while set(created) != {a, b}:  # any queue, projects included
            m = receive_until(ws, lambda m: m["event"] == "task.created")
            created.append(m["data"]["task_id"])
        [t] = queue.claim("w", types=["a"])
        # (a claim and a progress report between two looks would collapse into one task.status)
        receive_until(ws, lambda m: m["event"] == "task.status" and m["data"]["status"] == "running")
        queue.progress(t, 55, step="half")
        m = receive_until(ws, lambda m: m["event"] == "task.progress")
        assert (m["data"]["task_id"], m["data"]["progress"], m["data"]["step"], m["data"]["queue"]) == (a, 55, "half", "one")
        d = receive_until(ws, lambda m: m["event"] == "queue.depth")
        assert set(d["data"]) >= {"at", "queued", "running", "failed", "completed", "scheduled", "cancelled", "total"}
        ws.send_text(json.dumps({"type": "ping"}))
        receive_until(ws, lambda m: m["event"] == "pong")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "url, first, code",
    [
        ("/api/queue/ws", json.dumps({"token": "nope"}), 4401),
        ("/api/queue/ws", "not json", 4401),
        ("/api/queue/ws?token=writer", None, 4403),
        ("/api/queue/ws?token=p1", None, 4403),  # restricted to a project: this stream shows them all
    ],
)
def test_global_websocket_refusals(client, url, first, code):
    with client.websocket_connect(url) as ws:
        if first is not None:
            ws.send_text(first)
        err = ws.receive_json()
        assert err["event"] == "error" and err["data"]["status"] == code - 4000
        with pytest.raises(WebSocketDisconnect) as e:
            ws.receive_json()
        assert e.value.code == code


def test_global_sse_refusals(client):
    assert client.get("/api/queue/events").status_code == 401
    assert client.get("/api/queue/events?token=writer").status_code == 403
    assert client.get("/api/queue/events", headers={"Authorization": "Bearer p1"}).status_code == 403


@pytest.mark.timeout(60)
def test_global_sse_over_a_real_server(queue):
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = web.create_app(queue, auth=AUTH, events_interval=0.2)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    try:
        wait_until(lambda: srv.started, what="the server start")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
            with c.stream("GET", "/api/queue/events?token=reader") as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                lines = r.iter_lines()
                assert next(lines) == "event: ready"
                tid = queue.enqueue("job", queue="anywhere")
                event = None
                for line in lines:
                    if line.startswith("event: "):
                        event = line[len("event: "):]
                    elif line.startswith("data: ") and event == "task.created":
                        data = json.loads(line[len("data: "):])
                        assert data["task_id"] == tid and data["queue"] == "anywhere"
                        break
                else:
                    raise AssertionError("stream ended")
    finally:
        srv.should_exit = True
        th.join(10)


def test_app_stops_its_monitor_before_closing_its_queue(tmp_path):
    def monitor_threads():
        names = ("prismq-web-history", "prismq-web-monitor")
        return {t for t in threading.enumerate() if t.name in names and t.is_alive()}

    # By identity: another test's monitor may still be winding down while this one runs.
    before = monitor_threads()
    path = str(tmp_path / "app.db")
    app = web.create_app(path, auth=AUTH, history_interval=0.1)
    with TestClient(app) as c:
        ours = monitor_threads() - before
        assert len(ours) == 2
        assert c.get("/api/queue/history", headers=READER).status_code == 200
    assert app.state.queue.closed
    assert not any(t.is_alive() for t in ours)
    with Queue(path) as q:
        assert q.stats()["total"] == 0
