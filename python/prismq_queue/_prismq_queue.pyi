"""Type stubs for the native module. Import these names from ``prismq_queue``, not from here."""

from __future__ import annotations

import builtins
import os
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, Union, final

from .enums import Status, Strategy

__version__: str
SCHEMA_VERSION: int
DEFAULT_MAX_PAYLOAD_BYTES: int
MIN_PRIORITY: int
MAX_PRIORITY: int
DEFAULT_PRIORITY: int
DEFAULT_MAX_ATTEMPTS: int
# Attempt records (Queue.attempts): an error keeps its first MAX_ERROR_BYTES, a traceback its last
# MAX_TRACEBACK_BYTES, a task its latest MAX_ATTEMPT_RECORDS records.
MAX_ERROR_BYTES: int
MAX_TRACEBACK_BYTES: int
MAX_ATTEMPT_RECORDS: int
# The bundled SQLite (every process of this build uses it, whatever the system has).
SQLITE_VERSION: str
SQLITE_COMPILE_OPTIONS: tuple[str, ...]

# A duration: at most 100 years (3,155,760,000 s). An instant: within the years 1..9999 UTC.
# Values outside are refused with InvalidArgument before anything is written.
Seconds = Union[int, float, timedelta]
Instant = Union[datetime, int, float]
StrategyName = Union[Strategy, Literal["fifo", "lifo", "priority", "weighted_random"]]
StatusName = Union[Status, Literal["queued", "running", "completed", "failed", "cancelled"]]
JSON = Any

def copy_queue(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], object] | None = None,
    allow_live_leases: bool = False,
) -> dict[str, Any]:
    """Copy every task (ids, status, attempts, leases, times, payloads and results byte for
    byte, idempotency keys), log line, attempt record, run, dependency and hold (a held task stays
    held until its dependencies complete on the destination), and per-queue retry policy, limit
    (its rate starting with a full bucket), schedule and default timeout of the queue at
    ``source`` into ``destination`` (a SQLite path or a ``postgresql://`` URL each; created if
    missing). Safe to run twice: rows already there and equal are left alone. Refused with
    ``InvalidArgument`` before anything is written when ``source`` is missing or is
    ``destination``, when the destination holds another queue's rows, or when tasks of the
    source run under a live lease (unless ``allow_live_leases``: they are copied as running).
    ``progress(rows_done, rows_total)`` is called after each batch. Returns ``{"source",
    "destination", "copied", "already_there", "live_leases"}`` (rows per table)."""

@final
class Task:
    """A snapshot of one task. Tasks returned by ``claim`` also carry the claim's lease token."""

    @property
    def id(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def payload(self) -> JSON: ...
    @property
    def priority(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def attempts(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def run_after(self) -> datetime: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def locked_by(self) -> str | None: ...
    @property
    def lease_until(self) -> datetime | None: ...
    @property
    def lease_token(self) -> int | None: ...
    @property
    def after(self) -> list[int]:
        """The tasks it was enqueued after (filled by ``get``; [] in listings and claims)."""
    @property
    def waiting_on(self) -> list[int]:
        """Those of ``after`` it is still held on."""
    @property
    def error(self) -> str | None:
        """The last failed attempt's error (``Queue.attempts`` has every attempt's)."""
    @property
    def traceback(self) -> str | None:
        """The last failed attempt's traceback, as Python formats it (at most
        ``MAX_TRACEBACK_BYTES``, its end kept). Read by ``get`` and ``find``; None in the snapshots
        ``list`` and ``claim`` return, and for a failure without one (a timeout, an expired
        lease, an error given as text)."""
    @property
    def result(self) -> JSON | None: ...
    @property
    def progress(self) -> float | None: ...
    @property
    def step(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def requires(self) -> dict[str, JSON] | None: ...
    @property
    def timeout(self) -> float | None:
        """Seconds the attempt may run before the worker fails it: the task's own ``timeout``, else
        its queue's default (``Queue.set_default_timeout``, 300 s unless set); ``None``: no limit."""
    @property
    def damaged(self) -> list[str]:
        """What this task's row holds that could not be read as stored (a damaged row), one
        ``"field: why"`` line each; empty for every row the queue wrote itself. A time outside
        the years 1..9999 reads as the nearest of ``datetime.min`` and ``datetime.max`` (UTC); a
        JSON field (payload, result, requires) that does not parse raises ``DatabaseError`` with
        ``kind == "corrupt"`` naming the task and the field."""
    def as_dict(self) -> dict[str, Any]:
        """Every field; never raises for a damaged row: an unreadable JSON field is None, and the
        key ``"damaged"`` (present only then) lists what could not be read."""

@final
class WorkerInfo:
    @property
    def id(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def capabilities(self) -> dict[str, JSON] | None: ...
    @property
    def queues(self) -> list[str] | None: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def last_heartbeat(self) -> datetime: ...
    @property
    def heartbeat_age(self) -> float: ...
    @property
    def tasks_done(self) -> int: ...
    @property
    def stale(self) -> bool: ...
    @property
    def concurrency(self) -> int | None:
        """How many tasks it runs at once, as its last heartbeat said; None: not said."""

@final
class TaskLog:
    @property
    def id(self) -> int: ...
    @property
    def task_id(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def level(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def details(self) -> JSON | None: ...

@final
class TaskAttempt:
    """One attempt of a task that ended without success, from ``Queue.attempts``."""

    @property
    def task_id(self) -> int: ...
    @property
    def seq(self) -> int:
        """1, 2, ... in the order the task's attempts ended, never restarted: a task keeps its
        latest ``MAX_ATTEMPT_RECORDS``, so a first ``seq`` above 1 means earlier ones were dropped."""
    @property
    def number(self) -> int:
        """The task's attempt counter for this attempt ("attempt 2 of 5"); ``retry()`` restarts it."""
    @property
    def max_attempts(self) -> int: ...
    @property
    def worker(self) -> str | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime: ...
    @property
    def outcome(self) -> Literal["failed", "lease_expired", "interrupted"]:
        """``failed``: its worker reported a failure (an exception, a timeout); ``lease_expired``:
        its worker stopped renewing the lease; ``interrupted``: the task manager found its run
        interrupted."""
    @property
    def error(self) -> str:
        """``"ExceptionName: message"`` (at most ``MAX_ERROR_BYTES``, its beginning kept)."""
    @property
    def traceback(self) -> str | None:
        """As Python formats it, chained exceptions included (at most ``MAX_TRACEBACK_BYTES``: a
        longer one keeps its end, after a line saying how much was dropped); None when there was
        none."""
    def as_dict(self) -> dict[str, Any]: ...

@final
class ChangeCursor:
    """What one event stream has seen (opaque); see ``Queue.changes_since`` and ``events.watch``."""

    @property
    def stopped(self) -> bool: ...
    def stop(self) -> None: ...

# (kind, id, type, queue, status, progress, step, message, at_ms, attempts, max_attempts, worker, error)
Change = tuple[
    str, int, str, str, str, Union[float, None], Union[str, None], Union[str, None], int, int, int,
    Union[str, None], Union[str, None],
]

# A failed attempt for fail_many and settle: (task, error[, retry[, traceback]]).
FailItem = Union[
    tuple[Task, Union[str, BaseException]],
    tuple[Task, Union[str, BaseException], bool],
    tuple[Task, Union[str, BaseException], bool, Union[str, None]],
]

@final
class Queue:
    """A queue database file. Thread-safe; safe to open from many processes at once.

    An argument left out or given as None takes the core's default (the binding receives None and
    the core fills it in): path "prismq_queue.db", busy_timeout 60 s, synchronous "normal",
    stale_worker_after 30 s; queue "default" (runs: "runs"; re-runs: "default"), priority 100,
    max_attempts 5, lease 60 s, rerun_attempts 3, strategy "priority"; limit 1 (claim, settle),
    100 (list, logs), 1000 (changes_since); order "asc"; checkpoint mode "passive"; metrics window
    300 s; wait_for_change timeout 1 s; changes_since timeout and min_gap 0; batch_size 2000
    (purge), 1000 (import_legacy)."""

    def __new__(
        cls,
        path: str | os.PathLike[str] | None = ...,
        *,
        busy_timeout: Seconds | None = None,
        synchronous: Literal["normal", "full", "off"] | None = None,
        max_payload_bytes: int | None = None,
        stale_worker_after: Seconds | None = None,
    ) -> Queue: ...
    @property
    def path(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Queue: ...
    def __exit__(self, *args: object) -> bool: ...

    # producing
    def enqueue(
        self,
        type: str,
        payload: JSON = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: Seconds | None = None,
        run_after: Instant | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        requires: Mapping[str, JSON] | None = None,
        timeout: Seconds | None = None,
        retry: Mapping[str, float] | None = None,
        after: Iterable[int | Task] | None = None,
        on_dependency_failure: Literal["cancel", "run"] | None = None,
    ) -> int: ...
    def enqueue_many(self, items: Iterable[Mapping[str, Any]]) -> list[int]: ...

    # periodic tasks (docs/schedules.md); enqueue_options: priority, max_attempts, requires,
    # timeout, retry
    def schedule(
        self,
        name: str,
        type: str,
        *,
        cron: str | None = None,
        every: Seconds | None = None,
        payload: JSON = None,
        queue: str | None = None,
        tz: str | None = None,
        missed: Literal["skip", "catch_up"] | None = None,
        **enqueue_options: Any,
    ) -> dict[str, Any]: ...
    def schedules(self) -> list[dict[str, Any]]: ...
    def pause_schedule(self, name: str) -> dict[str, Any]: ...
    def resume_schedule(self, name: str) -> dict[str, Any]: ...
    def unschedule(self, name: str) -> bool: ...
    def run_schedules(self, *, now: Instant | None = None) -> int: ...

    # reading and steering
    def get(self, task_id: int) -> Task: ...
    def find(self, idempotency_key: str) -> Task | None: ...
    def list(
        self,
        *,
        status: StatusName | None = None,
        type: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        after_id: int | None = None,
        order: Literal["asc", "desc"] | None = None,
    ) -> builtins.list[Task]: ...
    def stats(self, *, queue: str | None = None) -> dict[str, Any]: ...
    def cancel(self, task_id: int) -> bool: ...
    def set_priority(self, task_id: int, priority: int) -> bool: ...
    def retry(self, task_id: int) -> bool: ...
    def set_retry_policy(
        self,
        queue: str,
        *,
        base: float | None = None,
        factor: float | None = None,
        cap: float | None = None,
        jitter: float | None = None,
    ) -> None: ...
    def set_default_timeout(self, queue: str, timeout: Seconds | None) -> None:
        """Tasks of ``queue`` without a ``timeout`` of their own run at most ``timeout`` seconds;
        ``None``: without a limit. 300 s for a queue that never set one."""
    def default_timeout(self, queue: str) -> float | None: ...

    # limits (docs/limits.md): each dict of limits() has queue, type, concurrency, per, rate,
    # running, waiting, tokens
    def set_limit(
        self,
        queue: str,
        *,
        type: str | None = None,
        concurrency: int | None = None,
        per: str | None = None,
        rate: str | None = None,
    ) -> None: ...
    def limits(self) -> builtins.list[dict[str, Any]]: ...
    def remove_limit(self, queue: str, *, type: str | None = None) -> bool: ...

    # consuming
    def claim(
        self,
        worker_id: str,
        *,
        strategy: StrategyName | None = None,
        queues: str | Sequence[str] | None = None,
        types: str | Sequence[str] | None = None,
        capabilities: Mapping[str, JSON] | None = None,
        lease: Seconds | None = None,
        limit: int | None = None,
    ) -> builtins.list[Task]: ...
    def complete(self, task: Task, result: JSON = None) -> None: ...
    def complete_many(self, items: Iterable[Task | tuple[Task, JSON]]) -> builtins.list[bool]: ...
    def fail(
        self, task: Task, error: str | BaseException, *, retry: bool = True, traceback: str | None = None
    ) -> datetime | None:
        """Record a failed attempt: the time of the next one, or None for the dead letter. An
        exception's traceback is stored with the attempt (``traceback=`` text wins)."""
    def fail_many(self, items: Iterable[FailItem]) -> builtins.list[bool]: ...
    def settle(
        self,
        complete: Iterable[Task | tuple[Task, JSON]] | None = None,
        fail: Iterable[FailItem] | None = None,
        *,
        worker_id: str | None = None,
        strategy: StrategyName | None = None,
        queues: str | Sequence[str] | None = None,
        types: str | Sequence[str] | None = None,
        capabilities: Mapping[str, JSON] | None = None,
        lease: Seconds | None = None,
        limit: int | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[bool], builtins.list[Task]]: ...
    def renew(self, task: Task, lease: Seconds | None = None) -> datetime: ...
    def release(self, task: Task) -> bool: ...
    def progress(
        self, task: Task, percent: float | None = None, *, step: str | None = None, message: str | None = None
    ) -> None: ...

    # workers, logs, metrics
    def heartbeat(
        self,
        worker_id: str,
        capabilities: Mapping[str, JSON] | None = None,
        *,
        queues: Sequence[str] | None = None,
        host: str | None = None,
        pid: int | None = None,
        tasks_done: int | None = None,
        concurrency: int | None = None,
    ) -> None: ...
    def workers(self) -> builtins.list[WorkerInfo]: ...
    def remove_worker(self, worker_id: str) -> bool: ...
    def sweep(self) -> int: ...
    def lease_clock(self) -> dict[str, Any]:
        """Which clock this handle's leases end on: ``{"clock": "monotonic" | "wall", "boot_id":
        str, "boot_seq": int | None}`` (``boot_seq``, this boot's number in the file, is None while
        a handle opened on a read-only file has not written yet). Monotonic: leases ignore steps
        of the system clock and suspend, and every lease of an earlier boot counts as expired;
        "wall" only where the system gives no boot identity."""
    def wait_for_change(self, timeout: Seconds | None = None, *, since: tuple[int, int] | None = None) -> bool: ...
    def change_token(self) -> tuple[int, int]: ...
    def wake(self) -> None: ...
    def attempts(self, task_id: int) -> builtins.list[TaskAttempt]:
        """The task's attempts that ended without success (failed, lease expired, interrupted),
        oldest first, each with its error and traceback; its latest ``MAX_ATTEMPT_RECORDS``.
        Failures recorded before schema version 9 have none: ``Task.error`` keeps the last."""
    def logs(self, task_id: int, *, limit: int | None = None) -> builtins.list[TaskLog]: ...
    def log(self, task_id: int, level: str, message: str, details: JSON = None) -> int: ...
    def metrics(self, *, window: Seconds | None = None) -> dict[str, Any]: ...
    def position(self, task_id: int, *, strategy: StrategyName | None = None) -> int | None: ...
    def change_cursor(self, *, queues: Sequence[str] | None = None) -> ChangeCursor: ...
    def changes_since(
        self,
        cursor: ChangeCursor,
        *,
        timeout: Seconds | None = None,
        min_gap: Seconds | None = None,
        limit: int | None = None,
    ) -> tuple[builtins.list[Change], bool]: ...
    def queue_depths(self, queues: Sequence[str]) -> dict[str, dict[str, int]]: ...
    def explain_claim(self, strategy: StrategyName | None = None) -> builtins.list[str]: ...

    # maintenance
    def backup(
        self,
        dest_path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int, int], object] | None = None,
    ) -> dict[str, Any]:
        """A consistent copy while others keep working (one snapshot, copied page by page into a
        temporary file renamed into place when complete; a self-contained file, not in WAL mode).
        Refuses an existing ``dest_path`` unless ``overwrite``, and any file with a ``-wal``,
        ``-shm`` or ``-journal`` beside it. ``progress(pages_done, pages_total)`` is called between
        steps, at most every 0.1 s; an exception from it (or Ctrl-C) stops the backup and leaves
        ``dest_path`` as it was. Partial files of earlier backups to ``dest_path`` whose process
        is gone (killed outright) are removed first. Returns ``{"path", "bytes", "pages",
        "removed_partials"}`` (the names of those partial files)."""
    @staticmethod
    def restore(
        backup: str | os.PathLike[str],
        target: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], object] | None = None,
    ) -> dict[str, Any]:
        """Replace the database file ``target`` (created if missing) with ``backup``. The backup
        is checked first (read-only: a SQLite file, ``integrity_check`` clean, a prismq_queue
        database of a schema this build opens; ``InvalidArgument`` or ``DatabaseError`` if not);
        a target that any connection has open, in any process, is refused (``DatabaseError``);
        the copy is one transaction, so a failure or an exception from ``progress(pages_done,
        pages_total)`` leaves the target as it was; no ``-wal``/``-shm`` file is left to replay.
        Returns ``{"backup", "target", "bytes", "pages", "schema_version", "created"}``."""
    def checkpoint(self, mode: Literal["passive", "full", "restart", "truncate"] | None = None) -> dict[str, Any]: ...
    def vacuum(self, *, progress: Callable[[int, None], object] | None = None) -> None:
        """Rebuild the file, reclaiming free pages (holds the write lock while it runs).
        ``progress(ticks, None)`` is called about every 0.1 s; an exception from it (or Ctrl-C)
        interrupts the VACUUM, which then changes nothing."""
    def analyze(self) -> None: ...
    def integrity_check(self) -> builtins.list[str]: ...
    def purge(
        self,
        *,
        older_than: Seconds,
        statuses: Sequence[StatusName] | None = ...,
        batch_size: int | None = None,
        progress: Callable[[int, int], object] | None = None,
    ) -> int:
        """Delete finished tasks (and their logs) that finished more than ``older_than`` ago,
        ``batch_size`` per transaction; ``progress(deleted, total)`` after each batch. An
        exception from it (or Ctrl-C) stops the purge; batches already deleted stay deleted."""

    # runs of the task manager adapter (used by RunRegistry and QueuedTaskManager)
    def save_run(
        self,
        run_id: str,
        module_id: str,
        status: str,
        created_at: datetime,
        data: str | Mapping[str, JSON],
        *,
        completed_at: datetime | None = None,
    ) -> None:
        """Insert or replace a run of the run registry; ``data`` is the whole run (JSON object)."""
    def load_run(self, run_id: str) -> str | None:
        """The JSON text of a run, or None."""
    def list_runs(
        self,
        *,
        status: str | None = None,
        module_id: str | None = None,
        active: bool = False,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> builtins.list[str]:
        """JSON texts of runs by creation time, filtered by at most one of status, module_id and
        active (queued or running)."""
    def delete_run(self, run_id: str) -> bool: ...
    def purge_runs(self, completed_before: Instant) -> int:
        """Delete runs that finished before ``completed_before``; returns how many."""
    def start_run(
        self,
        run_id: str,
        type: str,
        payload: JSON = None,
        *,
        worker_id: str,
        queue: str | None = None,
        lease: Seconds | None = ...,
        rerun_attempts: int | None = None,
        takeover_from: Sequence[str] | None = None,
    ) -> Task:
        """Insert the task of an in-process run (idempotency key = ``run_id``), or restart the row
        of an earlier run with that id (attempts + 1), directly in ``running`` with a fresh lease
        for ``worker_id``, in one transaction. The returned Task carries the lease, for
        complete/fail/renew. ``InvalidArgument`` while another holder runs the same id with a live
        lease (unless it is listed in ``takeover_from``)."""
    def recover_runs(
        self,
        *,
        queue: str | None = None,
        rerun_types: Sequence[str] | None = None,
        rerun_queue: str | None = None,
        dead_holders: Sequence[str] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Interrupted runs of ``queue`` (lease expired, holder in ``dead_holders``, or put back by
        the rescuer): re-queued in ``rerun_queue`` when their type is in ``rerun_types``, else
        failed as interrupted. One dict per run: task_id, run_id, type, holder, requeued, error."""

    # migration from the older Python queue
    def import_legacy(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], object] | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """Import the older queue's SQLite file (opened read-only, never modified), in
        transactions of ``batch_size`` tasks; ``progress(done, total)`` is called after each.
        Running it again imports nothing twice. Returns the report: ``source``, ``total``,
        ``imported``, ``skipped_already_imported``, ``mapped_to_existing``, ``skipped_invalid``,
        ``by_status``, ``by_legacy_status``, ``requeued_from_lease``, ``priority_clamped``,
        ``logs_imported``, ``logs_orphaned``, ``legacy_workers``, ``legacy_workers_total``,
        ``problems`` (dicts: ``table``, ``legacy_id``, ``log_id``, ``column``, ``value``,
        ``reason``, ``action``), ``problem_count`` and ``notes``. Raises ``InvalidArgument`` for a
        file that is not such a database."""
    @staticmethod
    def inspect_legacy(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Check an old file and count its tasks (``tasks``, ``by_status``, ``logs``,
        ``workers``, ``missing_columns``, ``source``) without importing or writing anything."""
