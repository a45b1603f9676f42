"""The older queue API, same paths and fields: enqueue, a task, tasks, cancel, stats.

A running task is ``processing`` there (see the ``web`` module doc for the other differences).
"""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query

from ..._prismq_queue import Task
from .._context import RouterContext
from .._models import (
    CancelTaskResponse,
    EnqueueTaskRequest,
    EnqueueTaskResponse,
    QueueStatsResponse,
    TaskDetailResponse,
    TaskStatusResponse,
)
from .._params import NameFilter, TaskId
from .._responses import BODY_ERRORS, NOT_FOUND, json_field

TAGS: list[Any] = ["queue (older API)"]

# The older API's status names -> ours.
_STATUS_FILTER = {
    "queued": "queued",
    "processing": "running",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}


def legacy_status(status: str) -> str:
    return "processing" if status == "running" else status


def legacy_counts(s: dict[str, Any]) -> dict[str, Any]:
    """``Queue.stats()`` in the older API's count fields (``/queue/stats``, ``/queue/status``)."""
    return {
        "total_tasks": s["total"],
        "queued_tasks": s["queued"],
        "processing_tasks": s["running"],
        "completed_tasks": s["completed"],
        "failed_tasks": s["failed"],
        "oldest_queued_age_seconds": s.get("oldest_queued_age_seconds"),
        "cancelled_tasks": s["cancelled"],
        "scheduled_tasks": s.get("scheduled", 0),
    }


def legacy_task(t: Task) -> dict[str, Any]:
    """A task in the older API's fields (and ours it did not have)."""
    return {
        "task_id": t.id,
        "type": t.type,
        "status": legacy_status(t.status),
        "priority": t.priority,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "payload": json_field(t, "payload"),
        "compatibility": json_field(t, "requires") or {},
        "error_message": t.error,
        "created_at_utc": t.created_at,
        "processing_started_utc": t.started_at,
        "finished_at_utc": t.finished_at,
        "locked_by": t.locked_by,
        "queue": t.queue,
        "run_after_utc": t.run_after,
        "updated_at_utc": t.updated_at,
        "lease_until_utc": t.lease_until,
        "idempotency_key": t.idempotency_key,
        "result": json_field(t, "result"),
        "progress": t.progress,
        "step": t.step,
        "progress_message": t.message,
    }


def build(ctx: RouterContext) -> APIRouter:
    router = ctx.router()
    queue = ctx.queue

    @router.post(
        "/queue/enqueue",
        status_code=201,
        response_model=EnqueueTaskResponse,
        responses=BODY_ERRORS,
        tags=TAGS,
        summary="Enqueue a task (an existing idempotency key returns the existing task)",
        dependencies=ctx.requires("write"),
    )
    async def enqueue(body: EnqueueTaskRequest) -> Any:
        def enqueue_or_find() -> dict[str, Any]:
            existed = None
            if body.idempotency_key is not None:
                existed = queue.find(body.idempotency_key)
            if existed is None:
                tid = queue.enqueue(
                    body.type,
                    body.payload,
                    priority=body.priority,
                    max_attempts=body.max_attempts,
                    run_after=body.run_after_utc,
                    idempotency_key=body.idempotency_key,
                    requires=body.compatibility or None,
                )
                t = queue.get(tid)
                message = "Task enqueued successfully"
            else:
                t = existed
                message = "Task already exists (idempotency key match)"
            return {
                "task_id": t.id,
                "status": legacy_status(t.status),
                "created_at_utc": t.created_at,
                "message": message,
            }

        return await ctx.write(enqueue_or_find)

    @router.get(
        "/queue/tasks/{task_id}",
        response_model=TaskDetailResponse,
        responses=NOT_FOUND,
        tags=TAGS,
        summary="A task (status 'processing' = running), with each failed attempt's error and traceback",
        dependencies=ctx.requires("read"),
    )
    async def get_task(task_id: int = TaskId) -> Any:
        def detail() -> dict[str, Any]:
            t = queue.get(task_id)
            attempts = [a.as_dict() for a in queue.attempts(task_id)]  # only here: listings stay small
            return {**legacy_task(t), "traceback": t.traceback, "failed_attempts": attempts}

        return await ctx.read(detail)

    @router.get(
        "/queue/tasks",
        response_model=list[TaskStatusResponse],
        tags=TAGS,
        summary="Tasks, newest first",
        dependencies=ctx.requires("read"),
    )
    async def list_tasks(
        status: Optional[str] = Query(
            None,
            description="queued, processing (= running), completed, failed or cancelled",
            pattern="^(queued|processing|running|completed|failed|cancelled)$",
        ),
        type: Optional[str] = NameFilter,
        limit: int = Query(100, ge=1, le=1000),
    ) -> Any:
        rows = await ctx.read(
            queue.list, status=_STATUS_FILTER[status] if status else None, type=type, limit=limit, order="desc"
        )
        return [legacy_task(t) for t in rows]

    @router.post(
        "/queue/tasks/{task_id}/cancel",
        response_model=CancelTaskResponse,
        responses=NOT_FOUND,
        tags=TAGS,
        summary="Cancel a queued or running task",
        dependencies=ctx.requires("write"),
    )
    async def cancel_task(task_id: int = TaskId) -> Any:
        def cancel() -> dict[str, Any]:
            if queue.cancel(task_id):
                return {"task_id": task_id, "status": "cancelled", "message": "Task cancelled successfully"}
            status = legacy_status(queue.get(task_id).status)
            return {"task_id": task_id, "status": status, "message": f"Task already {status}, cannot cancel"}

        return await ctx.write(cancel)

    async def count_by_status() -> dict[str, Any]:
        return legacy_counts(await ctx.read(queue.stats))

    @router.get(
        "/queue/stats",
        response_model=QueueStatsResponse,
        tags=TAGS,
        summary="Counts by status",
        dependencies=ctx.requires("read"),
    )
    async def stats() -> Any:
        return await ctx.cache.fetch(("stats",), None, count_by_status)

    return router
