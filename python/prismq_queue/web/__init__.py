"""The REST API of prismq_queue for FastAPI apps: ``create_router`` and ``create_app``.

```python
from prismq_queue import Queue, web

auth = web.Auth(tokens={"s3cret": web.Token(scopes={"read", "write", "admin"}, projects=None)})
router = web.create_router(Queue("jobs.db"), auth=auth)   # mount under any prefix
app = web.create_app(Queue("jobs.db"), auth=auth)         # router under /api, the dashboard at /
```

Needs the ``web`` extra (``pip install "prismq_queue[web]"``: fastapi, uvicorn, httpx).

Endpoints (relative to where the router is mounted; scope needed in brackets):

- The older queue API, same paths and fields: ``POST /queue/enqueue`` [write] (201; an existing
  ``idempotency_key`` returns the existing task), ``GET /queue/tasks/{id}`` [read],
  ``GET /queue/tasks?status=&type=&limit=`` [read] (newest first), ``POST /queue/tasks/{id}/cancel``
  [write], ``GET /queue/stats`` [read]. Statuses use the older names where it had them: a running
  task is ``processing`` (in responses, in the ``status`` filter, and ``processing_tasks`` in
  stats; ``running`` is accepted as a filter too). The older API had no ``cancelled`` state (it
  marked a cancelled task ``failed``); here a cancelled task stays ``cancelled``, ``failed_tasks``
  counts only dead letters, and stats add ``cancelled_tasks`` and ``scheduled_tasks``. Task
  responses add fields the older API did not have (``queue``, ``result``, ``progress``, ...).
  ``GET /queue/status?queue=&limit=`` [read]: one queue's counts (the stats' fields), its running
  tasks, ``capacity`` and ``available_slots`` (``create_router(capacity=...)``, else the live
  workers' concurrency from their heartbeats), and its queued tasks in claim order, each with its
  ``position`` (Queue.position).
- Projects: a task belongs to project ``P`` when its queue is named ``project:P`` (workers of a
  project claim with ``queues=["project:P"]``). ``GET /projects/{P}/queue/status`` [read],
  ``POST /projects/{P}/queue/add`` [write] (201; 200 when the idempotency key, which is unique
  within the project, named an existing item; a project's keys live in its own namespace, and the
  general API refuses keys starting with ``project:``), ``DELETE /projects/{P}/queue/{item_id}`` [write]
  (cancels a queued or running item; one already finished is left as it is, ``cancelled: false``),
  ``PUT /projects/{P}/queue/{item_id}/priority`` [write] (409 once finished). An item of another
  project is a 404, exactly like a missing one, and is never changed. Project ids: 1-128 letters,
  digits, ``.``, ``_``, ``-``.
- Operations: ``GET /queue/statistics?window=`` [read] (``Queue.metrics``), ``GET /queue/active``
  [read], ``GET /queue/workers`` [read], ``GET /queue/dead-letters`` [read],
  ``POST /queue/dead-letters/{id}/retry`` [write], ``POST /queue/clear`` [admin] (cancels queued
  tasks; running ones only with ``{"include_running": true}``), ``GET /metrics`` [read]
  (Prometheus text).
- Live: ``WS /projects/{P}/queue/ws`` and ``GET /projects/{P}/queue/events`` (SSE) [read], with
  the events ``queue:updated:{P}`` and ``task:step:progress:{P}``; over every queue,
  ``WS /queue/ws`` and ``GET /queue/events`` [read] (see ``_live`` for the messages and how a
  WebSocket authenticates).
- Dashboard: ``GET /queue/history`` (depth samples), ``/queue/breakdown`` (per queue and type),
  ``/queue/failures`` (recent failed attempts and dead letters), ``/queue/search?q=`` (by id or
  idempotency key, with the log) [read]; ``GET /queue/workers`` lists each worker's running
  tasks. See ``_dashboard`` and ``_monitor``.
- Limits: ``GET /queue/limits`` [read], ``PUT /queue/limits`` [admin] (create or replace the limit
  of a queue or of a type in it; 400 with the queue's message for a value it refuses),
  ``DELETE /queue/limits?queue=&type=`` [admin] (404 when there is none). See ``_routers.limits``.

Access: ``Authorization: Bearer <token>``. No or an unknown token: 401 with ``WWW-Authenticate``.
A token without the endpoint's scope, or restricted to other projects: 403. Scopes are
independent (``admin`` does not include ``read``). A project-restricted token may use only the
``/projects/{P}/...`` endpoints of its projects. Errors: 400 for a body that is not JSON, 413 for
one larger than ``max_body_bytes``, 422 with field details (every field is checked against what
the core accepts: 64-bit ids, UTF-8 text, storable JSON, times from 1970 to 9999; no lax
coercion: ``0`` is not ``false``), 404, 405 for a wrong method, 409, 503 when the database stayed
locked past ``busy_timeout`` (the core retries until then), 500 with a generic body; every error
body has ``detail`` and ``request_id``, also sent as ``X-Request-ID`` on every response, under
which the ``prismq_queue.web`` logger records the details. Every response also carries
``Server-Timing: app;dur=<ms>``, the time the request spent in the router.

Caching: ``/queue/stats`` and project status count and list rows across the table, which costs
milliseconds per call at tens of thousands of tasks; their results are reused for ``cache_ttl``
seconds (default 1; the older API cached its stats for 2 s), a project's as soon as a request
through this router or a live event stream of this router sees a change in that project. A
client reads its own writes: after a write request through this router (by its token, or its
address with authentication off), its next reads compute afresh; everyone else keeps the cached
value. ``cache_ttl=0`` turns caching off. Task endpoints are always read fresh.

Threads: endpoints are ``async def`` and run their queue calls, all of one request in one
function, in thread pools of the router's own (``threads=4`` for reads, half as many for writes,
apart so that reads never queue behind writes waiting for the write lock; the core releases the
GIL). Plain ``def`` endpoints would also keep SQLite off the event loop, but FastAPI then runs
each sync dependency and the response validation in further thread hops through anyio's shared
limiter; one hop per request through a small pool of our own (``web._threads``) is cheaper.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Union

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._prismq_queue import Queue, __version__
from ._auth import SCOPES, Auth, Token
from ._errors import error_body, request_id
from ._monitor import Monitor
from ._page import add_dashboard
from ._router import PROJECT_QUEUE_PREFIX, create_router, project_queue

log = logging.getLogger("prismq_queue.web")

__all__ = ["Auth", "Token", "SCOPES", "create_router", "create_app", "project_queue", "PROJECT_QUEUE_PREFIX"]


def create_app(
    queue: Union[Queue, str, os.PathLike[str]],
    *,
    auth: Auth,
    prefix: str = "/api",
    title: str = "prismq_queue",
    **router_options: Any,
) -> FastAPI:
    """A FastAPI app with the router under ``prefix`` (``/api``) and the dashboard at ``/``.

    ``queue`` is a ``Queue`` or a database path (then the app opens it and closes it at shutdown).
    ``router_options`` go to ``create_router`` (``events_interval``, ``threads``, ``cache_ttl``,
    ``history_interval``, ``history_size``, ``max_body_bytes``, ``ws_auth_timeout``,
    ``ws_max_unauthenticated``). The dashboard's depth sampler and event watcher
    (``_monitor.Monitor``) start with the app and stop before the queue is closed.
    """
    owned = isinstance(queue, (str, os.PathLike))
    handle = Queue(os.fspath(queue)) if isinstance(queue, (str, os.PathLike)) else queue
    monitor = Monitor(
        handle,
        interval=router_options.pop("history_interval", 5.0),
        size=router_options.pop("history_size", 720),
        events_interval=router_options.get("events_interval", 1.0),
    )

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        monitor.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(monitor.stop)
            if owned:
                handle.close()

    app = FastAPI(title=title, version=__version__, lifespan=lifespan, description="prismq_queue REST API")
    router = create_router(handle, auth=auth, monitor=monitor, **router_options)
    app.include_router(router, prefix=prefix)
    add_dashboard(app, api_prefix=prefix)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # What no route answers (404, 405 with Allow), in the API's error shape.
        rid = request_id(request)
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        response = error_body(exc.status_code, detail, rid, dict(exc.headers or {}))
        response.headers["X-Request-ID"] = rid
        return response

    app.state.queue = handle
    app.state.monitor = monitor
    app.state.project_feeds = router.project_feeds  # type: ignore[attr-defined]
    app.state.auth_gate = router.auth_gate  # type: ignore[attr-defined]
    return app
