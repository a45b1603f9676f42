"""Live events of a project: a WebSocket, and Server-Sent Events as a fallback.

Both are built on ``prismq_queue.events.watch`` filtered to the project's queue, so changes made
by any process on the same database file (a worker reporting progress, another app enqueueing)
are delivered, not only those made through this app.

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
``{"token": "..."}`` (within 10 seconds); browsers cannot set headers on a WebSocket, and the
first-message form keeps the token out of URLs and access logs. A refused WebSocket is closed
with code 4401 (no or invalid token), 4403 (scope or project refused) or 4422 (invalid project
id), after an ``{"event": "error", ...}`` message. The SSE endpoint is an
ordinary GET: bearer header, or ``?token=`` for ``EventSource``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import anyio
import anyio.to_thread
from fastapi import APIRouter, Path, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .._prismq_queue import Queue
from ._auth import Auth, bearer_from_header, check
from ._errors import needs
from ._models import PROJECT_ID_PATTERN, LiveEvent, valid_project_id
from ._monitor import Monitor

log = logging.getLogger("prismq_queue.web")

AUTH_TIMEOUT = 10.0
SSE_KEEPALIVE = 15.0
_END = object()


def event_names(project_id: str) -> list[str]:
    return [f"queue:updated:{project_id}", f"task:step:progress:{project_id}"]


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


class _Topic:
    """One ``events.watch`` stream of a project queue, shared by every connection of this router
    that follows the project. It runs in a thread of its own (``for ev in stream``: the wait is in
    the core, GIL released), not in the event loop's default executor, which a stream would
    otherwise hold for good; events go to each subscriber's asyncio queue on its own loop."""

    def __init__(self, hub: "_Hub", queue: Queue, project_id: str, interval: float) -> None:
        self.hub = hub
        self.queue = queue
        self.project_id = project_id
        self.interval = interval
        self.subscribers: set["_Feed"] = set()
        self.stream: Any = None
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"prismq-web-events-{project_id}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from ..events import watch

        try:
            self.stream = watch(self.queue, queues=[f"project:{self.project_id}"], interval=self.interval)
        except BaseException as e:  # noqa: BLE001 - reported to the subscribers
            self.error = e
            self.ready.set()
            self.hub.drop(self)
            return
        self.ready.set()
        if self.closed:  # the last subscriber left while the stream was being made
            self.stream.close()
        try:
            for ev in self.stream:
                for feed in list(self.subscribers):
                    feed.deliver(ev)
        except Exception:  # noqa: BLE001 - logged; the subscribers see their stream end
            log.exception("live events for project %s stopped", self.project_id)
        finally:
            self.hub.drop(self)
            for feed in list(self.subscribers):
                feed.deliver(_END)

    def close(self) -> None:
        self.closed = True
        if self.stream is not None:
            try:
                self.stream.close()  # the waiting thread returns within milliseconds
            except Exception:  # noqa: BLE001
                log.debug("closing an event stream failed", exc_info=True)


class _Hub:
    """The topics of one router, by project id."""

    def __init__(self, queue: Queue, interval: float) -> None:
        self.queue = queue
        self.interval = interval
        self.lock = threading.Lock()
        self.topics: dict[str, _Topic] = {}

    def subscribe(self, feed: "_Feed") -> _Topic:
        with self.lock:
            topic = self.topics.get(feed.project_id)
            if topic is None or topic.stream is not None and topic.stream.closed:
                topic = self.topics[feed.project_id] = _Topic(self, self.queue, feed.project_id, self.interval)
            topic.subscribers.add(feed)
            return topic

    def unsubscribe(self, feed: "_Feed", topic: _Topic) -> None:
        with self.lock:
            topic.subscribers.discard(feed)
            if topic.subscribers:
                return
            if self.topics.get(topic.project_id) is topic:
                del self.topics[topic.project_id]
        topic.close()

    def drop(self, topic: _Topic) -> None:
        with self.lock:
            if self.topics.get(topic.project_id) is topic:
                del self.topics[topic.project_id]


class _Feed:
    """One connection's view of a project's events: messages in the order the events came."""

    def __init__(self, hub: _Hub, project_id: str, on_change: Callable[[str], None]) -> None:
        self.hub = hub
        self.project_id = project_id
        self.on_change = on_change
        self.loop = asyncio.get_running_loop()
        self.pending: asyncio.Queue[Any] = asyncio.Queue()
        self.topic: Optional[_Topic] = None

    async def start(self) -> None:
        """Subscribe; returns once the stream exists, so every change after this is delivered."""
        self.topic = self.hub.subscribe(self)
        if not self.topic.ready.is_set():
            await anyio.to_thread.run_sync(self.topic.ready.wait, 30.0)
        if self.topic.error is not None:
            raise RuntimeError(f"cannot watch project {self.project_id!r}") from self.topic.error

    def deliver(self, item: Any) -> None:
        # Called from the topic's thread.
        try:
            self.loop.call_soon_threadsafe(self.pending.put_nowait, item)
        except RuntimeError:  # the loop is closed: this connection is gone
            if self.topic is not None:
                self.topic.subscribers.discard(self)

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
        """Unsubscribe (the topic's stream closes with its last subscriber). Nothing is awaited:
        this runs in ``finally`` blocks of cancelled handlers."""
        if self.topic is not None:
            self.hub.unsubscribe(self, self.topic)
            self.topic = None


def add_routes(
    router: APIRouter,
    queue: Queue,
    auth: Auth,
    run: Callable[..., Awaitable[Any]],
    *,
    interval: float,
    on_change: Callable[[str], None] = lambda project_id: None,
    sse_dependencies: Optional[list[Any]] = None,
) -> None:
    hub = _Hub(queue, interval)

    @router.websocket("/projects/{project_id}/queue/ws", name="project_events_ws")
    async def project_ws(websocket: WebSocket, project_id: str) -> None:
        """WebSocket of a project's live events (see the module doc of prismq_queue.web._live)."""
        await websocket.accept()
        feed: Optional[_Feed] = None
        try:
            if not await _ws_allowed(websocket, auth, project_id):
                return
            feed = _Feed(hub, project_id, on_change)
            await feed.start()
        except BaseException as exc:
            if feed is not None:
                feed.close()
            await _ws_start_failed(websocket, exc, f"project {project_id}")
            return
        ready = {"event": "ready", "data": {"project_id": project_id, "events": event_names(project_id)}}
        await _pump(websocket, ready, feed.next_batch, feed.close, f"project {project_id}")

    @router.get(
        "/projects/{project_id}/queue/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": LiveEvent.model_json_schema()}}, "description": "Server-Sent Events"}},
        tags=["live"],
        summary="A project's live events as Server-Sent Events (the WebSocket's fallback)",
        dependencies=sse_dependencies or [],
    )
    @needs("read", query_token=True)
    async def project_sse(request: Request, project_id: str = Path(..., pattern=PROJECT_ID_PATTERN)) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            feed = _Feed(hub, project_id, on_change)
            try:
                await feed.start()
                yield _sse({"event": "ready", "data": {"project_id": project_id, "events": event_names(project_id)}})
                while True:
                    batch = await feed.next_batch(timeout=SSE_KEEPALIVE)
                    if batch is None:
                        return
                    if not batch:
                        yield ": keepalive\n\n"
                    for m in batch:
                        yield _sse(m)
            finally:
                feed.close()

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )


async def _ws_allowed(websocket: WebSocket, auth: Auth, project_id: Optional[str]) -> bool:
    """Authenticate an accepted WebSocket (header, ``?token=`` or a first ``{"token": ...}``
    message); when refused, send the error, close with 4401/4403/4422 and return False."""
    secret = bearer_from_header(websocket.headers.get("authorization")) or websocket.query_params.get("token") or None
    if secret is None and auth.enabled:
        try:
            first = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT)
            secret = str(json.loads(first).get("token") or "") or None
        except (asyncio.TimeoutError, ValueError, AttributeError, TypeError):
            secret = None
    token = auth.lookup(secret)
    refused = check(token, secret is not None, "read", project_id)
    if refused is None and project_id is not None and not valid_project_id(project_id):
        refused = (422, "invalid project id", {})
    if refused is None:
        return True
    status, detail, _ = refused
    await websocket.send_json({"event": "error", "data": {"status": status, "detail": detail}})
    await websocket.close(code=4000 + status, reason=detail[:120])  # 4401, 4403, 4422
    return False


async def _ws_start_failed(websocket: WebSocket, exc: BaseException, what: str) -> None:
    if isinstance(exc, WebSocketDisconnect):
        return
    if not isinstance(exc, Exception):
        raise exc  # cancelled
    log.error("websocket for %s could not start", what, exc_info=exc)
    if websocket.client_state == WebSocketState.CONNECTED:
        await websocket.close(code=1011)


async def _pump(
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


class _GlobalFeed:
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
        """Like ``_Feed.next_batch``: [] on timeout, None once the monitor stopped."""
        try:
            first = await asyncio.wait_for(self.pending.get(), timeout) if timeout else await self.pending.get()
        except asyncio.TimeoutError:
            return []
        items = [first]
        while not self.pending.empty():
            items.append(self.pending.get_nowait())
        messages = []
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


def add_global_routes(router: APIRouter, auth: Auth, monitor: Monitor, *, sse_dependencies: Optional[list[Any]] = None) -> None:
    """``WS /queue/ws`` and ``GET /queue/events``: every queue's events (see the module doc)."""

    def ready() -> dict[str, Any]:
        return {"event": "ready", "data": {"events": GLOBAL_EVENTS, "history_interval": monitor.interval}}

    @router.websocket("/queue/ws", name="events_ws")
    async def events_ws(websocket: WebSocket) -> None:
        """WebSocket of every queue's live events (see the module doc of prismq_queue.web._live)."""
        await websocket.accept()
        feed: Optional[_GlobalFeed] = None
        try:
            if not await _ws_allowed(websocket, auth, None):
                return
            feed = _GlobalFeed(monitor)
            await anyio.to_thread.run_sync(feed.start)  # may start the monitor's threads
        except BaseException as exc:
            if feed is not None:
                feed.close()
            await _ws_start_failed(websocket, exc, "every queue")
            return
        await _pump(websocket, ready(), feed.next_batch, feed.close, "every queue")

    @router.get(
        "/queue/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": LiveEvent.model_json_schema()}}, "description": "Server-Sent Events"}},
        tags=["live"],
        summary="Every queue's live events as Server-Sent Events (the WebSocket's fallback)",
        dependencies=sse_dependencies or [],
    )
    @needs("read", query_token=True)
    async def events_sse(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            feed = _GlobalFeed(monitor)
            try:
                await anyio.to_thread.run_sync(feed.start)
                yield _sse(ready())
                while True:
                    batch = await feed.next_batch(timeout=SSE_KEEPALIVE)
                    if batch is None:
                        return
                    if not batch:
                        yield ": keepalive\n\n"
                    for m in batch:
                        yield _sse(m)
            finally:
                feed.close()

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )


def _sse(message: dict[str, Any]) -> str:
    return f"event: {message['event']}\ndata: {json.dumps(message['data'], separators=(',', ':'))}\n\n"
