"""The REST API: ``create_router(queue, auth=...)``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from bisect import bisect_left
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

from fastapi import APIRouter, Body, Path, Query, Security
from fastapi.routing import APIRoute
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer

from .._prismq_queue import Queue, Task
from ..errors import TaskNotFound
from . import _dashboard, _live
from ._auth import Auth
from ._errors import ApiError, FieldInvalid, needs, route_class
from ._monitor import Monitor
from ._threads import ThreadPool
from ._models import (
    PROJECT_ID_PATTERN,
    ActiveResponse,
    CancelTaskResponse,
    ClearRequest,
    ClearResponse,
    EnqueueTaskRequest,
    EnqueueTaskResponse,
    ErrorResponse,
    MetricsResponse,
    PriorityUpdate,
    ProjectAddRequest,
    ProjectAddResponse,
    ProjectItem,
    ProjectQueueStatus,
    ProjectRemoveResponse,
    QueueStatsResponse,
    RetryResponse,
    TaskList,
    TaskStatusResponse,
    ValidationErrorResponse,
    WorkersResponse,
)

log = logging.getLogger("prismq_queue.web")

T = TypeVar("T")

PROJECT_QUEUE_PREFIX = "project:"
# Queued items of one project read to sort them into run order for the status endpoint.
MAX_QUEUED_SCAN = 10_000

_STATUS_FILTER = {
    "queued": "queued",
    "processing": "running",  # the older API's name
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No bearer token, or not a valid one (see WWW-Authenticate)."},
    403: {"model": ErrorResponse, "description": "The token lacks the scope, or may not access this project."},
    422: {"model": ValidationErrorResponse, "description": "Invalid field; nothing was written."},
    500: {"model": ErrorResponse, "description": "Internal error; the details are in the server log under request_id."},
    503: {"model": ErrorResponse, "description": "The database stayed locked past busy_timeout; retry (Retry-After)."},
}
NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such task (or item of this project)."}}
CONFLICT = {409: {"model": ErrorResponse, "description": "The task is not in a state that allows this."}}

ProjectId = Path(..., pattern=PROJECT_ID_PATTERN, description="The project; its tasks live in the queue 'project:{project_id}'.")


def project_queue(project_id: str) -> str:
    return PROJECT_QUEUE_PREFIX + project_id


def legacy_status(status: str) -> str:
    return "processing" if status == "running" else status


def _utc(dt: Optional[datetime]) -> Optional[datetime]:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def _legacy_task(t: Task) -> dict[str, Any]:
    return {
        "task_id": t.id,
        "type": t.type,
        "status": legacy_status(t.status),
        "priority": t.priority,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "payload": t.payload,
        "compatibility": t.requires or {},
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
        "result": t.result,
        "progress": t.progress,
        "step": t.step,
        "progress_message": t.message,
    }


def _task(t: Task) -> dict[str, Any]:
    d = t.as_dict()
    d.pop("lease_token", None)
    return d


def _item(t: Task, project_id: str, position: Optional[int]) -> dict[str, Any]:
    key = t.idempotency_key
    prefix = _key_prefix(project_id)
    if key is not None and key.startswith(prefix):
        key = key[len(prefix) :]
    return {
        "item_id": t.id,
        "project_id": project_id,
        "type": t.type,
        "status": t.status,
        "priority": t.priority,
        "position": position,
        "progress": t.progress,
        "step": t.step,
        "message": t.message,
        "payload": t.payload,
        "attempts": t.attempts,
        "max_attempts": t.max_attempts,
        "created_at": t.created_at,
        "run_after": t.run_after,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "locked_by": t.locked_by,
        "error": t.error,
        "result": t.result,
        "idempotency_key": key,
    }


def _key_prefix(project_id: str) -> str:
    # Idempotency keys are per project: stored with this prefix, so two projects never collide.
    return f"{PROJECT_QUEUE_PREFIX}{project_id}:"


class SnapshotCache:
    """Short-lived results of the aggregate reads (``/queue/stats`` and project status).

    Their core queries count or list rows across the whole table (tens of milliseconds at
    hundreds of thousands of tasks), while dashboards poll them many times a second; the older
    queue API cached its stats for 2 s. An entry lives ``ttl`` seconds; a project's entries are
    dropped at once when a request through this router changes that project, and when a live
    event stream of this router sees a change in it, so a client that refetches after an event
    gets the change. ``ttl=0`` turns caching off. Task endpoints are never cached.

    Requests that miss while the same value is already being computed wait for that computation
    instead of starting their own (``fetch``): when an entry expires under load, every read
    thread used to recount the same rows at once, and task reads queued behind them.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = float(ttl)
        self._entries: dict[tuple[Any, ...], tuple[float, int, Any]] = {}
        self._generation: dict[Optional[str], int] = {}
        # key -> (generation it was started at, the computation); touched only on the event loop
        self._inflight: dict[tuple[Any, ...], tuple[int, "asyncio.Future[Any]"]] = {}

    async def fetch(self, key: tuple[Any, ...], project: Optional[str], compute: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, the one being computed (when nothing changed since it started), or
        a fresh one from ``compute``."""
        cached = self.get(key, project)
        if cached is not None:
            return cached
        generation = self.generation(project)
        if self.ttl > 0:
            running = self._inflight.get(key)
            if running is not None and running[0] == generation:
                return await asyncio.shield(running[1])
        task = asyncio.ensure_future(compute())
        self._inflight[key] = (generation, task)
        try:
            # Shielded: a client that disconnects must not cancel what others wait for.
            result = await asyncio.shield(task)
        finally:
            if self._inflight.get(key, (0, None))[1] is task:
                del self._inflight[key]
        self.put(key, project, generation, result)
        return result

    def generation(self, project: Optional[str]) -> int:
        return self._generation.get(project, 0)

    def get(self, key: tuple[Any, ...], project: Optional[str]) -> Any:
        e = self._entries.get(key)
        if e is not None and e[0] > time.monotonic() and e[1] == self.generation(project):
            return e[2]
        return None

    def put(self, key: tuple[Any, ...], project: Optional[str], generation: int, value: Any) -> None:
        if self.ttl > 0 and generation == self.generation(project):
            if len(self._entries) > 1000:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            self._entries[key] = (time.monotonic() + self.ttl, generation, value)

    def invalidate(self, project: Optional[str]) -> None:
        self._generation[project] = self.generation(project) + 1


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
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if not isinstance(cache_ttl, (int, float)) or cache_ttl < 0:
        raise ValueError(f"cache_ttl must be a number of seconds >= 0, got {cache_ttl!r}")
    cache = SnapshotCache(cache_ttl)
    if not isinstance(auth, Auth):
        raise TypeError("auth must be a web.Auth: Auth(tokens={...}), or Auth.disabled() to turn checks off")
    if not auth.enabled:
        log.warning(
            "prismq_queue.web: authentication is DISABLED (Auth.disabled()): every request may read, "
            "write and administer the queue"
        )
    router = APIRouter(route_class=route_class(auth), responses=ERRORS)
    own_monitor = monitor is None
    if monitor is None:
        monitor = Monitor(queue, interval=history_interval, size=history_size, events_interval=events_interval)

    # Every queue call runs in a thread: SQLite never blocks the event loop. Pools of their own
    # (not anyio's default limiter, which the host app's sync endpoints share) cost less per call.
    # Writes have a pool apart: while they wait for the write lock (other processes' workers hold
    # it many times a second), reads, which WAL never blocks, must not queue behind them.
    reads = ThreadPool(threads, "prismq-web-read")
    writes = ThreadPool(max(2, threads // 2), "prismq-web-write")

    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await reads.run(functools.partial(fn, *args, **kwargs) if args or kwargs else fn)

    async def run_write(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await writes.run(functools.partial(fn, *args, **kwargs) if args or kwargs else fn)

    def project_task(project_id: str, item_id: int) -> Task:
        try:
            t = queue.get(item_id)
        except TaskNotFound:
            t = None
        if t is None or t.queue != project_queue(project_id):
            # Another project's item is reported exactly like a missing one, and never touched.
            raise ApiError(404, f"project {project_id!r} has no item {item_id}")
        return t

    def position(t: Task) -> Optional[int]:
        return queue.position(t.id) if t.status == "queued" else None

    # ------------------------------------------------------------ the older queue API
    @router.post(
        "/queue/enqueue",
        status_code=201,
        response_model=EnqueueTaskResponse,
        tags=["queue (older API)"],
        summary="Enqueue a task (an existing idempotency key returns the existing task)",
    )
    @needs("write")
    async def enqueue(body: EnqueueTaskRequest) -> Any:
        def go() -> dict[str, Any]:
            existed = None
            if body.idempotency_key is not None:
                existed = queue.find(body.idempotency_key)
            if existed is None:
                tid = queue.enqueue(
                    body.type,
                    body.payload,
                    priority=body.priority,
                    max_attempts=body.max_attempts,
                    run_after=_utc(body.run_after_utc),
                    idempotency_key=body.idempotency_key,
                    requires=body.compatibility or None,
                )
                t = queue.get(tid)
                message = "Task enqueued successfully"
            else:
                t = existed
                message = "Task already exists (idempotency key match)"
            return {"task_id": t.id, "status": legacy_status(t.status), "created_at_utc": t.created_at, "message": message}

        return await run_write(go)

    @router.get(
        "/queue/tasks/{task_id}",
        response_model=TaskStatusResponse,
        responses=NOT_FOUND,
        tags=["queue (older API)"],
        summary="A task (status 'processing' = running)",
    )
    @needs("read")
    async def get_task(task_id: int) -> Any:
        return _legacy_task(await run(queue.get, task_id))

    @router.get(
        "/queue/tasks",
        response_model=List[TaskStatusResponse],
        tags=["queue (older API)"],
        summary="Tasks, newest first",
    )
    @needs("read")
    async def list_tasks(
        status: Optional[str] = Query(
            None, description="queued, processing (= running), completed, failed or cancelled", pattern="^(queued|processing|running|completed|failed|cancelled)$"
        ),
        type: Optional[str] = Query(None, min_length=1),
        limit: int = Query(100, ge=1, le=1000),
    ) -> Any:
        rows = await run(queue.list, status=_STATUS_FILTER[status] if status else None, type=type, limit=limit, order="desc")
        return [_legacy_task(t) for t in rows]

    @router.post(
        "/queue/tasks/{task_id}/cancel",
        response_model=CancelTaskResponse,
        responses=NOT_FOUND,
        tags=["queue (older API)"],
        summary="Cancel a queued or running task",
    )
    @needs("write")
    async def cancel_task(task_id: int) -> Any:
        def go() -> dict[str, Any]:
            if queue.cancel(task_id):
                return {"task_id": task_id, "status": "cancelled", "message": "Task cancelled successfully"}
            s = legacy_status(queue.get(task_id).status)
            return {"task_id": task_id, "status": s, "message": f"Task already {s}, cannot cancel"}

        return await run_write(go)

    @router.get("/queue/stats", response_model=QueueStatsResponse, tags=["queue (older API)"], summary="Counts by status")
    @needs("read")
    async def stats() -> Any:
        return await cache.fetch(("stats",), None, _stats)

    async def _stats() -> dict[str, Any]:
        s = await run(queue.stats)
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

    # ------------------------------------------------------------ projects
    @router.get(
        "/projects/{project_id}/queue/status",
        response_model=ProjectQueueStatus,
        tags=["projects"],
        summary="A project's running and queued items, with positions and step progress",
    )
    @needs("read")
    async def project_status(
        project_id: str = ProjectId,
        limit: int = Query(100, ge=1, le=1000, description="At most this many running and this many queued items."),
        include_finished: bool = Query(False, description="Also the latest finished items."),
    ) -> Any:
        qn = project_queue(project_id)
        key = ("status", project_id, limit, include_finished)

        def go() -> dict[str, Any]:
            s = queue.stats(queue=qn)
            running = queue.list(status="running", queue=qn, limit=limit)
            queued: list[Task] = []
            whole = True  # every queued task of the project was read
            if s["queued"]:
                after = None
                while True:
                    want = min(1000, MAX_QUEUED_SCAN - len(queued))
                    page = queue.list(status="queued", queue=qn, limit=want, after_id=after)
                    queued += page
                    if len(page) < want:
                        break
                    if len(queued) >= MAX_QUEUED_SCAN:
                        whole = False
                        break
                    after = page[-1].id
            # The order a priority claim takes them in: due tasks by (priority, run_after, id),
            # then those not yet due. `position` is Queue.position: the due tasks of the same
            # queue and type whose (priority, run_after, id) is smaller, so with several types it
            # restarts at 0 for each. With the whole queue in hand that is counted here, from
            # the keys of the due tasks per type (sorted already), instead of one index walk in
            # the core per item shown; a backlog too deep to read asks the core for each item.
            now = datetime.now(timezone.utc)

            def claim_key(t: Task) -> tuple[Any, ...]:
                return (t.priority, t.run_after, t.id)

            queued.sort(key=lambda t: (t.run_after > now, *claim_key(t)))
            items = [_item(t, project_id, None) for t in running]
            due_keys: dict[str, list[tuple[Any, ...]]] = {}
            if whole:
                for t in queued:
                    if t.run_after <= now:
                        due_keys.setdefault(t.type, []).append(claim_key(t))
            for t in queued[:limit]:
                pos = bisect_left(due_keys.get(t.type, []), claim_key(t)) if whole else queue.position(t.id)
                items.append(_item(t, project_id, pos))
            finished: list[dict[str, Any]] = []
            if include_finished:
                done: list[Task] = []
                for st in ("completed", "failed", "cancelled"):
                    done += queue.list(status=st, queue=qn, limit=limit, order="desc")
                done.sort(key=lambda t: (t.finished_at or t.updated_at, t.id), reverse=True)
                finished = [_item(t, project_id, None) for t in done[:limit]]
            return {
                "project_id": project_id,
                "queue": qn,
                "counts": {
                    k: s.get(k, 0)
                    for k in ("queued", "running", "completed", "failed", "cancelled", "total", "scheduled")
                }
                | {"oldest_queued_age_seconds": s.get("oldest_queued_age_seconds")},
                "items": items,
                "finished": finished,
            }

        return await cache.fetch(key, project_id, lambda: run(go))

    @router.post(
        "/projects/{project_id}/queue/add",
        status_code=201,
        response_model=ProjectAddResponse,
        responses={200: {"model": ProjectAddResponse, "description": "The idempotency key named an existing item."}},
        tags=["projects"],
        summary="Add an item to a project's queue",
    )
    @needs("write")
    async def project_add(body: ProjectAddRequest, project_id: str = ProjectId) -> Any:
        qn = project_queue(project_id)
        key = _key_prefix(project_id) + body.idempotency_key if body.idempotency_key is not None else None
        if body.run_after_utc is not None and body.delay_seconds is not None:
            raise FieldInvalid(["body", "delay_seconds"], "give run_after_utc or delay_seconds, not both")

        def go() -> tuple[dict[str, Any], bool]:
            existing = queue.find(key) if key is not None else None
            if existing is not None:
                return _item(existing, project_id, position(existing)), False
            tid = queue.enqueue(
                body.type,
                body.payload,
                queue=qn,
                priority=body.priority,
                max_attempts=body.max_attempts,
                delay=body.delay_seconds,
                run_after=_utc(body.run_after_utc),
                idempotency_key=key,
                requires=body.compatibility or None,
                timeout=body.timeout_seconds,
            )
            t = queue.get(tid)
            return _item(t, project_id, position(t)), True

        item, created = await run_write(go)
        cache.invalidate(project_id)
        item["created"] = created
        if not created:
            return JSONResponse(ProjectAddResponse(**item).model_dump(mode="json"), status_code=200)
        return item

    @router.delete(
        "/projects/{project_id}/queue/{item_id}",
        response_model=ProjectRemoveResponse,
        responses=NOT_FOUND,
        tags=["projects"],
        summary="Cancel an item (queued or running); an item that already finished is left as it is",
    )
    @needs("write")
    async def project_remove(item_id: int, project_id: str = ProjectId) -> Any:
        def go() -> dict[str, Any]:
            t = project_task(project_id, item_id)
            cancelled = queue.cancel(t.id)
            status = "cancelled" if cancelled else queue.get(t.id).status
            message = "cancelled" if cancelled else f"already {status}; nothing to cancel"
            return {"item_id": t.id, "project_id": project_id, "cancelled": cancelled, "status": status, "message": message}

        try:
            return await run_write(go)
        finally:
            cache.invalidate(project_id)

    @router.put(
        "/projects/{project_id}/queue/{item_id}/priority",
        response_model=ProjectItem,
        responses={**NOT_FOUND, **CONFLICT},
        tags=["projects"],
        summary="Change a queued item's priority (1 is the most urgent)",
    )
    @needs("write")
    async def project_priority(body: PriorityUpdate, item_id: int, project_id: str = ProjectId) -> Any:
        def go() -> dict[str, Any]:
            t = project_task(project_id, item_id)
            if not queue.set_priority(t.id, body.priority):
                raise ApiError(409, f"item {item_id} is {queue.get(t.id).status}; its priority can no longer change")
            t = queue.get(t.id)
            return _item(t, project_id, position(t))

        try:
            return await run_write(go)
        finally:
            cache.invalidate(project_id)

    # ------------------------------------------------------------ operations
    @router.get("/queue/statistics", response_model=MetricsResponse, tags=["operations"], summary="Queue.metrics()")
    @needs("read")
    async def statistics(window: float = Query(300.0, gt=0, le=7 * 86400, description="Seconds of history for rates and percentiles.")) -> Any:
        return await run(queue.metrics, window=window)

    @router.get("/queue/active", response_model=ActiveResponse, tags=["operations"], summary="Running tasks")
    @needs("read")
    async def active(limit: int = Query(100, ge=1, le=1000)) -> Any:
        def go() -> dict[str, Any]:
            rows = queue.list(status="running", limit=limit)
            count = queue.stats()["running"]
            now = time.time()
            items = []
            for t in rows:
                d = _task(t)
                d["running_seconds"] = round(now - t.started_at.timestamp(), 3) if t.started_at else None
                items.append(d)
            return {"items": items, "count": max(count, len(items))}

        return await run(go)

    @router.get("/queue/workers", response_model=WorkersResponse, tags=["operations"], summary="Workers by heartbeat")
    @needs("read")
    async def workers() -> Any:
        def go() -> dict[str, Any]:
            ws = queue.workers()
            holding: dict[str, list[dict[str, Any]]] = {}
            for t in queue.list(status="running", limit=1000):
                if t.locked_by is not None:
                    holding.setdefault(t.locked_by, []).append(
                        {
                            "id": t.id,
                            "type": t.type,
                            "queue": t.queue,
                            "progress": t.progress,
                            "step": t.step,
                            "message": t.message,
                            "started_at": t.started_at,
                        }
                    )
            rows = [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "capabilities": w.capabilities,
                    "queues": w.queues,
                    "started_at": w.started_at,
                    "last_heartbeat": w.last_heartbeat,
                    "heartbeat_age": w.heartbeat_age,
                    "tasks_done": w.tasks_done,
                    "stale": w.stale,
                    "current_tasks": holding.get(w.id, []),
                }
                for w in ws
            ]
            stale = sum(1 for w in ws if w.stale)
            return {"workers": rows, "active": len(ws) - stale, "stale": stale}

        return await run(go)

    @router.get("/queue/dead-letters", response_model=TaskList, tags=["operations"], summary="Failed tasks (attempts spent), newest first")
    @needs("read")
    async def dead_letters(
        type: Optional[str] = Query(None, min_length=1),
        queue_name: Optional[str] = Query(None, alias="queue", min_length=1),
        limit: int = Query(100, ge=1, le=1000),
        after_id: Optional[int] = Query(None, ge=0, description="Paging: only ids below this one (newest first)."),
    ) -> Any:
        def go() -> dict[str, Any]:
            rows = queue.list(status="failed", type=type, queue=queue_name, limit=limit, after_id=after_id, order="desc")
            return {"items": [_task(t) for t in rows], "next_after_id": rows[-1].id if len(rows) == limit else None}

        return await run(go)

    @router.post(
        "/queue/dead-letters/{task_id}/retry",
        response_model=RetryResponse,
        responses={**NOT_FOUND, **CONFLICT},
        tags=["operations"],
        summary="Put a dead letter back in the queue (attempts reset)",
    )
    @needs("write")
    async def retry_dead_letter(task_id: int) -> Any:
        def go() -> dict[str, Any]:
            t = queue.get(task_id)
            if t.status != "failed":
                raise ApiError(409, f"task {task_id} is {t.status}, not a dead letter (failed)")
            ok = queue.retry(task_id)
            return {"task_id": task_id, "retried": ok, "status": queue.get(task_id).status}

        return await run_write(go)

    @router.post(
        "/queue/clear",
        response_model=ClearResponse,
        tags=["operations"],
        summary="Cancel every queued task (running ones only with include_running)",
    )
    @needs("admin")
    async def clear(body: ClearRequest = Body(default_factory=ClearRequest)) -> Any:
        def go() -> dict[str, Any]:
            counts = {"queued": 0, "running": 0}
            statuses = ["queued", "running"] if body.include_running else ["queued"]
            for st in statuses:
                after = None
                while True:
                    page = queue.list(status=st, queue=body.queue, type=body.type, limit=1000, after_id=after)
                    if not page:
                        break
                    for t in page:
                        if queue.cancel(t.id):
                            counts[st] += 1
                    after = page[-1].id
            left = 0
            if not body.include_running:
                left = len(queue.list(status="running", queue=body.queue, type=body.type, limit=1000))
            return {"cancelled_queued": counts["queued"], "cancelled_running": counts["running"], "running_left": left}

        result = await run_write(go)
        log.info("queue cleared: %s (filters: %s)", result, body.model_dump())
        return result

    @router.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain; version=0.0.4": {}}, "description": "Prometheus text exposition"}},
        tags=["operations"],
        summary="Prometheus metrics",
    )
    @needs("read")
    async def prometheus() -> Response:
        from ..prometheus import CONTENT_TYPE, render

        text = await run(render, queue)
        return Response(content=text, media_type=CONTENT_TYPE)

    # The route class checks tokens before anything else. For the OpenAPI schema, one route (the
    # SSE stream) declares the bearer scheme as a dependency, which puts it in the schema's
    # components; every route then names it as its security requirement. (A Security dependency
    # on every route would be solved on every request, for nothing: ~10% of a small request.)
    sse_deps = [Security(HTTPBearer(auto_error=False, description="A token configured with web.Auth"))] if auth.enabled else []
    _live.add_routes(router, queue, auth, run, interval=events_interval, on_change=cache.invalidate, sse_dependencies=sse_deps)
    _live.add_global_routes(router, auth, monitor, sse_dependencies=sse_deps)
    _dashboard.add_routes(router, queue, run, monitor, cache)
    if own_monitor:
        weakref.finalize(router, monitor.stop)
    # The pools' idle threads go with the router (the routes hold the only references to them).
    weakref.finalize(router, reads.shutdown)
    weakref.finalize(router, writes.shutdown)
    if auth.enabled:
        for route in router.routes:
            if isinstance(route, APIRoute):
                route.openapi_extra = {**(route.openapi_extra or {}), "security": [{"HTTPBearer": []}]}
    return router
