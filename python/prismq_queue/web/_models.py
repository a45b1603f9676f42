"""Pydantic v2 models of every request and response body of the REST API (they make the OpenAPI
schema). Field names of the older queue API (``/queue/...``) are kept as they were."""

from __future__ import annotations

import math
import re
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, WrapValidator
from typing_extensions import TypeAliasType

from .._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY

PROJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_PROJECT_ID = re.compile(PROJECT_ID_PATTERN)

# What the core accepts, so that no value it would refuse (or could not convert) gets past the API.
I64_MAX = 2**63 - 1
U64_MAX = 2**64 - 1
MAX_NAME_BYTES = 200  # task types and queue names, as UTF-8
MAX_JSON_DEPTH = 200  # nesting of a payload, as the core counts it
# Times the core stores as epoch milliseconds and gives back as datetimes.
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)
# Idempotency keys of project items are stored under this prefix (see _router): the general API
# may not use it, so that it cannot reach or squat a project's keys.
RESERVED_KEY_PREFIX = "project:"
# Whitespace as the core (Rust's trim), Python and JSON Schema (ECMA) see it: a name made only of
# these is blank. Spelled out so that the schema's pattern means the same in every engine.
_BLANK = (
    "\\t\\n\\u000b\\u000c\\r \\u001c-\\u001f\\u0085\\u00a0\\u1680"
    "\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
)
NOT_BLANK_PATTERN = f"[^{_BLANK}]"
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


def is_blank(v: str) -> bool:
    return _NOT_BLANK.search(v) is None


OurStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
# The older API named a running task "processing"; it had no "cancelled" (see web/__init__.py).
LegacyStatus = Literal["queued", "processing", "completed", "failed", "cancelled"]


def valid_project_id(value: str) -> bool:
    return bool(_PROJECT_ID.match(value))


class _Strict(BaseModel):
    """A request body: unknown fields refused, and no lax coercion (``0`` is not ``false``, ``"5"``
    is not ``5``, a number is not a time)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _unicode_text(v: str) -> str:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return v


def _task_name(v: str) -> str:
    v = _unicode_text(v).strip()
    if is_blank(v):
        raise ValueError("must not be blank")
    if len(v.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_NAME_BYTES} bytes as UTF-8")
    return v


def _reserved_key(v: str) -> str:
    if v.startswith(RESERVED_KEY_PREFIX):
        raise ValueError(
            f"keys starting with {RESERVED_KEY_PREFIX!r} are reserved for project items: "
            "add those with POST /projects/{project_id}/queue/add"
        )
    return v


def _json_value(v: Any) -> Any:
    """A value the core can store as JSON: 64-bit integers, finite numbers, Unicode text, nesting
    the core accepts. The error says where the offending value is."""

    def walk(x: Any, depth: int, where: str) -> None:
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"is nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(x, bool) or x is None:
            return
        if isinstance(x, int):
            if not -(I64_MAX + 1) <= x <= U64_MAX:
                raise ValueError(f"{where or 'the value'}: integers must fit in 64 bits")
        elif isinstance(x, float):
            if not math.isfinite(x):
                raise ValueError(f"{where or 'the value'}: numbers must be finite")
        elif isinstance(x, str):
            _check_at(_unicode_text, x, where)
        elif isinstance(x, list):
            for i, item in enumerate(x):
                walk(item, depth + 1, f"{where}[{i}]")
        elif isinstance(x, dict):
            for k, item in x.items():
                _check_at(_unicode_text, k, where)
                walk(item, depth + 1, f"{where}[{k!r}]")

    walk(v, 0, "")
    return v


def _check_at(check: Any, value: Any, where: str) -> None:
    try:
        check(value)
    except ValueError as e:
        raise ValueError(f"{where}: {e}" if where else str(e)) from None


def _iso_text(v: Any) -> Any:
    # Strict: a time is an ISO 8601 string, never a number of seconds.
    if not isinstance(v, (str, datetime)):
        raise ValueError("must be an ISO 8601 date and time, such as 2030-01-31T08:00:00Z")
    return v


def _storable_time(v: datetime) -> datetime:
    if v.tzinfo is None:
        v = v.replace(tzinfo=timezone.utc)  # naive = UTC
    try:
        utc = v.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError("must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z")
    return utc


JSON = Any
# The schema of a stored JSON value, for the OpenAPI document: 64-bit integers, finite numbers.
# Validation is _json_value's (one walk, with the place of the offending value in the message).
if TYPE_CHECKING:  # to mypy a JSON value; the recursive alias below is for pydantic's schema
    StoredJson = Any
else:
    StoredJson = TypeAliasType(
        "StoredJson",
        Union[
            None,
            bool,
            # Bounds a float spells exactly (OpenAPI documents carry them as floats): up to 2**64 - 1.
            Annotated[int, WithJsonSchema({"type": "integer", "minimum": -(2**63), "exclusiveMaximum": 2**64})],
            Annotated[
                float,
                WithJsonSchema(
                    {
                        "type": "number",
                        "not": {"type": "integer"},
                        "minimum": -sys.float_info.max,
                        "maximum": sys.float_info.max,
                    }
                ),
            ],
            str,
            list["StoredJson"],
            dict[str, "StoredJson"],
        ],
    )
JsonIn = Annotated[StoredJson, WrapValidator(lambda v, _handler: _json_value(v))]
Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_BYTES, pattern=NOT_BLANK_PATTERN),
    AfterValidator(_task_name),
]
Key = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_unicode_text)]
# A queue or type to filter by, as written (no longer than a name can be).
Filter = Annotated[str, Field(min_length=1, max_length=MAX_NAME_BYTES), AfterValidator(_unicode_text)]
Time = Annotated[
    datetime,
    # The pattern says which years (the server also checks the instant, offset applied, in UTC).
    Field(strict=False, json_schema_extra={"format": "date-time", "pattern": "^(19[7-9][0-9]|[2-9][0-9]{3})-"}),
    BeforeValidator(_iso_text),
    AfterValidator(_storable_time),
]


def _integral(v: Any) -> Any:
    # JSON Schema counts 2.0 as an integer: take it, but nothing else lax ("2", true).
    return int(v) if isinstance(v, float) and v.is_integer() else v


StrictInt = Annotated[int, BeforeValidator(_integral), Field(strict=True)]


# ---------------------------------------------------------------- errors
class ErrorResponse(BaseModel):
    """Every error except validation errors: a message and the request id (also in the
    ``X-Request-ID`` header) under which the server logged the details."""

    detail: str = Field(..., description="What went wrong, without internals.")
    request_id: str = Field(..., description="Quote it to find the server's log record.")


class FieldError(BaseModel):
    loc: list[Any] = Field(..., description="Where: ['body', 'priority'], ['query', 'limit'], ...")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: the request was understood but a field is invalid; nothing was written."""

    detail: list[FieldError]
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

    type: Name = Field(..., description="Task type (not blank; at most 200 bytes as UTF-8).")
    priority: StrictInt = Field(DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="1 is the most urgent.")
    payload: JsonIn = Field(default_factory=dict, description="Any JSON value; the handler's input.")
    compatibility: dict[str, JsonIn] = Field(
        default_factory=dict, description="Capabilities a worker must have (stored as the task's `requires`)."
    )
    max_attempts: StrictInt = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=10)
    run_after_utc: Optional[Time] = Field(
        None, description="Not before this time (ISO 8601; naive = UTC; 1970 to 9999)."
    )
    idempotency_key: Optional[Annotated[Key, AfterValidator(_reserved_key)]] = Field(
        None,
        description="An existing key returns the existing task. Keys starting with 'project:' are reserved "
        "for project items.",
        json_schema_extra={"not": {"type": "string", "pattern": "^" + RESERVED_KEY_PREFIX}},
    )


class EnqueueTaskResponse(BaseModel):
    task_id: int
    status: LegacyStatus
    created_at_utc: datetime
    message: str = Field(
        ..., description="'Task enqueued successfully' or 'Task already exists (idempotency key match)'"
    )


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
    compatibility: dict[str, JSON]
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


class AttemptModel(BaseModel):
    """An attempt that ended without success (``Queue.attempts``)."""

    seq: int = Field(..., description="1, 2, ... in the order the task's attempts ended; the latest 25 are kept.")
    number: int = Field(..., description="The task's attempt counter then ('attempt 2 of 5'); retry() restarts it.")
    max_attempts: int
    worker: Optional[str] = None
    started_at: Optional[datetime] = None
    finished_at: datetime
    outcome: str = Field(..., description="failed (the worker reported it), lease_expired or interrupted.")
    error: str
    traceback: Optional[str] = Field(
        None, description="As Python printed it (at most 64 KiB, its end kept); null when none."
    )


class TaskDetailResponse(TaskStatusResponse):
    """One task (``GET /queue/tasks/{task_id}``): the listing's fields, the last failure's
    traceback, and every failed attempt with its error and traceback."""

    traceback: Optional[str] = Field(None, description="The last failed attempt's traceback.")
    failed_attempts: list[AttemptModel] = Field(
        default_factory=list,
        description="Attempts that ended without success, oldest first. Failures recorded before attempts were "
        "kept have none: error_message has the last.",
    )


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


class QueuedTaskStatus(TaskStatusResponse):
    """A queued task of ``GET /queue/status``, with its place in line."""

    position: Optional[int] = Field(
        None,
        description="Queue.position: how many queued tasks of its queue, of every type, a priority-claiming "
        "worker runs before it (0: next, then 1, 2, ... in claim order).",
    )


class QueueStatusResponse(QueueStatsResponse):
    """``GET /queue/status``: one queue's counts (``/queue/stats``' fields), its running tasks, the
    capacity the workers offer, and its queued tasks in claim order with their positions."""

    queue: str = Field(..., description="The queue described (?queue=, default 'default').")
    capacity: Optional[int] = Field(
        None,
        description="How many tasks may run at once: create_router(capacity=...), else the concurrency the live "
        "workers taking the queue report in their heartbeats, added up; null when neither says.",
    )
    available_slots: Optional[int] = Field(
        None, description="capacity - processing_tasks, at least 0; null without a capacity."
    )
    running: list[TaskStatusResponse] = Field(..., description="Running tasks (status 'processing'), at most ?limit.")
    queued: list[QueuedTaskStatus] = Field(..., description="Queued tasks in claim order, at most ?limit.")


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
    requires: Optional[dict[str, JSON]] = None
    timeout: Optional[float] = None


class TaskList(BaseModel):
    items: list[TaskModel]
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
        description="Queue.position: how many queued tasks of the project's queue, of every type, a "
        "priority-claiming worker runs before it (0: next, then 1, 2, ... in claim order); null unless queued "
        "(and not held on dependencies).",
    )
    waiting_on: Optional[list[int]] = Field(
        None,
        description="The tasks it is held on (enqueued with after=[...]): queued but in no line until they "
        "complete; null when it waits on none.",
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
    items: list[ProjectItem] = Field(..., description="Running items, then queued items in the order they will run.")
    finished: list[ProjectItem] = Field(
        default_factory=list, description="With include_finished=true: the latest finished items, newest first."
    )


class ProjectAddRequest(_Strict):
    """``run_after_utc`` and ``delay_seconds`` may not both be given (422)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "not": {
                "required": ["run_after_utc", "delay_seconds"],
                "properties": {"run_after_utc": {"type": "string"}, "delay_seconds": {"type": "number"}},
            }
        },
    )

    type: Name = Field(..., description="Task type (not blank; at most 200 bytes as UTF-8).")
    payload: JsonIn = None
    priority: StrictInt = Field(DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    max_attempts: StrictInt = Field(DEFAULT_MAX_ATTEMPTS, ge=1, le=10)
    run_after_utc: Optional[Time] = Field(
        None, description="Not before this time (ISO 8601; naive = UTC; 1970 to 9999)."
    )
    delay_seconds: Optional[float] = Field(
        None, ge=0, le=366 * 86400, description="Not before this many seconds from now."
    )
    idempotency_key: Optional[Key] = Field(None, description="Unique within the project.")
    compatibility: Optional[dict[str, JsonIn]] = Field(None, description="Capabilities a worker must have.")
    timeout_seconds: Optional[float] = Field(
        None, ge=0.001, le=7 * 86400, description="The longest one attempt may run (at least a millisecond)."
    )


class ProjectAddResponse(ProjectItem):
    created: bool = Field(..., description="False when the idempotency key already named an item (status 200).")


class PriorityUpdate(_Strict):
    priority: StrictInt = Field(..., ge=MIN_PRIORITY, le=MAX_PRIORITY)


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
    capabilities: Optional[dict[str, JSON]] = None
    queues: Optional[list[str]] = None
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age: float
    tasks_done: int
    stale: bool
    current_tasks: list[WorkerTask] = Field(default_factory=list, description="Running tasks this worker holds.")


class WorkersResponse(BaseModel):
    workers: list[WorkerModel]
    active: int
    stale: int


class ActiveTask(TaskModel):
    running_seconds: Optional[float] = None


class ActiveResponse(BaseModel):
    items: list[ActiveTask]
    count: int = Field(..., description="All running tasks (items holds at most `limit`).")


class MetricsResponse(BaseModel):
    """``Queue.metrics(window=...)`` as it is: the documented keys below and any the core adds."""

    model_config = ConfigDict(extra="allow")

    at: Optional[int] = Field(None, description="When measured, epoch milliseconds.")
    total: Optional[int] = None
    depth: Optional[dict[str, int]] = Field(None, description="Tasks by status.")
    by_queue: Optional[dict[str, dict[str, Any]]] = None
    by_type: Optional[dict[str, dict[str, Any]]] = None
    oldest_queued_age_seconds: Optional[float] = None
    workers: Optional[dict[str, Any]] = None
    lock_contention: Optional[dict[str, Any]] = None
    database: Optional[dict[str, Any]] = None
    window: Optional[dict[str, Any]] = Field(
        None, description="Outcomes, rates and processing-time percentiles over the window."
    )


class RetryResponse(BaseModel):
    task_id: int
    retried: bool
    status: OurStatus


class ClearRequest(_Strict):
    include_running: bool = Field(False, description="Also cancel running tasks (their workers are told to stop).")
    queue: Optional[Filter] = Field(None, description="Only this queue.")
    type: Optional[Filter] = Field(None, description="Only this task type.")


class ClearResponse(BaseModel):
    cancelled_queued: int
    cancelled_running: int
    running_left: int = Field(..., description="Running tasks left alone (include_running was false).")


class LiveEvent(BaseModel):
    """One message on the WebSocket or the SSE stream."""

    event: str = Field(
        ..., description="'queue:updated:{project_id}' or 'task:step:progress:{project_id}' (or 'ready')."
    )
    data: dict[str, JSON]


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
    samples: list[DepthSample] = Field(..., description="Oldest first.")


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
    queues: list[BreakdownRow]
    types: list[BreakdownRow]
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
    items: list[FailureItem] = Field(..., description="Newest first.")
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
    logs: list[TaskLogModel] = Field(..., description="The task's log lines, oldest first (at most 200).")
    failed_attempts: list[AttemptModel] = Field(
        default_factory=list, description="Attempts that ended without success, with tracebacks, oldest first."
    )


class SearchResponse(BaseModel):
    query: str
    matches: list[SearchMatch] = Field(..., description="Empty when no task has this id or idempotency key.")
