"""The endpoints the dashboard reads (all [read], like the other operations endpoints):

- ``GET /queue/history?since=`` depth samples kept by the router's ``Monitor`` (oldest first);
- ``GET /queue/breakdown`` counts by status per queue and per queue and type;
- ``GET /queue/failures?limit=`` recent failed attempts and dead letters, with each task as it is now;
- ``GET /queue/search?q=`` a task by id or by idempotency key, with its log lines.

The live stream over every queue (``/queue/ws``, ``/queue/events``) is in ``_live``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Optional

from fastapi import APIRouter, Query

from .._prismq_queue import Queue, Task
from ..errors import TaskNotFound
from ._errors import FieldInvalid, needs
from ._models import BreakdownResponse, FailuresResponse, HistoryResponse, SearchResponse
from ._monitor import OUTCOMES, Monitor

# Dead letters and cancelled tasks read at most, per status, to count them per queue and type
# (there is no index by lane for finished tasks; dead letters are few unless nobody looks).
FINISHED_SCAN = 5000
LOG_LINES = 200
_TASK_ID = re.compile(r"^#?([0-9]{1,18})$")


def _utc_ms(ms: Optional[int]) -> Optional[datetime]:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


def _task(t: Task) -> dict[str, Any]:
    d = t.as_dict()
    d.pop("lease_token", None)
    return d


def add_routes(
    router: APIRouter,
    queue: Queue,
    run: Callable[..., Awaitable[Any]],
    monitor: Monitor,
    cache: Any,
) -> None:
    @router.get("/queue/history", response_model=HistoryResponse, tags=["dashboard"], summary="Depth by status over time")
    @needs("read")
    async def history(since: Optional[int] = Query(None, ge=0, description="Only samples taken after this time (ms since the epoch).")) -> Any:
        if not monitor.running:
            await run(monitor.start)
        return {"interval": monitor.interval, "size": monitor.size, "started_at": monitor.started_at, "samples": monitor.history(since)}

    @router.get(
        "/queue/breakdown", response_model=BreakdownResponse, tags=["dashboard"], summary="Counts by status per queue and per type"
    )
    @needs("read")
    async def breakdown() -> Any:
        if not monitor.running:
            await run(monitor.start)

        def go() -> dict[str, Any]:
            # The shortest window: only the depth per lane is wanted, not the window's sample.
            m = queue.metrics(window=1)
            lanes: dict[tuple[str, str], dict[str, int]] = {}

            def lane(q: str, t: str) -> dict[str, int]:
                return lanes.setdefault((q, t), {"queued": 0, "retrying": 0, "running": 0, "failed": 0, "cancelled": 0})

            for q, types in (m.get("by_queue_and_type") or {}).items():
                for t, d in types.items():
                    row = lane(q, t)
                    for k in ("queued", "retrying", "running"):
                        row[k] = int(d.get(k, 0))
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
            totals = {k: int(depth.get(k, 0)) for k in ("queued", "running", "completed", "failed", "cancelled")}
            totals.update(
                scheduled=int(m.get("scheduled") or 0),
                retrying=int(m.get("retrying") or 0),
                total=int(m.get("total") or 0),
                oldest_queued_age_seconds=m.get("oldest_queued_age_seconds"),
            )
            return {
                "at": datetime.now(timezone.utc),
                "since": _utc_ms(monitor.started_at),
                "totals": totals,
                "queues": [queues[q] for q in sorted(queues)],
                "types": types_rows,
                "finished_scan_limit": FINISHED_SCAN,
                "finished_scan_capped": capped,
            }

        return await cache.fetch(("breakdown",), None, lambda: run(go))

    @router.get(
        "/queue/failures",
        response_model=FailuresResponse,
        tags=["dashboard"],
        summary="Recent failed attempts (retrying or dead) and dead letters, newest first",
    )
    @needs("read")
    async def failures(limit: int = Query(50, ge=1, le=200)) -> Any:
        if not monitor.running:
            await run(monitor.start)

        def go() -> dict[str, Any]:
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
                        "task": _task(t),
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
                            "task": _task(t),
                            "failed_at": t.finished_at or t.updated_at,
                            "error": t.error,
                            "attempts": t.attempts,
                            "worker": t.locked_by,
                        }
                    )
            items.sort(key=lambda i: (i["failed_at"], i["task"]["id"]), reverse=True)
            return {"items": items[:limit], "since": _utc_ms(monitor.started_at)}

        return await run(go)

    @router.get(
        "/queue/search",
        response_model=SearchResponse,
        tags=["dashboard"],
        summary="A task by id or by idempotency key, with its log",
    )
    @needs("read")
    async def search(q: str = Query(..., min_length=1, max_length=200, description="A task id (123 or #123) or an idempotency key.")) -> Any:
        text = q.strip()
        if not text:
            raise FieldInvalid(["query", "q"], "give a task id or an idempotency key")

        def go() -> dict[str, Any]:
            found: list[tuple[str, Task]] = []
            m = _TASK_ID.match(text)
            if m:
                try:
                    found.append(("id", queue.get(int(m.group(1)))))
                except TaskNotFound:
                    pass
            by_key = queue.find(text)
            if by_key is not None and all(t.id != by_key.id for _, t in found):
                found.append(("idempotency_key", by_key))
            matches = []
            for how, t in found:
                logs = [
                    {"id": lg.id, "at": lg.at, "level": lg.level, "message": lg.message, "details": lg.details}
                    for lg in queue.logs(t.id, limit=LOG_LINES)
                ]
                matches.append({"matched_by": how, "task": _task(t), "logs": logs})
            return {"query": text, "matches": matches}

        return await run(go)
