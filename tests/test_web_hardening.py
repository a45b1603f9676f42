"""The web server against abuse (issue 15, points 7 to 12): bodies refused by size before they
are read, slow and idle clients dropped, idle floods that leave real requests alone, one change
feed for every project stream, idempotency keys that stay inside their project, tokens kept out
of every log line, and every REST field bounded to what the core accepts (422, never 500).

Most of it runs against a real ``prismq-queue serve`` process, talked to over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
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
from serve_helpers import Lines, Serve, env, run_serve, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(180)

AUTH = web.Auth(
    tokens={
        "all": web.Token(scopes={"read", "write", "admin"}),
        "p1": web.Token(scopes={"read", "write"}, projects={"p1"}),
        "p2": web.Token(scopes={"read", "write"}, projects={"p2"}),
    }
)
ALL = {"Authorization": "Bearer all"}
P1 = {"Authorization": "Bearer p1"}
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="sets the server's file descriptor limit (POSIX rlimit)")


@pytest.fixture
def client(queue):
    with TestClient(web.create_app(queue, auth=AUTH)) as c:
        yield c


@pytest.fixture
def serve_in(tmp_path):
    started = []

    def start(*args, serve_class=Serve):
        s = serve_class(tmp_path, "--db", tmp_path / "q.db", "--port", 0, "--workers", 0, *args)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.close()


def rss_bytes(pid):
    """The process's resident memory (Linux), or None where /proc is not there."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def host_port(base):
    host, port = base.replace("http://", "").rsplit(":", 1)
    return host, int(port)


def read_response(sock, timeout=15.0):
    """Bytes from ``sock`` until the server closes it or a full response head and body arrived."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return data
        if not chunk:
            return data
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                return data


# ============================================================ 7. bodies refused by size
def test_a_declared_oversized_body_is_413_before_any_of_it_is_read(tmp_path, serve_in):
    s = serve_in()
    with socket.create_connection(host_port(s.base)) as sock:
        sock.sendall(b"POST /api/queue/enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.token.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n")
        # Nothing of the 200 MB is sent: the answer comes from the header alone.
        reply = read_response(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["detail"] == "the request body is larger than 1114112 bytes"
    with Queue(tmp_path / "q.db") as q:
        assert q.stats()["total"] == 0


def test_a_request_refused_before_its_body_is_read_closes_the_connection(serve_in):
    s = serve_in()
    with socket.create_connection(host_port(s.base)) as sock:
        # No token: 401 at once, and the server does not stay to drain the 200 MB it announced.
        sock.sendall(b"POST /api/queue/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 209715200\r\n\r\n" + b"x" * 65536)
        reply = read_response(sock)
        sock.settimeout(10)
        assert sock.recv(1) == b""  # closed by the server
    head = reply.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head, reply[:300]


def test_a_chunked_body_past_the_limit_is_413_and_never_held_whole(tmp_path, serve_in):
    s = serve_in("--max-body-size", 65536)
    before = rss_bytes(s.proc.pid)
    chunk = b"x" * 65536
    sent = [0]

    def send_body(sock):
        # 64 MiB, chunked: the server must stop reading at its limit, not hold it all.
        try:
            start = b'{"type": "big", "payload": "'
            sock.sendall(b"%x\r\n%s\r\n" % (len(start), start))
            for _ in range(1024):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent[0] += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed the connection: what we want

    with socket.create_connection(host_port(s.base)) as sock:
        sock.sendall(b"POST /api/queue/enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.token.encode()
                     + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        sender = threading.Thread(target=send_body, args=(sock,), daemon=True)
        sender.start()
        reply = read_response(sock, timeout=60)
        sender.join(60)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"larger than 65536 bytes" in reply
    assert sent[0] < 64 * 1024 * 1024, "the server read the whole body"
    after = rss_bytes(s.proc.pid)
    if before is not None:
        assert after - before < 32 * 1024 * 1024, (before, after)
    with httpx.Client(base_url=s.base, timeout=30) as http:  # and it still serves
        assert http.get("/api/queue/stats", headers=s.headers).json()["total_tasks"] == 0


def test_a_body_within_the_limit_is_read_and_one_past_it_is_413(client, queue):
    small = web.create_app(queue, auth=AUTH, max_body_bytes=200)
    with TestClient(small) as c:
        ok = c.post("/api/queue/enqueue", json={"type": "a", "payload": "x" * 100}, headers=ALL)
        assert ok.status_code == 201
        big = c.post("/api/queue/enqueue", json={"type": "a", "payload": "x" * 300}, headers=ALL)
        assert big.status_code == 413 and big.json()["request_id"] == big.headers["x-request-id"]
        # Streamed without a Content-Length: counted while read.
        streamed = c.post("/api/queue/enqueue", content=iter([b'{"type": "a", "payload": "', b"x" * 300, b'"}']),
                          headers={**ALL, "Content-Type": "application/json"})
        assert streamed.status_code == 413
    assert queue.stats()["total"] == 1
    with pytest.raises(ValueError):
        web.create_router(queue, auth=AUTH, max_body_bytes=0)


# ============================================================ 8. slow and idle clients
def test_a_client_sending_headers_one_byte_per_second_is_dropped(serve_in):
    s = serve_in("--header-timeout", 2)
    request = b"GET /api/queue/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.token.encode() + b"\r\n\r\n"
    started = time.monotonic()
    sent = 0
    reply = b""
    with socket.create_connection(host_port(s.base)) as sock:
        sock.settimeout(1.0)
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                sent += 1
                reply = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            break  # an answer, or the connection closed (b"")
    elapsed = time.monotonic() - started
    assert sent < len(request), "the server waited for the whole slow request"
    assert reply.startswith(b"HTTP/1.1 408") or reply == b"", reply
    assert 1.5 < elapsed < 10, elapsed


def test_a_client_sending_its_body_one_byte_per_second_is_dropped(tmp_path, serve_in):
    s = serve_in("--body-timeout", 2)
    started = time.monotonic()
    closed = False
    with socket.create_connection(host_port(s.base)) as sock:
        sock.sendall(b"POST /api/queue/enqueue HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.token.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n")
        sock.settimeout(1.0)
        for byte in b'{"type": "slow", "payload": "' + b"x" * 29:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except OSError:
                closed = True
                break
    assert closed and time.monotonic() - started < 10
    with Queue(tmp_path / "q.db") as q:
        assert q.stats()["total"] == 0


@pytest.mark.parametrize("flag, value", [("--header-timeout", "0"), ("--max-connections", "0"), ("--ws-auth-timeout", "soon")])
def test_bad_limits_are_usage_errors(tmp_path, flag, value):
    code, out, err = run_serve(tmp_path, "--port", 0, "--workers", 0, flag, value)
    assert code == 2 and flag in err, err
    assert not list(tmp_path.iterdir())  # nothing started, nothing created


class ServeArgv(Serve):
    """serve started as ``python ARGV`` (ARGV ends with the command line after ``-m prismq_queue``),
    read and stopped like ``Serve``."""

    def __init__(self, cwd, argv):
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self.proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=cwd, env=env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, **kwargs)
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)
        self.base = self.token = None


class FdLimitedServe(ServeArgv):
    """serve with a small file descriptor limit, as on a host whose limit is 1024 or 256: the
    room a flood of idle connections would exhaust."""

    NOFILE = 192

    def __init__(self, cwd, *args):
        launcher = (
            "import resource, runpy;"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({self.NOFILE}, {self.NOFILE}));"
            "runpy.run_module('prismq_queue', run_name='__main__', alter_sys=True)"
        )
        super().__init__(cwd, ["-c", launcher, "serve", *args])


async def idle_flood(base, n_tcp, n_ws):
    """Open ``n_tcp`` connections that never send a byte and ``n_ws`` WebSockets that never send
    their token; return them (still open on this side)."""
    import websockets

    host, port = host_port(base)
    tcp = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(n_tcp)), return_exceptions=True)

    async def ws():
        try:
            return await websockets.connect(f"ws://{host}:{port}/api/projects/p{id(object())}/queue/ws", open_timeout=20)
        except Exception as e:  # noqa: BLE001 - refused or closed under the flood: fine
            return e

    sockets = await asyncio.gather(*(ws() for _ in range(n_ws)))
    return [t for t in tcp if not isinstance(t, BaseException)], [w for w in sockets if not isinstance(w, BaseException)]


@POSIX
def test_idle_connections_and_unauthenticated_websockets_never_lock_out_a_real_request(serve_in):
    s = serve_in("--max-connections", 48, "--ws-max-unauthenticated", 8, "--ws-auth-timeout", 30,
                 "--header-timeout", 30, serve_class=FdLimitedServe)

    async def scenario():
        tcp, sockets = await idle_flood(s.base, 150, 150)
        try:
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=s.base, timeout=20) as http:
                r = await http.get("/api/queue/stats", headers=s.headers)
            return r.status_code, time.monotonic() - started, len(tcp), len(sockets)
        finally:
            for _, writer in tcp:
                writer.close()
            await asyncio.gather(*(w.close() for w in sockets), return_exceptions=True)

    status, took, n_tcp, n_ws = asyncio.run(scenario())
    assert status == 200 and took < 10, (status, took)
    assert n_tcp + n_ws > FdLimitedServe.NOFILE  # the flood was larger than what the server could hold


@POSIX
def test_max_connections_is_kept_below_the_open_file_limit(serve_in):
    s = serve_in("--max-connections", 1000, serve_class=FdLimitedServe)  # the hard limit is 192 too
    s.err.wait_for(rf"max_connections lowered from 1000 to {FdLimitedServe.NOFILE - 64}")
    with httpx.Client(base_url=s.base, timeout=30) as http:
        assert http.get("/api/queue/stats", headers=s.headers).status_code == 200


def test_websockets_waiting_for_a_token_are_bounded_in_time_and_number(queue):
    app = web.create_app(queue, auth=AUTH, ws_auth_timeout=1.0, ws_max_unauthenticated=2)
    with TestClient(app) as c:
        gate = app.state.auth_gate
        with c.websocket_connect("/api/queue/ws") as first:
            wait_until(lambda: gate.waiting == 1, timeout=10, what="the first socket waiting")
            second = c.websocket_connect("/api/queue/ws").__enter__()
            wait_until(lambda: gate.waiting == 2, timeout=10, what="the second socket waiting")
            with c.websocket_connect("/api/queue/ws") as third:
                # The longest waiting one makes room for the newest.
                err = first.receive_json()
                assert err["event"] == "error" and err["data"]["status"] == 429
                with pytest.raises(WebSocketDisconnect) as closed:
                    first.receive_json()
                assert closed.value.code == 4429
                third.send_text(json.dumps({"token": "all"}))
                assert third.receive_json()["event"] == "ready"
            # One that says nothing is closed when its time is up.
            err = second.receive_json()
            assert err["data"] == {"status": 401, "detail": "no token within 1 seconds"}
            with pytest.raises(WebSocketDisconnect) as closed:
                second.receive_json()
            assert closed.value.code == 4401
            second.__exit__(None, None, None)
    with pytest.raises(ValueError):
        web.create_router(queue, auth=AUTH, ws_max_unauthenticated=0)


# ============================================================ 9. one change feed for every project stream
@pytest.mark.timeout(120)
def test_websockets_on_a_hundred_projects_add_no_thread_and_each_gets_its_own_events(queue):
    import uvicorn
    import websockets

    app = web.create_app(queue, auth=AUTH, events_interval=0.2)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    runner = threading.Thread(target=srv.run, daemon=True)
    runner.start()
    wait_until(lambda: srv.started, timeout=20, what="uvicorn started")
    projects = [f"proj-{i}" for i in range(100)]

    async def scenario():
        first = await websockets.connect(f"ws://127.0.0.1:{port}/api/projects/warmup/queue/ws?token=all")
        assert json.loads(await first.recv())["event"] == "ready"
        baseline = threading.active_count()
        conns = {}
        for p in projects:
            conns[p] = await websockets.connect(f"ws://127.0.0.1:{port}/api/projects/{p}/queue/ws?token=all")
            assert json.loads(await conns[p].recv())["event"] == "ready"
        grown = threading.active_count() - baseline
        for p in projects[:5]:
            await asyncio.to_thread(queue.enqueue, "job", {"for": p}, queue=f"project:{p}")
        received = {}
        for p in projects[:5]:
            while True:
                m = json.loads(await asyncio.wait_for(conns[p].recv(), 20))
                if m["data"].get("reason") == "task.created":
                    received[p] = m
                    break
        quiet = projects[5]
        try:
            stray = json.loads(await asyncio.wait_for(conns[quiet].recv(), 1.0))
        except asyncio.TimeoutError:
            stray = None
        for w in [first, *conns.values()]:
            await w.close()
        return grown, received, stray

    try:
        grown, received, stray = asyncio.run(scenario())
    finally:
        srv.should_exit = True
        runner.join(20)
    assert grown <= 2, f"{grown} threads for 100 project streams"
    for p, m in received.items():
        assert m["event"] == f"queue:updated:{p}" and m["data"]["project_id"] == p
    assert stray is None, stray


# ============================================================ 10. idempotency keys stay in their project
def test_a_key_squatted_outside_the_project_is_never_returned_and_the_project_gets_its_own(client, queue):
    # Written before keys under 'project:' were reserved (or through the Python API).
    squat = queue.enqueue("steal", {"secret": "of queue default"}, idempotency_key="project:p1:leak")
    r = client.post("/api/projects/p1/queue/add", json={"type": "mine", "payload": {"n": 1}, "idempotency_key": "leak"},
                    headers=P1)
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["item_id"] != squat and item["payload"] == {"n": 1} and item["idempotency_key"] == "leak"
    assert "of queue default" not in r.text
    again = client.post("/api/projects/p1/queue/add", json={"type": "mine", "idempotency_key": "leak"}, headers=P1)
    assert again.status_code == 200 and again.json()["item_id"] == item["item_id"]
    assert queue.get(item["item_id"]).queue == "project:p1"
    assert queue.get(squat).payload == {"secret": "of queue default"}  # untouched


def test_the_general_api_cannot_put_a_key_in_a_projects_namespace(client, queue):
    mine = client.post("/api/projects/p1/queue/add", json={"type": "mine", "idempotency_key": "doc"}, headers=P1).json()
    for key in ("project:p1:doc", "project:p1:new", "project:p1/doc"):
        r = client.post("/api/queue/enqueue", json={"type": "x", "idempotency_key": key}, headers=ALL)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "idempotency_key"], r.text
    assert [t.id for t in queue.list(limit=10)] == [mine["item_id"]]
    # keys elsewhere keep working, and another project's same key is its own item
    assert client.post("/api/queue/enqueue", json={"type": "x", "idempotency_key": "doc"}, headers=ALL).status_code == 201
    other = client.post("/api/projects/p2/queue/add", json={"type": "t", "idempotency_key": "doc"},
                        headers={"Authorization": "Bearer p2"})
    assert other.status_code == 201 and other.json()["item_id"] != mine["item_id"]


def test_a_key_taken_in_both_spellings_outside_the_project_is_409_without_the_task(client, queue):
    for key in ("project:p1:k", "project:p1/k"):
        queue.enqueue("steal", {"secret": key}, idempotency_key=key)
    r = client.post("/api/projects/p1/queue/add", json={"type": "mine", "idempotency_key": "k"}, headers=P1)
    assert r.status_code == 409 and "secret" not in r.text
    assert queue.stats(queue="project:p1")["total"] == 0


# ============================================================ 11. tokens never logged
@pytest.mark.parametrize("verbose", ["-v", "-vv"])
def test_tokens_never_reach_the_log_of_a_real_serve(tmp_path, verbose):
    token = "s3cret-token-value"
    s = ServeArgv(tmp_path, ["-m", "prismq_queue", verbose, "serve", "--db", tmp_path / "q.db", "--port", 0,
                             "--workers", 0, "--token", token])
    try:
        s.start()
        from websockets.sync.client import connect

        with httpx.Client(base_url=s.base, timeout=30) as http:
            assert http.get(f"/api/queue/stats?token={token}").status_code == 401  # not accepted there, yet logged
            with http.stream("GET", f"/api/queue/events?token={token}") as r:
                assert r.status_code == 200
            assert http.get("/api/queue/stats", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        ws_base = s.base.replace("http://", "ws://")
        with connect(f"{ws_base}/api/projects/p1/queue/ws?token={token}") as ws:
            assert json.loads(ws.recv(timeout=20))["event"] == "ready"
        with connect(f"{ws_base}/api/projects/p1/queue/ws") as ws:
            ws.send(json.dumps({"token": token}))
            assert json.loads(ws.recv(timeout=20))["event"] == "ready"
        s.err.wait_for(r"WebSocket /api/projects/p1/queue/ws\?token=\[redacted\]")
        s.err.wait_for(r"GET /api/queue/events\?token=\[redacted\]")
    finally:
        s.close()
    logs = s.err.text()
    assert token not in logs, [line for line in logs.splitlines() if token in line]
    assert "/api/queue/stats?token=[redacted]" in logs


def test_create_app_redacts_tokens_under_uvicorns_own_logging(queue):
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    app = web.create_app(queue, auth=AUTH)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=LOGGING_CONFIG, access_log=True))
    keep = Keep()
    runner = threading.Thread(target=srv.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: srv.started, timeout=20, what="uvicorn started")
        logging.getLogger("uvicorn.access").addHandler(keep)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            http.get("/api/queue/stats?token=all&x=1")
        wait_until(lambda: any("/api/queue/stats" in r for r in records), timeout=10, what="the access line")
    finally:
        logging.getLogger("uvicorn.access").removeHandler(keep)
        srv.should_exit = True
        runner.join(20)
    line = next(r for r in records if "/api/queue/stats" in r)
    assert "token=[redacted]&x=1" in line and "token=all" not in line


def test_redaction_covers_headers_first_messages_and_tracebacks():
    from prismq_queue.web._redact import RedactSecrets

    f = RedactSecrets()
    cases = {
        'GET /x?a=1&token=abc.DEF-1 HTTP/1.1': "GET /x?a=1&token=[redacted] HTTP/1.1",
        "Authorization: Bearer abc": "Authorization: [redacted]",
        "< TEXT '{\"token\": \"abc\"}' [16 bytes]": "< TEXT '{\"token\": \"[redacted]\"}' [16 bytes]",
        "(b'authorization', b'Bearer abc')": "(b'authorization', b'[redacted]')",
        "sent bearer abc": "sent bearer [redacted]",
        "access_token=keep&max_tokens=3": "access_token=keep&max_tokens=3",
    }
    for raw, clean in cases.items():
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (raw,), None)
        assert f.filter(record) and record.getMessage() == clean
    try:
        raise RuntimeError("fetching http://h/?token=abc failed")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    f.filter(record)
    text = logging.Formatter().format(record)
    assert "token=abc" not in text and "token=[redacted]" in text


# ============================================================ 12. every REST field bounded (422, never 500)
BIG = 2**63
RAW = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "method, url, body, loc",
    [
        ("GET", f"/api/queue/dead-letters?after_id={BIG}", None, ["query", "after_id"]),
        ("GET", f"/api/queue/dead-letters?after_id={2**70}", None, ["query", "after_id"]),
        ("GET", f"/api/queue/tasks/{BIG}", None, ["path", "task_id"]),
        ("GET", "/api/queue/tasks/0", None, ["path", "task_id"]),
        ("POST", f"/api/queue/tasks/{2**70}/cancel", None, ["path", "task_id"]),
        ("POST", f"/api/queue/dead-letters/{BIG}/retry", None, ["path", "task_id"]),
        ("DELETE", f"/api/projects/p1/queue/{2**64}", None, ["path", "item_id"]),
        ("DELETE", "/api/projects/p1/queue/abc", None, ["path", "item_id"]),
        ("PUT", f"/api/projects/p1/queue/{BIG}/priority", '{"priority": 5}', ["path", "item_id"]),
        ("GET", f"/api/queue/tasks?limit={2**70}", None, ["query", "limit"]),
        ("GET", "/api/queue/statistics?window=5e-324", None, ["query", "window"]),
        ("GET", "/api/queue/statistics?window=nan", None, ["query", "window"]),
        ("GET", f"/api/queue/history?since={BIG}", None, ["query", "since"]),
        ("GET", "/api/queue/tasks?type=" + "t" * 201, None, ["query", "type"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "priority": %d}' % 2**70, ["body", "priority"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "priority": "5"}', ["body", "priority"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "priority": true}', ["body", "priority"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "priority": 5.5}', ["body", "priority"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "max_attempts": %d}' % 2**64, ["body", "max_attempts"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": {"n": [1, %d]}}' % 2**64, ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": {"n": -%d}}' % (2**63 + 1), ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": {"x": NaN}}', ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": {"x": 1e400}}', ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": "\\ud800"}', ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": {"\\udfff": 1}}', ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "payload": %s}' % ("[" * 202 + "]" * 202), ["body", "payload"]),
        ("POST", "/api/queue/enqueue", '{"type": "a\\ud800"}', ["body", "type"]),
        ("POST", "/api/queue/enqueue", '{"type": "%s"}' % ("\u00e9" * 101), ["body", "type"]),
        ("POST", "/api/queue/enqueue", '{"type": "\\u001f"}', ["body", "type"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "idempotency_key": "k\\udc00"}', ["body", "idempotency_key"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "compatibility": {"gpu": %d}}' % 2**64, ["body", "compatibility", "gpu"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "run_after_utc": 0}', ["body", "run_after_utc"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "run_after_utc": "0001-01-01T00:00:00Z"}', ["body", "run_after_utc"]),
        ("POST", "/api/queue/enqueue", '{"type": "a", "run_after_utc": "9999-12-31T23:59:59-01:00"}', ["body", "run_after_utc"]),
        ("POST", "/api/projects/p1/queue/add", '{"type": "a", "delay_seconds": NaN}', ["body", "delay_seconds"]),
        ("POST", "/api/projects/p1/queue/add", '{"type": "a", "delay_seconds": 1e400}', ["body", "delay_seconds"]),
        ("POST", "/api/projects/p1/queue/add", '{"type": "a", "timeout_seconds": 5e-324}', ["body", "timeout_seconds"]),
        ("POST", "/api/projects/p1/queue/add", '{"type": "a", "run_after_utc": "2030-01-01T00:00:00Z", "delay_seconds": 5}',
         ["body", "delay_seconds"]),
        ("POST", "/api/projects/p1/queue/add", '{"type": "a", "idempotency_key": "\\ud800"}', ["body", "idempotency_key"]),
        ("PUT", "/api/projects/p1/queue/1/priority", '{"priority": %d}' % 2**70, ["body", "priority"]),
        ("POST", "/api/queue/clear", '{"include_running": 0}', ["body", "include_running"]),
        ("POST", "/api/queue/clear", '{"queue": "q\\ud800"}', ["body", "queue"]),
    ],
)
def test_out_of_range_and_unstorable_values_are_422_with_their_place_and_write_nothing(client, queue, method, url, body, loc):
    queue.enqueue("keep", queue="project:p1")  # item 1: something a bad request could have changed
    before = snapshot(queue)[1]  # every row (stats carry the oldest task's age, which moves)
    r = client.request(method, url, content=body.encode("utf-8", "surrogatepass") if body else None,
                       headers={**ALL, **RAW})
    assert r.status_code == 422, (r.status_code, r.text)
    errors = r.json()["detail"]
    assert any(e["loc"][: len(loc)] == loc for e in errors), errors
    assert r.json()["request_id"]
    assert snapshot(queue)[1] == before


def test_values_at_the_edges_of_what_the_core_accepts_are_stored(client, queue):
    body = {"type": "\u00e9" * 100, "priority": 1000, "max_attempts": 10, "idempotency_key": "k" * 200,
            "payload": {"min": -(2**63), "max": 2**64 - 1, "float": 1e300, "text": "\U0001f600"},
            "compatibility": {"gpu": True}, "run_after_utc": "9999-12-31T23:59:59Z"}
    r = client.post("/api/queue/enqueue", json=body, headers=ALL)
    assert r.status_code == 201, r.text
    t = queue.get(r.json()["task_id"])
    assert t.payload == body["payload"] and t.type == body["type"] and t.run_after.year == 9999
    r = client.post("/api/projects/p1/queue/add", json={"type": "a", "timeout_seconds": 0.001, "delay_seconds": 0,
                                                         "priority": 7.0}, headers=P1)
    assert r.status_code == 201 and r.json()["priority"] == 7, r.text
    assert client.get(f"/api/queue/tasks/{2**63 - 1}", headers=ALL).status_code == 404
    assert client.get("/api/queue/statistics?window=0.001", headers=ALL).status_code == 200
