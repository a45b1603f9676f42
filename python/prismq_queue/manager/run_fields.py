"""How the managers update a run object: the app's own pydantic ``Run`` (or any object with the
fields it has) as well as the package's ``Run``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional

from .runs import RunStatus, utc_now


def _model_fields(run: Any) -> Optional[Mapping[str, Any]]:
    return getattr(type(run), "model_fields", None)


def _has_field(run: Any, name: str) -> bool:
    fields = _model_fields(run)
    if fields is not None:
        return name in fields
    return hasattr(run, name)


def _status_like(run: Any, status: RunStatus) -> Any:
    """``status`` as a member of the run's own status enum, when it has one (so an app's own
    pydantic model keeps values of its own type), else ``RunStatus``."""
    current = getattr(run, "status", None)
    cls: Any = type(current)
    if isinstance(current, str) and not isinstance(current, Enum):
        return status.value  # the app's Run keeps statuses as plain strings
    if isinstance(current, Enum) and cls is not RunStatus:
        try:
            return cls(status.value)
        except ValueError:
            try:
                return cls[status.name]
            except KeyError:
                pass
    return status


def set_fields(run: Any, **values: Any) -> None:
    """Set the fields the run has (an app's own, leaner Run may lack some)."""
    for name, value in values.items():
        if name == "status":
            run.status = _status_like(run, value)
        elif _has_field(run, name):
            setattr(run, name, value)


def as_utc(value: Any) -> Optional[datetime]:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def status_of(run: Any) -> str:
    s = getattr(run, "status", None)
    return str(getattr(s, "value", s))


def mark_running(run: Any) -> None:
    values: dict[str, Any] = {
        "status": RunStatus.RUNNING,
        "started_at": utc_now(),
        "completed_at": None,
        "duration_seconds": None,
    }
    if status_of(run) in ("completed", "failed", "cancelled"):
        values.update(exit_code=None, error_message=None)  # started again: the earlier end no longer applies
    set_fields(run, **values)


def mark_finished(run: Any, status: RunStatus, error: Optional[BaseException], at: Optional[datetime] = None) -> None:
    at = at or utc_now()
    started = as_utc(getattr(run, "started_at", None))
    values: dict[str, Any] = {"status": status, "completed_at": at}
    if started is not None:
        values["duration_seconds"] = max(0.0, (at - started).total_seconds())
    if status is RunStatus.COMPLETED:
        values["exit_code"] = 0
    elif status is RunStatus.FAILED and error is not None:
        values["error_message"] = str(error)
    set_fields(run, **values)
