"""Limits: ``GET /queue/limits`` [read], ``PUT /queue/limits`` and ``DELETE /queue/limits``
[admin], over ``Queue.limits``, ``Queue.set_limit`` and ``Queue.remove_limit``.

A limit caps every claim of every worker process and host, so setting one is an administrator's
act, like clearing a queue. A value the core refuses (a concurrency of 0, a rate like "5 per
fortnight") is 400 with the core's message, and nothing is written; a field of the wrong type
is 422, as everywhere in the API.
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query, Request, Response
from starlette.exceptions import HTTPException

from ..._prismq_queue import Queue
from ...errors import InvalidArgument
from .._context import RouterContext
from .._errors import ApiError
from .._limit_models import LimitModel, LimitRemoved, LimitRequest
from .._models import MAX_NAME_BYTES, NOT_BLANK_PATTERN, ErrorResponse
from .._responses import BODY_ERRORS, Responses

TAGS: list[Any] = ["limits"]

REFUSED: Responses = {
    400: {
        "model": ErrorResponse,
        "description": "The body is not JSON, or the queue refused a value (the message says which); nothing "
        "was written.",
    },
}
GONE: Responses = {
    409: {"model": ErrorResponse, "description": "Another client removed the limit just after it was set."}
}
NO_LIMIT: Responses = {404: {"model": ErrorResponse, "description": "There is no limit on this queue and type."}}


def _where(queue_name: str, task_type: Optional[str]) -> str:
    return f"queue {queue_name!r}" + (f", type {task_type!r}" if task_type is not None else "")


def find_limit(queue: Queue, queue_name: str, task_type: Optional[str]) -> Optional[dict[str, Any]]:
    """The limit of (queue, type) as ``Queue.limits()`` shows it, or None."""
    for row in queue.limits():
        if row["queue"] == queue_name and row.get("type") == task_type:
            return row
    return None


def build(ctx: RouterContext) -> APIRouter:
    router = ctx.router()
    queue = ctx.queue

    @router.get(
        "/queue/limits",
        response_model=list[LimitModel],
        tags=TAGS,
        summary="Every limit, with the slots in use, the tasks waiting on it and the rate tokens left",
        dependencies=ctx.requires("read"),
    )
    async def list_limits() -> Any:
        return await ctx.read(queue.limits)

    @router.put(
        "/queue/limits",
        response_model=LimitModel,
        responses={**BODY_ERRORS, **REFUSED, **GONE},
        tags=TAGS,
        summary="Create or replace the limit of a queue, or of one type in it",
        dependencies=ctx.requires("admin"),
    )
    async def set_limit(body: LimitRequest) -> Any:
        def apply() -> dict[str, Any]:
            try:
                queue.set_limit(body.queue, type=body.type, concurrency=body.concurrency, per=body.per, rate=body.rate)
            except InvalidArgument as e:
                raise ApiError(400, str(e)) from None
            row = find_limit(queue, body.queue, body.type)
            if row is None:  # removed by someone else in between
                raise ApiError(409, f"the limit on {_where(body.queue, body.type)} was removed meanwhile")
            return row

        return await ctx.write(apply)

    @router.delete(
        "/queue/limits",
        response_model=LimitRemoved,
        responses={**NO_LIMIT, **REFUSED},
        tags=TAGS,
        summary="Remove the limit of a queue, or of one type in it",
        dependencies=ctx.requires("admin"),
    )
    async def remove_limit(
        queue_name: str = Query(
            ...,
            alias="queue",
            min_length=1,
            max_length=MAX_NAME_BYTES,
            pattern=NOT_BLANK_PATTERN,
            description="The queue.",
        ),
        task_type: Optional[str] = Query(
            None,
            alias="type",
            min_length=1,
            max_length=MAX_NAME_BYTES,
            pattern=NOT_BLANK_PATTERN,
            description="The type; absent: the limit of the whole queue.",
        ),
    ) -> Any:
        def remove() -> dict[str, Any]:
            try:
                removed = queue.remove_limit(queue_name, type=task_type)
            except InvalidArgument as e:
                raise ApiError(400, str(e)) from None
            if not removed:
                raise ApiError(404, f"there is no limit on {_where(queue_name, task_type)}")
            return {"queue": queue_name, "type": task_type, "removed": True}

        return await ctx.write(remove)

    async def other_method(request: Request) -> Response:
        # Starlette would answer with the Allow of the first route of the path (GET) only.
        raise HTTPException(405, "Method Not Allowed", headers={"Allow": "GET, PUT, DELETE"})

    # After the three routes above, for every other method HTTP defines.
    others = ["HEAD", "POST", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
    router.add_route("/queue/limits", other_method, methods=others, include_in_schema=False)
    return router
