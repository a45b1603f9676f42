"""The live event streams: of a project (``/projects/{project_id}/queue/ws`` and ``.../events``)
and of every queue (``/queue/ws`` and ``/queue/events``). Messages, authentication of a
WebSocket and the fan-out from the monitor's one stream are described in ``web._live``."""

from __future__ import annotations

from typing import Any, Optional

import anyio.to_thread
from fastapi import APIRouter, Path, WebSocket
from fastapi.responses import StreamingResponse

from .._context import RouterContext
from .._live import (
    GLOBAL_EVENTS,
    SSE_RESPONSE,
    AuthGate,
    GlobalFeed,
    ProjectFeed,
    ProjectFeeds,
    event_names,
    pump,
    sse_response,
    ws_allowed,
    ws_start_failed,
)
from .._models import PROJECT_ID_PATTERN

TAGS: list[Any] = ["live"]


def build(ctx: RouterContext, gate: AuthGate) -> tuple[APIRouter, ProjectFeeds]:
    """The routes, and the fan-out that serves every project stream (for diagnostics and tests).
    ``gate`` bounds the WebSockets waiting for their first-message token."""
    router = ctx.router()
    feeds = ProjectFeeds(ctx.monitor)
    # A change a project stream sees drops the router's cached status of that project.
    on_change = ctx.cache.invalidate

    def project_ready(project_id: str) -> dict[str, Any]:
        return {"event": "ready", "data": {"project_id": project_id, "events": event_names(project_id)}}

    def global_ready() -> dict[str, Any]:
        return {"event": "ready", "data": {"events": GLOBAL_EVENTS, "history_interval": ctx.monitor.interval}}

    @router.websocket("/projects/{project_id}/queue/ws", name="project_events_ws")
    async def project_ws(websocket: WebSocket, project_id: str) -> None:
        """WebSocket of a project's live events (see the module doc of prismq_queue.web._live)."""
        await websocket.accept()
        feed: Optional[ProjectFeed] = None
        try:
            if not await ws_allowed(websocket, ctx.auth, gate, project_id):
                return
            feed = ProjectFeed(feeds, project_id, on_change)
            await feed.start()
        except BaseException as exc:
            if feed is not None:
                feed.close()
            await ws_start_failed(websocket, exc, f"project {project_id}")
            return
        await pump(websocket, project_ready(project_id), feed.next_batch, feed.close, f"project {project_id}")

    @router.get(
        "/projects/{project_id}/queue/events",
        response_class=StreamingResponse,
        responses={200: SSE_RESPONSE},
        tags=TAGS,
        summary="A project's live events as Server-Sent Events (the WebSocket's fallback)",
        dependencies=ctx.requires("read", query_token=True),
    )
    async def project_sse(project_id: str = Path(..., pattern=PROJECT_ID_PATTERN)) -> StreamingResponse:
        feed = ProjectFeed(feeds, project_id, on_change)
        return sse_response(feed.start, project_ready(project_id), feed.next_batch, feed.close)

    @router.websocket("/queue/ws", name="events_ws")
    async def events_ws(websocket: WebSocket) -> None:
        """WebSocket of every queue's live events (see the module doc of prismq_queue.web._live)."""
        await websocket.accept()
        feed: Optional[GlobalFeed] = None
        try:
            if not await ws_allowed(websocket, ctx.auth, gate, None):
                return
            feed = GlobalFeed(ctx.monitor)
            await anyio.to_thread.run_sync(feed.start)  # may start the monitor's threads
        except BaseException as exc:
            if feed is not None:
                feed.close()
            await ws_start_failed(websocket, exc, "every queue")
            return
        await pump(websocket, global_ready(), feed.next_batch, feed.close, "every queue")

    @router.get(
        "/queue/events",
        response_class=StreamingResponse,
        responses={200: SSE_RESPONSE},
        tags=TAGS,
        summary="Every queue's live events as Server-Sent Events (the WebSocket's fallback)",
        dependencies=ctx.requires("read", query_token=True),
    )
    async def events_sse() -> StreamingResponse:
        feed = GlobalFeed(ctx.monitor)

        async def start() -> None:
            await anyio.to_thread.run_sync(feed.start)

        return sse_response(start, global_ready(), feed.next_batch, feed.close)

    return router, feeds
