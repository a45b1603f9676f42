"""Operations: ``/queue/statistics``, ``/queue/active``, ``/queue/workers``, dead letters and
their retry, ``/queue/clear`` and Prometheus ``/metrics``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

from fastapi import APIRouter, Body, Query
from fastapi.responses import PlainTextResponse, Response

from ..._prismq_queue import Queue
from .._context import RouterContext
from .._dashboard import running_rows, worker_rows
from .._errors import ApiError
from .._models import (
    MAX_NAME_BYTES,
    ActiveResponse,
    ClearRequest,
    ClearResponse,
    MetricsResponse,
    RetryResponse,
    TaskList,
    WorkersResponse,
)
from .._params import AfterId, NameFilter, TaskId
from .._responses import BODY_ERRORS, CONFLICT, ERRORS, NOT_FOUND, json_error, task_view

if TYPE_CHECKING:
    from ..._prismq_queue import StatusName

log = logging.getLogger("prismq_queue.web")

TAGS: list[Any] = ["operations"]
# Running tasks read for /queue/active's count check and /queue/workers' current tasks.
RUNNING_ROWS = 1000


def clear_selected(queue: Queue, body: ClearRequest) -> dict[str, Any]:
    """Cancel the queued tasks that ``body`` selects (and the running ones with ``include_running``)."""
    counts = {"queued": 0, "running": 0}
    statuses: list[StatusName] = ["queued", "running"] if body.include_running else ["queued"]
    for status in statuses:
        after = None
        while True:
            page = queue.list(status=status, queue=body.queue, type=body.type, limit=1000, after_id=after)
            if not page:
                break
            for t in page:
                if queue.cancel(t.id):
                    counts[status] += 1
            after = page[-1].id
    left = 0
    if not body.include_running:
        left = len(queue.list(status="running", queue=body.queue, type=body.type, limit=RUNNING_ROWS))
    return {"cancelled_queued": counts["queued"], "cancelled_running": counts["running"], "running_left": left}


def build(ctx: RouterContext) -> APIRouter:
    router = ctx.router()
    queue = ctx.queue

    @router.get(
        "/queue/statistics",
        response_model=MetricsResponse,
        tags=TAGS,
        summary="Queue.metrics()",
        dependencies=ctx.requires("read"),
    )
    async def statistics(
        window: float = Query(
            300.0,
            ge=0.001,
            le=7 * 86400,
            description="Seconds of history for rates and percentiles (at least a millisecond).",
        ),
    ) -> Any:
        return await ctx.read(queue.metrics, window=window)

    @router.get(
        "/queue/active",
        response_model=ActiveResponse,
        tags=TAGS,
        summary="Running tasks",
        dependencies=ctx.requires("read"),
    )
    async def active(limit: int = Query(100, ge=1, le=1000)) -> Any:
        def running() -> dict[str, Any]:
            items = running_rows(queue.list(status="running", limit=limit))
            count = queue.stats()["running"]
            return {"items": items, "count": max(count, len(items))}

        return await ctx.read(running)

    @router.get(
        "/queue/workers",
        response_model=WorkersResponse,
        tags=TAGS,
        summary="Workers by heartbeat",
        dependencies=ctx.requires("read"),
    )
    async def workers() -> Any:
        return await ctx.read(lambda: worker_rows(queue, queue.list(status="running", limit=RUNNING_ROWS)))

    @router.get(
        "/queue/dead-letters",
        response_model=TaskList,
        tags=TAGS,
        summary="Failed tasks (attempts spent), newest first",
        dependencies=ctx.requires("read"),
    )
    async def dead_letters(
        type: Optional[str] = NameFilter,
        queue_name: Optional[str] = Query(None, alias="queue", min_length=1, max_length=MAX_NAME_BYTES),
        limit: int = Query(100, ge=1, le=1000),
        after_id: Optional[int] = AfterId,
    ) -> Any:
        def page() -> dict[str, Any]:
            rows = queue.list(
                status="failed", type=type, queue=queue_name, limit=limit, after_id=after_id, order="desc"
            )
            return {"items": [task_view(t) for t in rows], "next_after_id": rows[-1].id if len(rows) == limit else None}

        return await ctx.read(page)

    @router.post(
        "/queue/dead-letters/{task_id}/retry",
        response_model=RetryResponse,
        responses={**NOT_FOUND, **CONFLICT},
        tags=TAGS,
        summary="Put a dead letter back in the queue (attempts reset)",
        dependencies=ctx.requires("write"),
    )
    async def retry_dead_letter(task_id: int = TaskId) -> Any:
        def retry() -> dict[str, Any]:
            t = queue.get(task_id)
            if t.status != "failed":
                raise ApiError(409, f"task {task_id} is {t.status}, not a dead letter (failed)")
            retried = queue.retry(task_id)
            return {"task_id": task_id, "retried": retried, "status": queue.get(task_id).status}

        return await ctx.write(retry)

    @router.post(
        "/queue/clear",
        response_model=ClearResponse,
        responses=BODY_ERRORS,
        tags=TAGS,
        summary="Cancel every queued task (running ones only with include_running)",
        dependencies=ctx.requires("admin"),
    )
    async def clear(body: ClearRequest = Body(default_factory=ClearRequest)) -> Any:
        result = await ctx.write(clear_selected, queue, body)
        log.info("queue cleared: %s (filters: %s)", result, body.model_dump())
        return result

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        # Its errors are JSON like every other route's (FastAPI would list them as text/plain).
        responses={
            200: {"description": "Prometheus text exposition (text/plain; version=0.0.4)"},
            **{code: json_error(spec) for code, spec in ERRORS.items()},
        },
        tags=TAGS,
        summary="Prometheus metrics",
        dependencies=ctx.requires("read"),
    )
    async def prometheus() -> Response:
        from ...prometheus import CONTENT_TYPE, render

        text = await ctx.read(render, queue)
        return Response(content=text, media_type=CONTENT_TYPE)

    return router
