"""What the dashboard's endpoints (``_routers.dashboard``) answer, read from the queue and the
router's ``Monitor``:

- ``breakdown_now``: counts by status per queue and per queue and type (``GET /queue/breakdown``);
- ``failures_now``: recent failed attempts and dead letters, each task as it is now;
- ``search_now``: a task by id or by idempotency key, with its log lines and failed attempts;
- ``read_snapshot``: everything the page's panels show (the limits too), from one state of the
  database (``GET /queue/dashboard``): the page renders every update from one of these, so its
  panels never disagree;
- ``running_rows`` and ``worker_rows``, which ``GET /queue/active`` and ``GET /queue/workers``
  answer with too.

The live stream over every queue (``/queue/ws``, ``/queue/events``) is in ``_live``.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import Field

from .._prismq_queue import Queue, Task
from ..errors import TaskNotFound
from ._limit_models import LimitModel
from ._models import ActiveResponse, BreakdownResponse, FailuresResponse, TaskList, WorkersResponse
from ._monitor import OUTCOMES, Monitor
from ._responses import task_view

# Dead letters and cancelled tasks read at most, per status, to count them per queue and type
# (there is no index by lane for finished tasks; dead letters are few unless nobody looks).
FINISHED_SCAN = 5000
LOG_LINES = 200
_TASK_ID = re.compile(r"^#?([0-9]{1,18})$")
# The snapshot's lists: the page shows this many failures and dead letters; running tasks are
# one per busy worker slot, so all of them up to RUNNING_MAX.
SNAPSHOT_ROWS = 25
RUNNING_MAX = 1000
# Reads of a snapshot tried before one is returned that another process's commit may have split.
SNAPSHOT_TRIES = 5
# A snapshot is reused while nothing was committed since, at most this long (heartbeat ages move).
SNAPSHOT_REUSE = 2.0


class DashboardSnapshot(BreakdownResponse):
    """Every panel of the dashboard, read from one state of the database."""

    consistent: bool = Field(
        ..., description="True when no commit landed while it was read (every number from the same state)."
    )
    running: ActiveResponse
    workers: WorkersResponse
    failures: FailuresResponse
    dead_letters: TaskList
    limits: list[LimitModel] = Field(
        default_factory=list, description="Every limit with its slots in use and waiting tasks (Queue.limits())."
    )


def _utc_ms(ms: Optional[int]) -> Optional[datetime]:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


def breakdown_now(queue: Queue, monitor: Monitor, running: Optional[list[Task]] = None) -> dict[str, Any]:
    """Counts by status per queue and per queue and type. With ``running`` (every running task,
    read beside it), the running counts are those rows', and the queued ones add up to the totals:
    each number the page shows twice is then one count."""
    m = queue.metrics(window=1)  # the shortest window: the depth per lane is wanted, not the sample
    lanes: dict[tuple[str, str], dict[str, int]] = {}

    def lane(q: str, t: str) -> dict[str, int]:
        return lanes.setdefault((q, t), {"queued": 0, "retrying": 0, "running": 0, "failed": 0, "cancelled": 0})

    for q, types in (m.get("by_queue_and_type") or {}).items():
        for t, d in types.items():
            row = lane(q, t)
            for k in ("queued", "retrying", "running"):
                row[k] = int(d.get(k, 0))
    if running is not None:
        for row in lanes.values():
            row["running"] = 0
        for task in running:
            lane(task.queue, task.type)["running"] += 1
    capped = False
    for status in ("failed", "cancelled"):
        after = None
        read = 0
        while read < FINISHED_SCAN:
            page = queue.list(status=status, limit=min(1000, FINISHED_SCAN - read), after_id=after)
            for task in page:
                lane(task.queue, task.type)[status] += 1
            read += len(page)
            if len(page) < 1000:
                break
            after = page[-1].id
        else:
            capped = capped or bool(queue.list(status=status, limit=1, after_id=after))
    outcomes = monitor.outcomes()
    for q, t in outcomes:
        lane(q, t)
    zero = dict.fromkeys(OUTCOMES, 0)
    types_rows = []
    queues: dict[str, dict[str, Any]] = {}
    for (q, t), row in sorted(lanes.items()):
        since = outcomes.get((q, t), zero)
        types_rows.append({"queue": q, "type": t, **row, "since_start": since})
        qrow = queues.setdefault(q, {"queue": q, "type": None, **dict.fromkeys(row, 0), "since_start": dict(zero)})
        for k, v in row.items():
            qrow[k] += v
        for k, v in since.items():
            qrow["since_start"][k] += v
    depth = m.get("depth") or {}
    statuses = ("queued", "running", "completed", "failed", "cancelled")
    totals: dict[str, Any] = {k: int(depth.get(k, 0)) for k in statuses}
    totals.update(
        scheduled=int(m.get("scheduled") or 0),
        retrying=int(m.get("retrying") or 0),
        total=int(m.get("total") or 0),
        oldest_queued_age_seconds=m.get("oldest_queued_age_seconds"),
    )
    if running is not None:
        for k in ("queued", "retrying", "running"):
            totals[k] = sum(row[k] for row in lanes.values())
    return {
        "at": datetime.now(timezone.utc),
        "since": _utc_ms(monitor.started_at),
        "totals": totals,
        "queues": [queues[q] for q in sorted(queues)],
        "types": types_rows,
        "finished_scan_limit": FINISHED_SCAN,
        "finished_scan_capped": capped,
    }


def failures_now(queue: Queue, monitor: Monitor, limit: int) -> dict[str, Any]:
    """Recent failed attempts (the monitor's ring) and dead letters, each with its task as it is now."""
    items: list[dict[str, Any]] = []
    seen: set[int] = set()
    for f in monitor.failures():
        if len(items) >= limit:
            break
        try:
            t = queue.get(f["task_id"])
        except TaskNotFound:  # purged since
            continue
        seen.add(t.id)
        items.append(
            {
                "task": task_view(t),
                "failed_at": _utc_ms(f["failed_at"]),
                "error": f["error"],
                "attempts": f["attempts"],
                "worker": f["worker"],
            }
        )
    # Dead letters from before the server started (or pushed out of the ring) too.
    for t in queue.list(status="failed", limit=limit, order="desc"):
        if t.id not in seen:
            items.append(
                {
                    "task": task_view(t),
                    "failed_at": t.finished_at or t.updated_at,
                    "error": t.error,
                    "attempts": t.attempts,
                    "worker": t.locked_by,
                }
            )
    items.sort(key=lambda i: (i["failed_at"], i["task"]["id"]), reverse=True)
    return {"items": items[:limit], "since": _utc_ms(monitor.started_at)}


def worker_rows(queue: Queue, running: list[Task]) -> dict[str, Any]:
    """``GET /queue/workers``'s answer, with each worker's current tasks taken from ``running``."""
    holding: dict[str, list[dict[str, Any]]] = {}
    for t in running:
        if t.locked_by is not None:
            holding.setdefault(t.locked_by, []).append(
                {"id": t.id, "type": t.type, "queue": t.queue, "progress": t.progress, "step": t.step,
                 "message": t.message, "started_at": t.started_at}
            )
    ws = queue.workers()
    rows = [
        {"id": w.id, "host": w.host, "pid": w.pid, "capabilities": w.capabilities, "queues": w.queues,
         "started_at": w.started_at, "last_heartbeat": w.last_heartbeat, "heartbeat_age": w.heartbeat_age,
         "tasks_done": w.tasks_done, "stale": w.stale, "current_tasks": holding.get(w.id, [])}
        for w in ws
    ]
    stale = sum(1 for w in ws if w.stale)
    return {"workers": rows, "active": len(ws) - stale, "stale": stale}


def running_rows(running: list[Task]) -> list[dict[str, Any]]:
    """Running tasks as ``GET /queue/active`` shows them: with the seconds each has run."""
    now = time.time()
    rows = []
    for t in running:
        row = task_view(t)
        row["running_seconds"] = round(now - t.started_at.timestamp(), 3) if t.started_at else None
        rows.append(row)
    return rows


def _panels(queue: Queue, monitor: Monitor) -> dict[str, Any]:
    running = queue.list(status="running", limit=RUNNING_MAX)
    board = breakdown_now(queue, monitor, running if len(running) < RUNNING_MAX else None)
    items = running_rows(running)
    dead = queue.list(status="failed", limit=SNAPSHOT_ROWS, order="desc")
    return {
        **board,
        "running": {"items": items, "count": board["totals"]["running"]},
        "workers": worker_rows(queue, running),
        "failures": failures_now(queue, monitor, SNAPSHOT_ROWS),
        "dead_letters": {"items": [task_view(t) for t in dead], "next_after_id": None},
        "limits": queue.limits(),
    }


def read_snapshot(queue: Queue, monitor: Monitor) -> tuple[Any, dict[str, Any]]:
    """Every panel of the dashboard from one state of the database: ``(token, snapshot)``.

    The core reads each call in a transaction of its own; the panels need several calls. They
    are read between two looks at the database's change token (this process's commits and
    SQLite's data_version, which moves with any process's commit): equal looks mean nothing was
    committed in between, so every call read the same state, as one read transaction would.
    Otherwise it reads again; after SNAPSHOT_TRIES (a queue committing all the time) it returns
    the last read with ``consistent`` false and token None. Even then the running counts, rows
    and workers' tasks come from one list, and the queued totals are the per-queue sums.
    """
    for _ in range(SNAPSHOT_TRIES):
        token = queue.change_token()
        snapshot = _panels(queue, monitor)
        if queue.change_token() == token:
            return token, {**snapshot, "consistent": True}
    return None, {**snapshot, "consistent": False}


class SnapshotReuse:
    """The last snapshot, reused while nothing was committed since and for at most SNAPSHOT_REUSE
    seconds: open pages refetch after every event, and while nothing changed they share one read."""

    def __init__(self) -> None:
        self.token: Any = None
        self.until = 0.0
        self.snapshot: dict[str, Any] = {}

    def read(self, queue: Queue, monitor: Monitor) -> dict[str, Any]:
        if self.token is not None and time.monotonic() < self.until and queue.change_token() == self.token:
            return self.snapshot
        self.token, self.snapshot = read_snapshot(queue, monitor)
        self.until = time.monotonic() + SNAPSHOT_REUSE
        return self.snapshot


def search_now(queue: Queue, text: str) -> dict[str, Any]:
    """Tasks whose id (``123`` or ``#123``) or idempotency key is ``text``, with their log lines and
    failed attempts (``GET /queue/search``)."""
    found: list[tuple[str, Task]] = []
    as_id = _TASK_ID.match(text)
    if as_id:
        try:
            found.append(("id", queue.get(int(as_id.group(1)))))
        except TaskNotFound:
            pass
    by_key = queue.find(text)
    if by_key is not None and all(t.id != by_key.id for _, t in found):
        found.append(("idempotency_key", by_key))
    matches = []
    for how, t in found:
        logs = [
            {"id": line.id, "at": line.at, "level": line.level, "message": line.message, "details": line.details}
            for line in queue.logs(t.id, limit=LOG_LINES)
        ]
        attempts = [a.as_dict() for a in queue.attempts(t.id)]
        matches.append({"matched_by": how, "task": task_view(t), "logs": logs, "failed_attempts": attempts})
    return {"query": text, "matches": matches}
