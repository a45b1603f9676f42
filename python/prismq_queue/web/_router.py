"""The REST API: ``create_router(queue, auth=...)``, one router that includes every resource's
(``_routers``)."""

from __future__ import annotations

import logging
import weakref
from typing import Optional

from fastapi import APIRouter

from .._prismq_queue import Queue
from . import _live, _redact
from ._auth import Auth
from ._context import RouterContext, SnapshotCache
from ._monitor import Monitor
from ._routers import dashboard, live, operations, projects, queue_api, queue_status, schedules
from ._routers import limits as limits_routes
from ._routers.projects import PROJECT_QUEUE_PREFIX, project_queue
from ._threads import ThreadPool

log = logging.getLogger("prismq_queue.web")

__all__ = ["create_router", "project_queue", "PROJECT_QUEUE_PREFIX", "MAX_QUEUED_SCAN", "DEFAULT_MAX_BODY_BYTES"]

# Queued items of one project read to sort them into run order for the status endpoint; past it,
# positions are asked of the core one by one. Read at each request.
MAX_QUEUED_SCAN = 10_000
# The core's default max_payload_bytes, and room for the other fields of a body around it.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024 + 64 * 1024


def create_router(
    queue: Queue,
    *,
    auth: Auth,
    events_interval: float = 1.0,
    threads: int = 4,
    cache_ttl: float = 1.0,
    history_interval: float = 5.0,
    history_size: int = 720,
    monitor: Optional[Monitor] = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ws_auth_timeout: float = _live.AUTH_TIMEOUT,
    ws_max_unauthenticated: int = _live.MAX_UNAUTHENTICATED,
    capacity: Optional[int] = None,
) -> APIRouter:
    """A ``fastapi.APIRouter`` with the whole REST API, to mount under any prefix.

    ``auth`` is required: ``Auth(tokens={...})``, or ``Auth.disabled()`` to turn checks off (which
    logs a warning). ``events_interval`` is passed to ``events.watch`` for the live endpoints;
    ``threads`` is the size of the thread pool that runs the queue calls; ``cache_ttl`` how long
    ``/queue/stats`` and project status results may be reused (see ``SnapshotCache``; 0: never).
    ``history_interval`` and ``history_size``: seconds between two depth samples of
    ``/queue/history`` and how many are kept. ``monitor``: the ``_monitor.Monitor`` behind the
    dashboard's endpoints, when the caller starts and stops it (``create_app`` does, in its
    lifespan); otherwise the router makes one, started at its first use, stopped with the router.
    ``max_body_bytes``: the largest request body read (413 above it; default 1 MiB, the core's
    default ``max_payload_bytes``, plus 64 KiB: raise both together). ``ws_auth_timeout``: seconds
    a WebSocket may take to send its token; ``ws_max_unauthenticated``: WebSockets waiting for
    their token at once, the oldest is closed when one more arrives (see ``_live``).
    ``capacity``: how many tasks may run at once, as ``GET /queue/status`` reports it; None (the
    default): the concurrency the live workers report in their heartbeats, added up.
    """
    _check_options(threads, cache_ttl, max_body_bytes, auth)
    if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1):
        raise ValueError(f"capacity must be an integer >= 1 or None, got {capacity!r}")
    _redact.install()  # ?token= in uvicorn's request lines, whatever logging the host app set up
    if not auth.enabled:
        log.warning(
            "prismq_queue.web: authentication is DISABLED (Auth.disabled()): every request may read, "
            "write and administer the queue"
        )
    gate = _live.AuthGate(ws_auth_timeout, ws_max_unauthenticated)
    own_monitor = monitor is None
    if monitor is None:
        monitor = Monitor(queue, interval=history_interval, size=history_size, events_interval=events_interval)
    ctx = RouterContext(
        queue=queue,
        auth=auth,
        monitor=monitor,
        cache=SnapshotCache(cache_ttl),
        reads=ThreadPool(threads, "prismq-web-read"),
        writes=ThreadPool(max(2, threads // 2), "prismq-web-write"),
        max_body_bytes=max_body_bytes,
    )
    live_router, project_feeds = live.build(ctx, gate)

    router = APIRouter()
    router.include_router(queue_api.build(ctx))
    router.include_router(queue_status.build(ctx, queued_scan_limit=lambda: MAX_QUEUED_SCAN, capacity=lambda: capacity))
    router.include_router(projects.build(ctx, queued_scan_limit=lambda: MAX_QUEUED_SCAN))
    router.include_router(operations.build(ctx))
    router.include_router(schedules.build(ctx))
    router.include_router(live_router)
    router.include_router(dashboard.build(ctx))
    router.include_router(limits_routes.build(ctx))
    # For create_app's app.state, diagnostics and tests.
    router.auth_gate = gate  # type: ignore[attr-defined]
    router.project_feeds = project_feeds  # type: ignore[attr-defined]
    if own_monitor:
        weakref.finalize(router, monitor.stop)
    # The pools' idle threads go with the router (the routes hold the only references to them).
    weakref.finalize(router, ctx.reads.shutdown)
    weakref.finalize(router, ctx.writes.shutdown)
    return router


def _check_options(threads: int, cache_ttl: float, max_body_bytes: int, auth: Auth) -> None:
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if not isinstance(cache_ttl, (int, float)) or cache_ttl < 0:
        raise ValueError(f"cache_ttl must be a number of seconds >= 0, got {cache_ttl!r}")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be an integer >= 1, got {max_body_bytes!r}")
    if not isinstance(auth, Auth):
        raise TypeError("auth must be a web.Auth: Auth(tokens={...}), or Auth.disabled() to turn checks off")
