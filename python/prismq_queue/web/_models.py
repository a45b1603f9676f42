"""Pydantic v2 models of every request and response body of the REST API (they make the OpenAPI
schema). Field names of the older queue API (``/queue/...``) are kept as they were."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

JSON = Any

PROJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)

OurStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
# The older API named a running task "processing"; it had no "cancelled" (see web/__init__.py).
LegacyStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]


def valid_project_id(value: str) -> bool:
    return bool(_PROJECT_ID.match(value))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _non_blank(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("must not be blank")
    return v


# ---------------------------------------------------------------- errors
class ErrorResponse(BaseModel):
    """Every error except validation errors: a message and the request id (also in the
    ``X-Request-ID`` header) under which the server logged the details."""

    detail: str = Field(..., description="What went wrong, without internals.")
    request_id: str = Field(..., description="Quote it to find the server's log record.")


class FieldError(BaseModel):
    loc: List[Any] = Field(..., description="Where: ['body', 'priority'], ['query', 'limit'], ...")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: the request was understood but a field is invalid; nothing was written."""

    detail: List[FieldError]
    request_id: str


# ---------------------------------------------------------------- the older queue API
class EnqueueTaskRequest(_Strict):
    """``POST /queue/enqueue``: the older queue API's body. Tasks go to the queue ``default``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "type": "video_processing",
                "priority": 50,
                "payload": {"format": "mp4"},
                "compatibility": {"region": "us-west"},
                "max_attempts": 3,
                "idempotency_key": "video-123-process",
            }
        },
    )

    type: str = Field(..., min_length=1, max_length=200, description="Task type (not blank).")
    priority: int = Field(100, ge=1, le=1000, description="1 is the most urgent.")
    payload: JSON = Field(default_factory=dict, description="Any JSON value; the handler's input.")
    compatibility: Dict[str, JSON] = Field(
        default_factory=dict, description="Capabilities a worker must have (stored as the task's `requires`)."
    )
    max_attempts: int = Field(5, ge=1, le=10)
    run_after_utc: Optional[datetime] = Field(None, description="Not before this time (ISO 8601; naive = UTC).")
    idempotency_key: Optional[str] = Field(
        None, min_length=1, max_length=200, description="An existing key returns the existing task."
    )

    @field_validator("type")
    @classmethod
    def _type_not_blank(cls, v: str) -> str:
        return _non_blank(v)


class EnqueueTaskResponse(BaseModel):
    task_id: int
    status: LegacyStatus
    created_at_utc: datetime
    message: str = Field(..., description="'Task enqueued successfully' or 'Task already exists (idempotency key match)'")


class TaskStatusResponse(BaseModel):
    """A task in the older API's shape, plus fields the older API did not have (queue, result,
    progress, ...). ``status`` uses the older names: ``processing`` for a running task."""

    task_id: int
    type: str
    status: LegacyStatus
    priority: int
    attempts: int
    max_attempts: int
    payload: JSON
    compatibility: Dict[str, JSON]
    error_message: Optional[str] = None
    created_at_utc: Optional[datetime] = None
    processing_started_utc: Optional[datetime] = None
    finished_at_utc: Optional[datetime] = None
    locked_by: Optional[str] = None
    # added by prismq_queue
    queue: str
    run_after_utc: datetime
    updated_at_utc: datetime
    lease_until_utc: Optional[datetime] = None
    idempotency_key: Optional[str] = None
    result: JSON = None
    progress: Optional[float] = None
    step: Optional[str] = None
    progress_message: Optional[str] = None


class CancelTaskResponse(BaseModel):
    task_id: int
    status: LegacyStatus
    message: str


class QueueStatsResponse(BaseModel):
    total_tasks: int
    queued_tasks: int = Field(..., description="Queued, due now or later.")
    processing_tasks: int = Field(..., description="Running (claimed by a worker).")
    completed_tasks: int
    failed_tasks: int = Field(..., description="Dead letters: attempts spent.")
    oldest_queued_age_seconds: Optional[float] = None
    # added by prismq_queue
    cancelled_tasks: int
    scheduled_tasks: int = Field(..., description="Queued tasks whose run_after is still in the future.")


# ---------------------------------------------------------------- task snapshots (new endpoints)
class TaskModel(BaseModel):
    """A task as prismq_queue knows it (statuses: queued, running, completed, failed, cancelled)."""

    id: int
    type: str
    queue: str
    status: OurStatus
    priority: int
    payload: JSON = None
    attempts: int
    max_attempts: int
    run_after: datetime
    created_at: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    updated_at: datetime
    locked_by: Optional[str] = None
    lease_until: Optional[datetime] = None
    error: Optional[str] = None
    result: JSON = None
    progress: Optional[float] = Field(None, description="Percent, 0..100, as the handler reported it.")
    step: Optional[str] = None
    message: Optional[str] = None
    idempotency_key: Optional[str] = None
    requires: Optional[Dict[str, JSON]] = None
    timeout: Optional[float] = None


class TaskList(BaseModel):
    items: List[TaskModel]
    next_after_id: Optional[int] = Field(None, description="Pass as after_id for the next page; null on the last.")


# ---------------------------------------------------------------- projects
class ProjectItem(BaseModel):
    """A task of a project queue, with its place in line and its step progress."""

    item_id: int
    project_id: str
    type: str
    status: OurStatus
    priority: int
    position: Optional[int] = Field(
        None,
        description="Queue.position: how many queued tasks of its queue and type a priority-claiming pool runs "
        "before it (0: next); null unless queued.",
    )
    progress: Optional[float] = None
    step: Optional[str] = None
    message: Optional[str] = None
    payload: JSON = None
    attempts: int
    max_attempts: int
    created_at: datetime
    run_after: datetime
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    locked_by: Optional[str] = None
    error: Optional[str] = None
    result: JSON = None
    idempotency_key: Optional[str] = Field(None, description="As given, without the project prefix.")


class ProjectCounts(BaseModel):
    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int
    total: int
    scheduled: int
    oldest_queued_age_seconds: Optional[float] = None


class ProjectQueueStatus(BaseModel):
    project_id: str
    queue: str = Field(..., description="The queue name that holds the project's tasks: 'project:{project_id}'.")
    counts: ProjectCounts
    items: List[ProjectItem] = Field(..., description="Running items, then queued items in the order they will run.")
    finished: List[ProjectItem] = Field(
        default_factory=list, description="With include_finished=true: the latest finished items, newest first."
    )


class ProjectAddRequest(_Strict):
    type: str = Field(..., min_length=1, max_length=200)
    payload: JSON = None
    priority: int = Field(100, ge=1, le=1000)
    max_attempts: int = Field(5, ge=1, le=10)
    run_after_utc: Optional[datetime] = None
    delay_seconds: Optional[float] = Field(None, ge=0, le=366 * 86400)
    idempotency_key: Optional[str] = Field(None, min_length=1, max_length=200, description="Unique within the project.")
    compatibility: Optional[Dict[str, JSON]] = Field(None, description="Capabilities a worker must have.")
    timeout_seconds: Optional[float] = Field(None, gt=0, le=7 * 86400)

    @field_validator("type")
    @classmethod
    def _type_not_blank(cls, v: str) -> str:
        return _non_blank(v)


class ProjectAddResponse(ProjectItem):
    created: bool = Field(..., description="False when the idempotency key already named an item (status 200).")


class PriorityUpdate(_Strict):
    priority: int = Field(..., ge=1, le=1000)


class ProjectRemoveResponse(BaseModel):
    item_id: int
    project_id: str
    cancelled: bool = Field(..., description="True if this request cancelled it; false if it had already finished.")
    status: OurStatus
    message: str


# ---------------------------------------------------------------- operations
class WorkerTask(BaseModel):
    """A task a worker is running now."""

    id: int
    type: str
    queue: str
    progress: Optional[float] = None
    step: Optional[str] = None
    message: Optional[str] = None
    started_at: Optional[datetime] = None


class WorkerModel(BaseModel):
    id: str
    host: Optional[str] = None
    pid: Optional[int] = None
    capabilities: Optional[Dict[str, JSON]] = None
    queues: Optional[List[str]] = None
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age: float
    tasks_done: int
    stale: bool
    current_tasks: List[WorkerTask] = Field(default_factory=list, description="Running tasks this worker holds.")


class WorkersResponse(BaseModel):
    workers: List[WorkerModel]
    active: int
    stale: int


class ActiveTask(TaskModel):
    running_seconds: Optional[float] = None


class ActiveResponse(BaseModel):
    items: List[ActiveTask]
    count: int = Field(..., description="All running tasks (items holds at most `limit`).")


class MetricsResponse(BaseModel):
    """``Queue.metrics(window=...)`` as it is: the documented keys below and any the core adds."""

    model_config = ConfigDict(extra="allow")

    at: Optional[int] = Field(None, description="When measured, epoch milliseconds.")
    total: Optional[int] = None
    depth: Optional[Dict[str, int]] = Field(None, description="Tasks by status.")
    by_queue: Optional[Dict[str, Dict[str, Any]]] = None
    by_type: Optional[Dict[str, Dict[str, Any]]] = None
    oldest_queued_age_seconds: Optional[float] = None
    workers: Optional[Dict[str, Any]] = None
    lock_contention: Optional[Dict[str, Any]] = None
    database: Optional[Dict[str, Any]] = None
    window: Optional[Dict[str, Any]] = Field(None, description="Outcomes, rates and processing-time percentiles over the window.")


class RetryResponse(BaseModel):
    task_id: int
    retried: bool
    status: OurStatus


class ClearRequest(_Strict):
    include_running: bool = Field(False, description="Also cancel running tasks (their workers are told to stop).")
    queue: Optional[str] = Field(None, min_length=1, description="Only this queue.")
    type: Optional[str] = Field(None, min_length=1, description="Only this task type.")


class ClearResponse(BaseModel):
    cancelled_queued: int
    cancelled_running: int
    running_left: int = Field(..., description="Running tasks left alone (include_running was false).")


class LiveEvent(BaseModel):
    """One message on the WebSocket or the SSE stream."""

    event: str = Field(..., description="'queue:updated:{project_id}' or 'task:step:progress:{project_id}' (or 'ready').")
    data: Dict[str, JSON]


# ---------------------------------------------------------------- the dashboard's endpoints
class DepthSample(BaseModel):
    """``Queue.stats()`` at one moment (``at``: ms since the epoch)."""

    at: int
    queued: int = Field(..., description="Queued, due now or later.")
    scheduled: int = Field(..., description="Queued tasks whose run_after is still in the future.")
    running: int
    completed: int
    failed: int = Field(..., description="Dead letters.")
    cancelled: int
    total: int


class HistoryResponse(BaseModel):
    interval: float = Field(..., description="Seconds between two samples.")
    size: int = Field(..., description="Samples kept at most (older ones are dropped).")
    started_at: Optional[int] = Field(None, description="When sampling started, ms since the epoch.")
    samples: List[DepthSample] = Field(..., description="Oldest first.")


class SinceStart(BaseModel):
    """Outcomes seen by the server's event stream since it started (not stored in the database)."""

    completed: int = 0
    failed: int = Field(0, description="Tasks moved to the dead letter.")
    cancelled: int = 0
    retried: int = Field(0, description="Failed attempts followed by a retry.")


class BreakdownRow(BaseModel):
    queue: str
    type: Optional[str] = Field(None, description="Null on the rows of the per-queue table.")
    queued: int = Field(..., description="Now: queued, due or not (including retrying).")
    retrying: int = Field(..., description="Now: queued again after a failed attempt or an expired lease.")
    running: int
    failed: int = Field(..., description="Now: dead letters (counted up to finished_scan_limit).")
    cancelled: int = Field(..., description="Now (counted up to finished_scan_limit).")
    since_start: SinceStart


class BreakdownTotals(BaseModel):
    queued: int
    scheduled: int
    running: int
    retrying: int
    completed: int
    failed: int
    cancelled: int
    total: int
    oldest_queued_age_seconds: Optional[float] = None


class BreakdownResponse(BaseModel):
    """Counts by status per queue and per queue and type. Completed tasks are only counted in
    ``totals`` (by status, exact) and in ``since_start``: counting them per type would read every
    finished row."""

    at: datetime
    since: Optional[datetime] = Field(None, description="When the server started counting since_start.")
    totals: BreakdownTotals
    queues: List[BreakdownRow]
    types: List[BreakdownRow]
    finished_scan_limit: int = Field(..., description="Dead letters and cancelled tasks read at most, per status.")
    finished_scan_capped: bool = Field(..., description="True when there were more: failed/cancelled are lower bounds.")


class FailureItem(BaseModel):
    """A failed attempt and the task as it is now (``task.status``: ``queued`` = will retry at
    ``task.run_after``, ``failed`` = dead letter, ``running``/``completed`` = tried again)."""

    task: TaskModel
    failed_at: datetime
    error: Optional[str] = None
    attempts: int = Field(..., description="Attempts made when it failed.")
    worker: Optional[str] = None


class FailuresResponse(BaseModel):
    items: List[FailureItem] = Field(..., description="Newest first.")
    since: Optional[datetime] = Field(
        None, description="Failed attempts followed by a retry are known from this time on; dead letters from any time."
    )


class TaskLogModel(BaseModel):
    id: int
    at: datetime
    level: str
    message: str
    details: JSON = None


class SearchMatch(BaseModel):
    matched_by: Literal["id", "idempotency_key"]
    task: TaskModel
    logs: List[TaskLogModel] = Field(..., description="The task's log lines, oldest first (at most 200).")


class SearchResponse(BaseModel):
    query: str
    matches: List[SearchMatch] = Field(..., description="Empty when no task has this id or idempotency key.")
