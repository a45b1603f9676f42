"""The endpoints the dashboard reads (all [read], like the other operations endpoints):

- ``GET /queue/history?since=`` depth samples kept by the router's ``Monitor`` (oldest first);
- ``GET /queue/breakdown`` counts by status per queue and per queue and type;
- ``GET /queue/failures?limit=`` recent failed attempts and dead letters, with each task as it is now;
- ``GET /queue/search?q=`` a task by id or by idempotency key, with its log lines;
- ``GET /queue/dashboard`` everything the page's panels show, from one state of the database.

What they answer is computed in ``web._dashboard``.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query

from .._context import RouterContext
from .._dashboard import DashboardSnapshot, SnapshotReuse, breakdown_now, failures_now, search_now
from .._errors import FieldInvalid
from .._models import (
    I64_MAX,
    NOT_BLANK_PATTERN,
    BreakdownResponse,
    FailuresResponse,
    HistoryResponse,
    SearchResponse,
    is_blank,
)

TAGS: list[Any] = ["dashboard"]


def build(ctx: RouterContext) -> APIRouter:
    router = ctx.router()
    queue, monitor = ctx.queue, ctx.monitor
    last_snapshot = SnapshotReuse()

    async def monitor_started() -> None:
        if not monitor.running:
            await ctx.read(monitor.start)

    @router.get(
        "/queue/history",
        response_model=HistoryResponse,
        tags=TAGS,
        summary="Depth by status over time",
        dependencies=ctx.requires("read"),
    )
    async def history(
        since: Optional[int] = Query(
            None, ge=0, le=I64_MAX, description="Only samples taken after this time (ms since the epoch)."
        ),
    ) -> Any:
        await monitor_started()
        return {
            "interval": monitor.interval,
            "size": monitor.size,
            "started_at": monitor.started_at,
            "samples": monitor.history(since),
        }

    @router.get(
        "/queue/breakdown",
        response_model=BreakdownResponse,
        tags=TAGS,
        summary="Counts by status per queue and per type",
        dependencies=ctx.requires("read"),
    )
    async def breakdown() -> Any:
        await monitor_started()
        return await ctx.cache.fetch(("breakdown",), None, lambda: ctx.read(breakdown_now, queue, monitor))

    @router.get(
        "/queue/failures",
        response_model=FailuresResponse,
        tags=TAGS,
        summary="Recent failed attempts (retrying or dead) and dead letters, newest first",
        dependencies=ctx.requires("read"),
    )
    async def failures(limit: int = Query(50, ge=1, le=200)) -> Any:
        await monitor_started()
        return await ctx.read(failures_now, queue, monitor, limit)

    @router.get(
        "/queue/dashboard",
        response_model=DashboardSnapshot,
        tags=TAGS,
        summary="Every panel of the dashboard, from one state of the database",
        dependencies=ctx.requires("read"),
    )
    async def dashboard() -> Any:
        await monitor_started()
        return await ctx.read(last_snapshot.read, queue, monitor)

    @router.get(
        "/queue/search",
        response_model=SearchResponse,
        tags=TAGS,
        summary="A task by id or by idempotency key, with its log",
        dependencies=ctx.requires("read"),
    )
    async def search(
        text: str = Query(
            ...,
            alias="q",
            min_length=1,
            max_length=200,
            pattern=NOT_BLANK_PATTERN,
            description="A task id (123 or #123) or an idempotency key.",
        ),
    ) -> Any:
        wanted = text.strip()
        if is_blank(wanted):
            raise FieldInvalid(["query", "q"], "give a task id or an idempotency key")
        return await ctx.read(search_now, queue, wanted)

    return router
