"""Runs: work an application starts itself, tracked by a run registry.

``Run`` and ``RunStatus`` are the models of the task manager adapter (this package), and
``RunRegistry`` keeps runs in the queue's own SQLite file (table ``runs``), so every process that
opens the file sees the same runs. An application that has its own pydantic ``Run`` and its own
registry class can keep them: the managers only use the fields and methods listed here.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Generic, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._prismq_queue import Queue
from ..errors import InvalidArgument

__all__ = ["Run", "RunStatus", "RunRegistry", "utc_now"]


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


class RunStatus(str, Enum):
    """Where a run is: ``queued -> running -> completed | failed | cancelled``."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


def _as_utc(value: Optional[datetime]) -> Optional[datetime]:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class Run(BaseModel):
    """One run of a module: what was started, with which parameters, and how it went.

    Datetimes are timezone-aware UTC (naive ones given are taken as UTC). ``module_name``
    defaults to ``module_id``. Assignments are validated, so ``run.status = "running"`` stores
    ``RunStatus.RUNNING``.
    """

    model_config = ConfigDict(validate_assignment=True)

    run_id: str = Field(min_length=1)
    module_id: str
    module_name: str = ""
    status: RunStatus = RunStatus.QUEUED
    created_at: datetime = Field(default_factory=utc_now)
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    duration_seconds: Optional[float] = None
    progress_percent: Optional[float] = Field(default=None, ge=0, le=100)
    items_processed: Optional[int] = Field(default=None, ge=0)
    items_total: Optional[int] = Field(default=None, ge=0)
    exit_code: Optional[int] = None
    error_message: Optional[str] = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_at", "started_at", "completed_at", mode="after")
    @classmethod
    def _utc(cls, value: Optional[datetime]) -> Optional[datetime]:
        return _as_utc(value)

    @model_validator(mode="after")
    def _default_name(self) -> Run:
        if not self.module_name:
            # object.__setattr__: no re-validation loop under validate_assignment.
            object.__setattr__(self, "module_name", self.module_id)
        return self

    @property
    def is_active(self) -> bool:
        return RunStatus(self.status).is_active


R = TypeVar("R", bound=BaseModel)


def _status_text(status: Any) -> str:
    value = getattr(status, "value", status)
    return str(value)


def _ms_instant(value: Any) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _as_utc(value)
    raise InvalidArgument(f"expected a datetime, got {type(value).__name__}")



def open_queue(queue: Any) -> tuple[Queue, bool]:
    """A Queue given as itself or as a path; True when it was opened here (the caller closes it)."""
    if isinstance(queue, Queue):
        return queue, False
    if isinstance(queue, (str, os.PathLike)):
        return Queue(queue), True
    raise InvalidArgument(f"queue must be a Queue or a path, got {type(queue).__name__}")

class RunRegistry(Generic[R]):
    """Runs kept in the queue's SQLite file, shared by every process that opens it.

    ``queue`` is a ``Queue`` (the registry uses its connection) or a path (the registry opens
    its own ``Queue`` and closes it in ``close()``). ``run_model`` is the pydantic model runs are
    read back as (``Run`` by default; an application may pass its own). Every method reads or
    writes the file directly, so ``get_run`` returns a fresh object each time: change a run, then
    ``update_run`` it.
    """

    def __init__(
        self,
        queue: Union[Queue, str, os.PathLike[str]] = "prismq_queue.db",
        *,
        run_model: type[R] = Run,  # type: ignore[assignment]
    ) -> None:
        self.queue, self._owns_queue = open_queue(queue)
        if not (isinstance(run_model, type) and issubclass(run_model, BaseModel)):
            raise InvalidArgument("run_model must be a pydantic model class (a subclass of pydantic.BaseModel)")
        self.run_model = run_model

    # ------------------------------------------------------------------ writing
    def add_run(self, run: R) -> None:
        """Store a new run (a run with the same id is replaced)."""
        self._save(run)

    def update_run(self, run: R) -> None:
        """Store the run's current state (inserted when it was not there)."""
        self._save(run)

    def delete_run(self, run_id: str) -> bool:
        """Forget one run; False when it was not there."""
        return self.queue.delete_run(run_id)

    def cleanup_old_runs(self, days: float = 30) -> int:
        """Delete runs that finished more than ``days`` ago; active runs are kept. Returns how many."""
        if not isinstance(days, (int, float)) or isinstance(days, bool) or days < 0:
            raise InvalidArgument(f"days must be a number >= 0, got {days!r}")
        return self.queue.purge_runs(utc_now() - timedelta(days=days))

    # ------------------------------------------------------------------ reading
    def get_run(self, run_id: str) -> Optional[R]:
        data = self.queue.load_run(run_id)
        return None if data is None else self._load(data)

    def get_active_runs(self) -> list[R]:
        """Queued and running runs, oldest first."""
        return self._load_all(self.queue.list_runs(active=True))

    def get_runs_by_module(self, module_id: str) -> list[R]:
        """Runs of one module, oldest first."""
        return self._load_all(self.queue.list_runs(module_id=module_id))

    def get_runs_by_status(self, status: Union[RunStatus, str]) -> list[R]:
        """Runs with one status, oldest first."""
        return self._load_all(self.queue.list_runs(status=_status_text(status)))

    def get_recent_runs(self, limit: int = 50) -> list[R]:
        """The ``limit`` most recently created runs, newest first."""
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise InvalidArgument(f"limit must be an integer >= 0, got {limit!r}")
        return self._load_all(self.queue.list_runs(newest_first=True, limit=limit))

    def close(self) -> None:
        """Close the Queue when the registry opened it itself."""
        if self._owns_queue:
            self.queue.close()

    def __repr__(self) -> str:
        return f"RunRegistry({self.queue.path!r}, run_model={self.run_model.__name__})"

    # ------------------------------------------------------------------ plumbing
    def _save(self, run: Any) -> None:
        if not isinstance(run, BaseModel):
            raise InvalidArgument(
                f"run must be a pydantic model with run_id, module_id and status, got {type(run).__name__}"
            )
        fields: Any = run  # the app's own model may be any BaseModel with these fields
        created = _ms_instant(getattr(run, "created_at", None)) or utc_now()
        completed = _ms_instant(getattr(run, "completed_at", None))
        self.queue.save_run(
            fields.run_id,
            str(getattr(run, "module_id", "") or ""),
            _status_text(fields.status),
            created,
            run.model_dump_json(),
            completed_at=completed,
        )

    def _load(self, data: str) -> R:
        return self.run_model.model_validate_json(data)

    def _load_all(self, rows: list[str]) -> list[R]:
        return [self._load(d) for d in rows]
