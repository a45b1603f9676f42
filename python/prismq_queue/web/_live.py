"""Live events of a project: a WebSocket, and Server-Sent Events as a fallback.

Both are built on ``prismq_queue.events.watch`` (one stream, passed on to each project's
connections), so changes made by any process on the same database file (a worker reporting
progress, another app enqueueing) are delivered, not only those made through this app.

Messages (JSON; SSE puts ``event`` in the ``event:`` line and ``data`` in the ``data:`` line):

- ``{"event": "ready", "data": {"project_id": ..., "events": [...]}}`` once, when subscribed;
- ``{"event": "queue:updated:{project_id}", "data": {"project_id", "reason", "task_id", "type",
  "status", "at", "counts", ...}}`` when the project's queue changed. ``reason`` is the event
  kind of ``prismq_queue.events``: ``task.created`` (an item was added), ``task.status`` (an item
  changed status; with ``attempts``, ``max_attempts``, ``worker``, ``error``) or
  ``queue.updated`` (at most one per interval after changes: ``counts`` = ``{"queued",
  "running"}`` of the project and ``changes``, the task events since the previous one; ``counts``
  is null in the other two);
- ``{"event": "task:step:progress:{project_id}", "data": {"project_id", "task_id", "type",
  "status", "progress", "step", "message", "at"}}`` when a handler reported progress.

The global stream, over every queue (the dashboard's): ``WS /queue/ws`` and ``GET /queue/events``
(SSE) [read; a project-restricted token is refused, since it shows every project]. Its messages
are the events of ``prismq_queue.events`` as they are, ``{"event": kind, "data": Event.as_dict()}``
with ``kind`` one of ``task.created``, ``task.status``, ``task.progress``, ``queue.updated``, plus
``{"event": "queue.depth", "data": {"at", "queued", "scheduled", "running", "completed", "failed",
"cancelled", "total"}}`` each time the server samples the depth (see ``_monitor``), and ``ready``
first. One ``events.watch`` stream of the router's monitor serves every connection.

Authentication: the WebSocket takes the token from the ``Authorization: Bearer`` header, or from
the ``token`` query parameter, or, when neither is given, from the first message the client sends,
``{"token": "..."}`` (within ``ws_auth_timeout``, 5 seconds); browsers cannot set headers on a
WebSocket, and the first-message form keeps the token out of URLs and access logs. At most
``ws_max_unauthenticated`` (64) sockets wait for that message at once: one more closes the
longest waiting (see ``AuthGate``). A refused WebSocket is closed with code 4401 (no or invalid
token, or none in time), 4403 (scope or project refused), 4422 (invalid project id) or 4429
(pushed out of the waiting list), after an ``{"event": "error", ...}`` message. The SSE endpoint
is an ordinary GET: bearer header, or ``?token=`` for ``EventSource``.

Every project stream is served from the router's one event stream over every queue (the
monitor's, which also feeds the global stream): no thread or stream per project or connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime
from typing import Any, Callable, Optional

import anyio
import anyio.to_thread
from fastapi import WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ._auth import Auth, bearer_from_header, check
from ._models import LiveEvent, valid_project_id
from ._monitor import Monitor

log = logging.getLogger("prismq_queue.web")

AUTH_TIMEOUT = 5.0
MAX_UNAUTHENTICATED = 64
SSE_KEEPALIVE = 15.0
_END = object()


# OpenAPI 3.1 describes a text/event-stream by the schema of one event, as a client parses it:
# ``event`` and ``data`` are text, ``data`` holding one JSON object.
SSE_RESPONSE = {
    "description": "Server-Sent Events (`: keepalive` comment lines between events)",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"type": "string", "description": LiveEvent.model_fields["event"].description},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"type": "object"},
                    },
                },
            }
        }
    },
}


def event_names(project_id: str) -> list[str]:
    return [f"queue:updated:{project_id}", f"task:step:progress:{project_id}"]


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


class ProjectFeeds:
    """Every project stream of a router, served from the one event stream of its monitor (the
    dashboard's, over every queue): the monitor hands each event to :meth:`deliver`, which passes
    it on to the feeds following that event's project. So a thousand connections on a thousand
    projects cost no thread and no stream of their own (the monitor's two threads serve all)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.lock = threading.Lock()
        self.by_queue: dict[str, set[ProjectFeed]] = {}

    def add(self, feed: ProjectFeed) -> None:
        with self.lock:
            self.by_queue.setdefault(feed.queue_name, set()).add(feed)
        # Idempotent; also restarts the monitor if it was stopped (an app served again).
        self.monitor.subscribe(self.deliver)

    def remove(self, feed: ProjectFeed) -> None:
        with self.lock:
            feeds = self.by_queue.get(feed.queue_name)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del self.by_queue[feed.queue_name]

    def deliver(self, kind: str, item: Any) -> None:
        # Called from the monitor's threads: events of every queue, depth samples, the end.
        if kind == "event":
            with self.lock:
                feeds = list(self.by_queue.get(item.queue, ()))
            for feed in feeds:
                feed.deliver(item)
        elif kind == "end":
            with self.lock:
                feeds = [f for fs in self.by_queue.values() for f in fs]
            for feed in feeds:
                feed.deliver(_END)

    def follows(self, project_id: str) -> int:
        """How many connections follow the project (for tests and diagnostics)."""
        with self.lock:
            return len(self.by_queue.get(f"project:{project_id}", ()))


class ProjectFeed:
    """One connection's view of a project's events: messages in the order the events came."""

    def __init__(self, feeds: ProjectFeeds, project_id: str, on_change: Callable[[str], None]) -> None:
        self.feeds = feeds
        self.project_id = project_id
        self.queue_name = f"project:{project_id}"
        self.on_change = on_change
        self.loop = asyncio.get_running_loop()
        self.pending: asyncio.Queue[Any] = asyncio.Queue()
        self.following = False

    async def start(self) -> None:
        """Subscribe; returns once the monitor's stream exists, so every change after this is
        delivered."""
        if not self.feeds.monitor.running:
            await anyio.to_thread.run_sync(self.feeds.monitor.start)  # opens the stream: a database call
        self.feeds.add(self)
        self.following = True

    def deliver(self, item: Any) -> None:
        # Called from the monitor's thread.
        try:
            self.loop.call_soon_threadsafe(self.pending.put_nowait, item)
        except RuntimeError:  # the loop is closed: this connection is gone
            self.close()

    async def next_batch(self, timeout: Optional[float] = None) -> Optional[list[dict[str, Any]]]:
        """The messages for the next event and any others already waiting; [] on timeout; None at the end."""
        try:
            first = await asyncio.wait_for(self.pending.get(), timeout) if timeout else await self.pending.get()
        except asyncio.TimeoutError:
            return []
        events = [first]
        while not self.pending.empty():
            events.append(self.pending.get_nowait())
        ended = any(e is _END for e in events)
        messages = [self._message(e) for e in events if e is not _END]
        if any(e is not _END and e.kind != "task.progress" for e in events):
            self.on_change(self.project_id)  # drop the router's cached status of this project
        if ended:
            return messages or None
        return messages

    def _message(self, e: Any) -> dict[str, Any]:
        pid = self.project_id
        if e.kind == "task.progress":
            return {
                "event": f"task:step:progress:{pid}",
                "data": {
                    "project_id": pid,
                    "task_id": e.task_id,
                    "type": e.type,
                    "status": e.status,
                    "progress": e.progress,
                    "step": e.step,
                    "message": e.message,
                    "at": _iso(e.at),
                },
            }
        data: dict[str, Any] = {
            "project_id": pid,
            "reason": e.kind,
            "task_id": e.task_id,
            "type": e.type,
            "status": e.status,
            "at": _iso(e.at),
            "counts": None,
        }
        extra = e.data or {}
        if e.kind == "queue.updated":
            data["counts"] = {"queued": extra.get("queued"), "running": extra.get("running")}
            data["changes"] = extra.get("changes")
        elif e.kind == "task.status":
            data.update({k: extra.get(k) for k in ("attempts", "max_attempts", "worker", "error")})
        return {"event": f"queue:updated:{pid}", "data": data}

    def close(self) -> None:
        """Unsubscribe. Nothing is awaited: this runs in ``finally`` blocks of cancelled handlers."""
        if self.following:
            self.feeds.remove(self)
            self.following = False


class AuthGate:
    """Bounds the WebSockets that wait for their first-message token: each waits ``timeout``
    seconds at most, and at most ``max_waiting`` wait at once. One more closes the one that has
    waited longest (4429): a real client sends its token at once, so a flood of idle sockets
    pushes out only its own, and costs nothing past its place in this list."""

    def __init__(self, timeout: float, max_waiting: int) -> None:
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"ws_auth_timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(max_waiting, bool) or not isinstance(max_waiting, int) or max_waiting < 1:
            raise ValueError(f"ws_max_unauthenticated must be an integer >= 1, got {max_waiting!r}")
        self.timeout = float(timeout)
        self.max_waiting = max_waiting
        self._lock = threading.Lock()  # TestClient runs each WebSocket on a loop of its own
        self._waiting: OrderedDict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = OrderedDict()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    async def first_message(self, websocket: WebSocket) -> tuple[Optional[str], str]:
        """(the first text message or None, why none: "timeout" or "evicted")."""
        loop = asyncio.get_running_loop()
        pushed_out = asyncio.Event()
        with self._lock:
            self._waiting[id(pushed_out)] = (loop, pushed_out)
            evict = []
            while len(self._waiting) > self.max_waiting:
                evict.append(self._waiting.popitem(last=False)[1])
        for their_loop, event in evict:
            try:
                their_loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that connection's loop is gone, and the connection with it
                pass
        receiving = asyncio.ensure_future(websocket.receive_text())
        evicted = asyncio.ensure_future(pushed_out.wait())
        try:
            done, _ = await asyncio.wait(
                {receiving, evicted}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            with self._lock:
                self._waiting.pop(id(pushed_out), None)
            for task in (receiving, evicted):
                task.cancel()
        if receiving in done and not receiving.cancelled():
            try:
                return receiving.result(), ""
            except KeyError:  # a binary message: no token
                return None, ""
        return None, "evicted" if evicted in done else "timeout"


def _token_in(first_message: Optional[str]) -> Optional[str]:
    if first_message is None:
        return None
    try:
        return str(json.loads(first_message).get("token") or "") or None
    except (ValueError, AttributeError, TypeError):  # not JSON, or not an object
        return None


async def ws_allowed(websocket: WebSocket, auth: Auth, gate: AuthGate, project_id: Optional[str]) -> bool:
    """Authenticate an accepted WebSocket (header, ``?token=`` or a first ``{"token": ...}``
    message); when refused, send the error, close with 4401/4403/4422/4429 and return False."""
    secret = bearer_from_header(websocket.headers.get("authorization")) or websocket.query_params.get("token") or None
    refused: Optional[tuple[int, str, dict[str, str]]] = None
    if secret is None and auth.enabled:
        first, why = await gate.first_message(websocket)
        secret = _token_in(first)
        if why == "evicted":
            refused = (429, "too many connections waiting to authenticate; send the token at once", {})
        elif why == "timeout":
            refused = (401, f"no token within {gate.timeout:g} seconds", {})
    token = auth.lookup(secret)
    if refused is None:
        refused = check(token, secret is not None, "read", project_id)
    if refused is None and project_id is not None and not valid_project_id(project_id):
        refused = (422, "invalid project id", {})
    if refused is None:
        return True
    status, detail, _ = refused
    try:
        await websocket.send_json({"event": "error", "data": {"status": status, "detail": detail}})
        await websocket.close(code=4000 + status, reason=detail[:120])  # 4401, 4403, 4422, 4429
    except (WebSocketDisconnect, RuntimeError):  # the client left meanwhile
        pass
    return False


async def ws_start_failed(websocket: WebSocket, exc: BaseException, what: str) -> None:
    if isinstance(exc, WebSocketDisconnect):
        return
    if not isinstance(exc, Exception):
        raise exc  # cancelled
    log.error("websocket for %s could not start", what, exc_info=exc)
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.close(code=1011)


async def pump(
    websocket: WebSocket,
    ready: dict[str, Any],
    next_batch: Callable[[], Awaitable[Optional[list[dict[str, Any]]]]],
    close: Callable[[], None],
    what: str,
) -> None:
    """Send ``ready`` then every batch until the stream ends or the client leaves; ``close`` the
    feed in any case (it awaits nothing: this may run in a cancelled handler)."""

    async def receive() -> None:
        # Client messages are read (and ignored, except {"type": "ping"}) to notice a disconnect.
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            text = msg.get("text")
            if text and '"ping"' in text:
                await websocket.send_json({"event": "pong", "data": {}})

    async def send() -> None:
        await websocket.send_json(ready)
        while True:
            batch = await next_batch()
            if batch is None:
                return
            for m in batch:
                await websocket.send_json(m)

    try:
        async with anyio.create_task_group() as tg:

            async def until_disconnect() -> None:
                await receive()
                tg.cancel_scope.cancel()

            async def until_stream_ends() -> None:
                await send()
                tg.cancel_scope.cancel()

            tg.start_soon(until_disconnect)
            tg.start_soon(until_stream_ends)
    except WebSocketDisconnect:
        pass
    except Exception:  # noqa: BLE001 - logged; the socket is closed below
        log.exception("websocket for %s failed", what)
    finally:
        close()
    if websocket.client_state == WebSocketState.CONNECTED and websocket.application_state == WebSocketState.CONNECTED:
        try:
            await websocket.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


GLOBAL_EVENTS = ["task.created", "task.status", "task.progress", "queue.updated", "queue.depth"]


class GlobalFeed:
    """One connection's view of the monitor's stream over every queue."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.loop = asyncio.get_running_loop()
        self.pending: asyncio.Queue[Any] = asyncio.Queue()
        self.subscribed = False

    def start(self) -> None:
        self.monitor.subscribe(self.deliver)
        self.subscribed = True

    def deliver(self, kind: str, item: Any) -> None:
        # Called from the monitor's threads.
        try:
            self.loop.call_soon_threadsafe(self.pending.put_nowait, (kind, item))
        except RuntimeError:  # the loop is closed: this connection is gone
            self.monitor.unsubscribe(self.deliver)

    async def next_batch(self, timeout: Optional[float] = None) -> Optional[list[dict[str, Any]]]:
        """Like ``ProjectFeed.next_batch``: [] on timeout, None once the monitor stopped."""
        try:
            first = await asyncio.wait_for(self.pending.get(), timeout) if timeout else await self.pending.get()
        except asyncio.TimeoutError:
            return []
        items = [first]
        while not self.pending.empty():
            items.append(self.pending.get_nowait())
        messages: list[dict[str, Any]] = []
        for kind, item in items:
            if kind == "end":
                return messages or None
            if kind == "depth":
                messages.append({"event": "queue.depth", "data": item})
            else:
                messages.append({"event": item.kind, "data": item.as_dict()})
        return messages

    def close(self) -> None:
        if self.subscribed:
            self.monitor.unsubscribe(self.deliver)
            self.subscribed = False


def sse_message(message: dict[str, Any]) -> str:
    return f"event: {message['event']}\ndata: {json.dumps(message['data'], separators=(',', ':'))}\n\n"


def sse_response(
    start: Callable[[], Awaitable[None]],
    ready: dict[str, Any],
    next_batch: Callable[[float], Awaitable[Optional[list[dict[str, Any]]]]],
    close: Callable[[], None],
) -> StreamingResponse:
    """A Server-Sent Events response: ``ready`` once the feed has ``start`` ed, then each batch,
    a keepalive comment when none came for SSE_KEEPALIVE seconds; ``close`` the feed at the end."""

    async def events() -> AsyncIterator[str]:
        try:
            await start()
            yield sse_message(ready)
            while True:
                batch = await next_batch(SSE_KEEPALIVE)
                if batch is None:
                    return
                if not batch:
                    yield ": keepalive\n\n"
                for message in batch:
                    yield sse_message(message)
        finally:
            close()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
