"""``GET /queue/status`` of the older queue API: one queue's counts, its running tasks, the
capacity the workers offer, and its queued tasks in claim order, each with its position.

The older system answered this for its one queue; here ``?queue=`` names the queue (default
``default``, where ``POST /queue/enqueue`` puts tasks). The capacity is the app's
(``create_router(capacity=...)``), else the sum of the concurrency the live workers taking the
queue report in their heartbeats. Positions are Queue.position (every type of
the queue, in priority claim order), counted from the queue's listing as a project's status does
(``projects.in_claim_order``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from fastapi import APIRouter, Query

from ..._prismq_queue import Queue
from .._context import RouterContext
from .._models import MAX_NAME_BYTES, QueueStatusResponse
from .projects import in_claim_order, queued_of
from .queue_api import TAGS, legacy_counts, legacy_task


def workers_capacity(queue: Queue, name: str) -> Optional[int]:
    """How many tasks the live workers that take queue ``name`` run at once, from their heartbeats
    (None when none said: workers of builds before heartbeats carried it, or none alive)."""
    said = [w.concurrency for w in queue.workers() if not w.stale and (w.queues is None or name in w.queues)]
    known = [n for n in said if n is not None]
    return sum(known) if known else None


def read_queue_status(queue: Queue, name: str, limit: int, scan_limit: int, capacity: Optional[int]) -> dict[str, Any]:
    """``GET /queue/status``'s answer for queue ``name``; ``capacity`` None: the workers'."""
    s = queue.stats(queue=name)
    if capacity is None:
        capacity = workers_capacity(queue, name)
    running = queue.list(status="running", queue=name, limit=limit) if s["running"] else []
    queued, whole = queued_of(queue, name, scan_limit) if s["queued"] else ([], True)
    return {
        "queue": name,
        **legacy_counts(s),
        "capacity": capacity,
        "available_slots": None if capacity is None else max(0, capacity - s["running"]),
        "running": [legacy_task(t) for t in running],
        "queued": [
            {**legacy_task(t), "position": position} for t, position in in_claim_order(queue, queued, whole, limit)
        ],
    }


def build(
    ctx: RouterContext, *, queued_scan_limit: Callable[[], int], capacity: Callable[[], Optional[int]]
) -> APIRouter:
    """``queued_scan_limit()``: how many queued tasks are read to sort them into claim order (past
    it, positions come from the core one by one); ``capacity()``: how many tasks may run at once,
    None to add up the live workers' concurrency. Both asked at each request."""
    router = ctx.router()
    q = ctx.queue

    @router.get(
        "/queue/status",
        response_model=QueueStatusResponse,
        tags=TAGS,
        summary="A queue's counts, running tasks, capacity, and queued tasks with their positions",
        dependencies=ctx.requires("read"),
    )
    async def queue_status(
        queue: str = Query("default", min_length=1, max_length=MAX_NAME_BYTES, description="The queue."),
        limit: int = Query(100, ge=1, le=1000, description="At most this many running and this many queued tasks."),
    ) -> Any:
        scan_limit, cap = queued_scan_limit(), capacity()
        return await ctx.cache.fetch(
            ("queue_status", queue, limit, scan_limit, cap),
            None,
            lambda: ctx.read(read_queue_status, q, queue, limit, scan_limit, cap),
        )

    return router
