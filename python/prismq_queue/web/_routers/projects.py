"""A project's queue: ``/projects/{project_id}/queue/...`` (status, add, remove, priority).

A task belongs to project ``P`` when its queue is named ``project:P``. An item of another project
is a 404, exactly like a missing one, and is never changed.
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ..._prismq_queue import Queue, Task
from ...dependencies import is_held
from ...errors import TaskNotFound
from .._context import RouterContext
from .._errors import ApiError, FieldInvalid
from .._models import (
    ErrorResponse,
    PriorityUpdate,
    ProjectAddRequest,
    ProjectAddResponse,
    ProjectItem,
    ProjectQueueStatus,
    ProjectRemoveResponse,
)
from .._params import ItemId, ProjectId
from .._responses import BODY_ERRORS, CONFLICT, NOT_FOUND, json_field

TAGS: list[Any] = ["projects"]
PROJECT_QUEUE_PREFIX = "project:"
COUNTS = ("queued", "running", "completed", "failed", "cancelled", "total", "scheduled")


def project_queue(project_id: str) -> str:
    return PROJECT_QUEUE_PREFIX + project_id


def project_keys(project_id: str, key: str) -> tuple[str, str]:
    """How a project's idempotency key is stored: in the project's own namespace, so two projects
    never collide (project ids hold no ':' or '/'), and the general API may not use it (keys
    starting with 'project:' are reserved there). The second spelling is for a key whose first is
    held by a task outside the project (stored before the prefix was reserved, or by the Python
    API): the project gets an item of its own and never sees that task."""
    return f"{PROJECT_QUEUE_PREFIX}{project_id}:{key}", f"{PROJECT_QUEUE_PREFIX}{project_id}/{key}"


def project_item(t: Task, project_id: str, position: Optional[int]) -> dict[str, Any]:
    """A task as an item of its project: the idempotency key as the project gave it."""
    key = t.idempotency_key
    if key is not None:
        for stored in project_keys(project_id, ""):
            if key.startswith(stored):
                key = key[len(stored) :]
                break
    return {
        "item_id": t.id,
        "project_id": project_id,
        "type": t.type,
        "status": t.status,
        "priority": t.priority,
        "position": position,
        "waiting_on": list(t.waiting_on) or None,
        "progress": t.progress,
        "step": t.step,
        "message": t.message,
        "payload": json_field(t, "payload"),
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "created_at": t.created_at,
        "run_after": t.run_after,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "locked_by": t.locked_by,
        "error": t.error,
        "result": json_field(t, "result"),
        "idempotency_key": key,
    }


def queued_of(queue: Queue, queue_name: str, scan_limit: int) -> tuple[list[Task], bool]:
    """The queued tasks of ``queue_name``, at most ``scan_limit``; True when that is all of them."""
    queued: list[Task] = []
    after = None
    while True:
        want = min(1000, scan_limit - len(queued))
        page = queue.list(status="queued", queue=queue_name, limit=want, after_id=after)
        queued += page
        if len(page) < want:
            return queued, True
        if len(queued) >= scan_limit:
            return queued, False
        after = page[-1].id


def _claim_key(t: Task) -> tuple[Any, ...]:
    return (t.priority, t.run_after, t.id)


def in_claim_order(queue: Queue, queued: list[Task], whole: bool, limit: int) -> list[tuple[Task, Optional[int]]]:
    """The first ``limit`` of ``queued`` (tasks of one queue) in the order a priority claim takes
    them: due tasks by (priority, run_after, id), then those not yet due; each with its position.

    ``position`` is Queue.position: the due tasks of the queue, every type, whose (priority,
    run_after, id) is smaller, so items number 0, 1, 2, ... in claim order whatever their types.
    With the whole queue in hand (``whole``) that is counted here, from the keys of the due tasks
    (sorted already), instead of one index walk in the core per item shown; a backlog too deep to
    read asks the core for each item."""
    now = datetime.now(timezone.utc)
    queued.sort(key=lambda t: (t.run_after > now, *_claim_key(t)))
    due_keys = [_claim_key(t) for t in queued if t.run_after <= now] if whole else []
    return [
        # A task waiting on its dependencies is in no line yet: no position.
        (t, None if is_held(t) else bisect_left(due_keys, _claim_key(t)) if whole else queue.position(t.id))
        for t in queued[:limit]
    ]


def queued_items(queue: Queue, project_id: str, queued: list[Task], whole: bool, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` queued items in claim order, with their positions (``in_claim_order``);
    a held item as ``get`` reads it, which says what it waits on."""
    return [
        project_item(queue.get(t.id) if is_held(t) else t, project_id, position)
        for t, position in in_claim_order(queue, queued, whole, limit)
    ]


def finished_items(queue: Queue, project_id: str, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` finished items, newest first."""
    queue_name = project_queue(project_id)
    done: list[Task] = []
    for status in ("completed", "failed", "cancelled"):
        done += queue.list(status=status, queue=queue_name, limit=limit, order="desc")
    done.sort(key=lambda t: (t.finished_at or t.updated_at, t.id), reverse=True)
    return [project_item(t, project_id, None) for t in done[:limit]]


def read_project_status(
    queue: Queue, project_id: str, limit: int, include_finished: bool, scan_limit: int
) -> dict[str, Any]:
    """``GET /projects/{project_id}/queue/status``'s answer."""
    queue_name = project_queue(project_id)
    counts = queue.stats(queue=queue_name)
    running = queue.list(status="running", queue=queue_name, limit=limit)
    queued, whole = queued_of(queue, queue_name, scan_limit) if counts["queued"] else ([], True)
    items = [project_item(t, project_id, None) for t in running]
    items += queued_items(queue, project_id, queued, whole, limit)
    return {
        "project_id": project_id,
        "queue": queue_name,
        "counts": {k: counts.get(k, 0) for k in COUNTS}
        | {"oldest_queued_age_seconds": counts.get("oldest_queued_age_seconds")},
        "items": items,
        "finished": finished_items(queue, project_id, limit) if include_finished else [],
    }


def _project_task(queue: Queue, project_id: str, item_id: int) -> Task:
    try:
        t: Optional[Task] = queue.get(item_id)
    except TaskNotFound:
        t = None
    if t is None or t.queue != project_queue(project_id):
        # Another project's item is reported exactly like a missing one, and never touched.
        raise ApiError(404, f"project {project_id!r} has no item {item_id}")
    return t


def _position(queue: Queue, t: Task) -> Optional[int]:
    return queue.position(t.id) if t.status == "queued" else None


def _refuse_key() -> ApiError:
    # Says nothing of the task that holds it: it is not the project's to see.
    return ApiError(409, "this idempotency key is taken outside the project; choose another")


def add_or_find_item(queue: Queue, project_id: str, body: ProjectAddRequest) -> tuple[dict[str, Any], bool]:
    """Add the item, or find the one its idempotency key names in the project; True if added."""
    queue_name = project_queue(project_id)
    key = None
    if body.idempotency_key is not None:
        held = [(k, queue.find(k)) for k in project_keys(project_id, body.idempotency_key)]
        for _, t in held:
            if t is not None and t.queue == queue_name:
                return project_item(t, project_id, _position(queue, t)), False
        key = next((k for k, t in held if t is None), None)
        if key is None:
            raise _refuse_key()
    tid = queue.enqueue(
        body.type,
        body.payload,
        queue=queue_name,
        priority=body.priority,
        max_attempts=body.max_attempts,
        delay=body.delay_seconds,
        run_after=body.run_after_utc,
        idempotency_key=key,
        requires=body.compatibility or None,
        timeout=body.timeout_seconds,
    )
    t = queue.get(tid)
    if t.queue != queue_name:  # the key was taken outside the project just now
        raise _refuse_key()
    return project_item(t, project_id, _position(queue, t)), True


def build(ctx: RouterContext, *, queued_scan_limit: Callable[[], int]) -> APIRouter:
    """``queued_scan_limit()``: how many queued items of a project the status endpoint reads to
    sort them into run order (asked at each request)."""
    router = ctx.router()
    queue = ctx.queue

    def project_task(project_id: str, item_id: int) -> Task:
        return _project_task(queue, project_id, item_id)

    def position(t: Task) -> Optional[int]:
        return _position(queue, t)

    @router.get(
        "/projects/{project_id}/queue/status",
        response_model=ProjectQueueStatus,
        tags=TAGS,
        summary="A project's running and queued items, with positions and step progress",
        dependencies=ctx.requires("read"),
    )
    async def project_status(
        project_id: str = ProjectId,
        limit: int = Query(100, ge=1, le=1000, description="At most this many running and this many queued items."),
        include_finished: bool = Query(False, description="Also the latest finished items."),
    ) -> Any:
        key = ("status", project_id, limit, include_finished)
        scan_limit = queued_scan_limit()
        return await ctx.cache.fetch(
            key,
            project_id,
            lambda: ctx.read(read_project_status, queue, project_id, limit, include_finished, scan_limit),
        )

    @router.post(
        "/projects/{project_id}/queue/add",
        status_code=201,
        response_model=ProjectAddResponse,
        responses={
            200: {"model": ProjectAddResponse, "description": "The idempotency key named an existing item."},
            409: {"model": ErrorResponse, "description": "The idempotency key is taken outside the project."},
            **BODY_ERRORS,
        },
        tags=TAGS,
        summary="Add an item to a project's queue",
        dependencies=ctx.requires("write"),
    )
    async def project_add(body: ProjectAddRequest, project_id: str = ProjectId) -> Any:
        if body.run_after_utc is not None and body.delay_seconds is not None:
            raise FieldInvalid(["body", "delay_seconds"], "give run_after_utc or delay_seconds, not both")
        item, created = await ctx.write(add_or_find_item, queue, project_id, body)
        ctx.cache.invalidate(project_id)
        item["created"] = created
        if not created:
            return JSONResponse(ProjectAddResponse(**item).model_dump(mode="json"), status_code=200)
        return item

    @router.delete(
        "/projects/{project_id}/queue/{item_id:prismq_item}",
        response_model=ProjectRemoveResponse,
        responses=NOT_FOUND,
        tags=TAGS,
        summary="Cancel an item (queued or running); an item that already finished is left as it is",
        dependencies=ctx.requires("write"),
    )
    async def project_remove(item_id: int = ItemId, project_id: str = ProjectId) -> Any:
        def cancel() -> dict[str, Any]:
            t = project_task(project_id, item_id)
            cancelled = queue.cancel(t.id)
            status = "cancelled" if cancelled else queue.get(t.id).status
            message = "cancelled" if cancelled else f"already {status}; nothing to cancel"
            return {
                "item_id": t.id,
                "project_id": project_id,
                "cancelled": cancelled,
                "status": status,
                "message": message,
            }

        try:
            return await ctx.write(cancel)
        finally:
            ctx.cache.invalidate(project_id)

    @router.put(
        "/projects/{project_id}/queue/{item_id:prismq_item}/priority",
        response_model=ProjectItem,
        responses={**NOT_FOUND, **CONFLICT, **BODY_ERRORS},
        tags=TAGS,
        summary="Change a queued item's priority (1 is the most urgent)",
        dependencies=ctx.requires("write"),
    )
    async def project_priority(body: PriorityUpdate, item_id: int = ItemId, project_id: str = ProjectId) -> Any:
        def set_priority() -> dict[str, Any]:
            t = project_task(project_id, item_id)
            if not queue.set_priority(t.id, body.priority):
                raise ApiError(409, f"item {item_id} is {queue.get(t.id).status}; its priority can no longer change")
            t = queue.get(t.id)
            return project_item(t, project_id, position(t))

        try:
            return await ctx.write(set_priority)
        finally:
            ctx.cache.invalidate(project_id)

    return router
