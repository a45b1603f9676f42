"""Periodic tasks: ``GET /queue/schedules``; pausing, resuming and removing one (admin scope:
a schedule enqueues work for everyone). Schedules are defined in code, with ``Queue.schedule``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Optional

from fastapi import APIRouter, Path
from pydantic import BaseModel

from ...errors import InvalidArgument, ScheduleNotFound
from .._context import RouterContext
from .._errors import ApiError
from .._responses import ERRORS

TAGS: list[Any] = ["schedules"]
SCHEDULE_NOT_FOUND: Any = {404: {"model": ERRORS[401]["model"], "description": "No schedule has this name."}}
Name = Path(..., min_length=1, max_length=200, description="The schedule's name.")


class ScheduleView(BaseModel):
    name: str
    type: str
    queue: str
    cron: Optional[str] = None
    every: Optional[float] = None
    tz: str
    payload: Any = None
    missed: str
    options: dict[str, Any]
    paused: bool
    next_run: datetime
    last_run: Optional[datetime] = None
    created_at: datetime
    updated_at: datetime


class SchedulesResponse(BaseModel):
    items: list[ScheduleView]


class RemovedResponse(BaseModel):
    name: str
    removed: bool


def _steer(fn: Callable[[str], Any], name: str) -> Any:
    """``fn(name)``; a name no schedule has (or could have, such as a blank one) is 404."""
    try:
        return fn(name)
    except (ScheduleNotFound, InvalidArgument):
        raise ApiError(404, f"no schedule is named {name!r}") from None


def build(ctx: RouterContext) -> APIRouter:
    router = ctx.router()
    queue = ctx.queue

    @router.get(
        "/queue/schedules",
        response_model=SchedulesResponse,
        tags=TAGS,
        summary="Periodic tasks, by name",
        dependencies=ctx.requires("read"),
    )
    async def schedules() -> Any:
        return {"items": await ctx.read(queue.schedules)}

    @router.post(
        "/queue/schedules/{name}/pause",
        response_model=ScheduleView,
        responses=SCHEDULE_NOT_FOUND,
        tags=TAGS,
        summary="Stop enqueueing a schedule's due times until resumed",
        dependencies=ctx.requires("admin"),
    )
    async def pause(name: str = Name) -> Any:
        return await ctx.write(_steer, queue.pause_schedule, name)

    @router.post(
        "/queue/schedules/{name}/resume",
        response_model=ScheduleView,
        responses=SCHEDULE_NOT_FOUND,
        tags=TAGS,
        summary="Resume a schedule (next due after now)",
        dependencies=ctx.requires("admin"),
    )
    async def resume(name: str = Name) -> Any:
        return await ctx.write(_steer, queue.resume_schedule, name)

    @router.delete(
        "/queue/schedules/{name}",
        response_model=RemovedResponse,
        responses=SCHEDULE_NOT_FOUND,
        tags=TAGS,
        summary="Remove a schedule (the tasks it enqueued stay)",
        dependencies=ctx.requires("admin"),
    )
    async def remove(name: str = Name) -> Any:
        if not await ctx.write(_steer, queue.unschedule, name):
            raise ApiError(404, f"no schedule is named {name!r}")
        return {"name": name, "removed": True}

    return router
