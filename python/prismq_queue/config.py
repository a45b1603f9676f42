"""Worker settings: defaults, then a TOML/JSON/YAML file, then ``PRISMQ_WORKER_*`` environment
variables, then explicit overrides (the command line). Validation is pydantic's; every error is an
``InvalidArgument`` that names the key, where the value came from, and what is allowed.

A settings file holds the keys at its top level or under a ``[worker]`` table::

    [worker]
    db = "queue.db"
    queues = ["default", "emails"]
    strategy = "priority"          # fifo | lifo | priority | weighted_random
    concurrency = 8
    lease = 60.0
    poll_interval = 1.0
    capabilities = { gpu = true }
    handlers = ["app.tasks:registry"]   # module:attribute, or a handlers file (.toml/.json/.yaml)
    busy_timeout = 60.0            # seconds a write waits for another process's lock
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InvalidArgument
from .registry import TaskHandlerRegistry, load_object
from .settings_files import FORMATS, read_settings_file

__all__ = ["WorkerSettings", "ENV_PREFIX"]

ENV_PREFIX = "PRISMQ_WORKER_"

Scalar = Union[bool, int, float, str, None]


class WorkerSettings(BaseModel):
    """Everything a worker process needs; see the module docstring for the file layout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    db: str = "prismq_queue.db"
    worker_id: Optional[str] = None
    queues: Optional[list[str]] = None
    strategy: Literal["fifo", "lifo", "priority", "weighted_random"] = "priority"
    concurrency: int = Field(5, ge=1, le=10_000)
    lease: float = Field(60.0, gt=0)
    poll_interval: float = Field(1.0, gt=0)
    heartbeat_interval: float = Field(5.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0)
    # A write still locked out after this counts as failed; the worker then retries with backoff.
    busy_timeout: float = Field(60.0, gt=0, le=86_400)
    capabilities: Optional[dict[str, Scalar]] = None
    handlers: list[str] = Field(default_factory=list)

    @field_validator("queues", "handlers", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        # Environment variables and CLI flags give "a,b"; files give lists.
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("queues")
    @classmethod
    def _queues_not_empty(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and (not v or any(not q.strip() for q in v)):
            raise ValueError("must list at least one non-empty queue name (leave it unset for every queue)")
        return v

    @field_validator("capabilities", mode="before")
    @classmethod
    def _parse_capabilities(cls, v: Any) -> Any:
        # "gpu=true,region=eu" or a JSON object, from the environment or the command line.
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("{"):
                return json.loads(v)
            out: dict[str, Any] = {}
            for part in filter(None, (p.strip() for p in v.split(","))):
                key, sep, value = part.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"{part!r} must look like key=value (e.g. gpu=true,region=eu)")
                out[key.strip()] = _scalar(value.strip())
            return out
        return v

    @field_validator("handlers")
    @classmethod
    def _handler_specs(cls, v: list[str]) -> list[str]:
        for spec in v:
            if Path(spec).suffix.lower() not in FORMATS and ":" not in spec:
                raise ValueError(
                    f"{spec!r} must be 'package.module:registry' or a handlers file (.toml, .json, .yaml)"
                )
        return v

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> WorkerSettings:
        """Defaults < file at ``path`` < ``PRISMQ_WORKER_*`` variables of ``env`` (default:
        ``os.environ``) < ``overrides`` whose value is not None."""
        sources: dict[str, str] = {}
        data: dict[str, Any] = {}
        if path is not None:
            raw = read_settings_file(path)
            if isinstance(raw.get("worker"), dict):
                raw = raw["worker"]
            for k, v in raw.items():
                data[k] = v
                sources[k] = f"{path}"
        environ = os.environ if env is None else env
        for name, value in environ.items():
            if name.startswith(ENV_PREFIX):
                key = name[len(ENV_PREFIX):].lower()
                data[key] = value
                sources[key] = name
        for k, v in overrides.items():
            if v is not None:
                data[k] = v
                sources[k] = "the command line or arguments"
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidArgument(_describe(e, sources)) from None

    # ---------------------------------------------------------------- using
    def make_registry(self) -> TaskHandlerRegistry:
        """One registry from every ``handlers`` entry (a registry object or a handlers file)."""
        if not self.handlers:
            raise InvalidArgument(
                "no handlers: set 'handlers' (e.g. --handlers app.tasks:registry, or handlers = [...] in the "
                f"settings file, or {ENV_PREFIX}HANDLERS)"
            )
        merged = TaskHandlerRegistry()
        for spec in self.handlers:
            if Path(spec).suffix.lower() in FORMATS and ":" not in Path(spec).name:
                merged.update(TaskHandlerRegistry.from_config(spec))
                continue
            obj = load_object(spec, what="handlers")
            if isinstance(obj, TaskHandlerRegistry):
                merged.update(obj)
            elif hasattr(obj, "get_registered_types") and hasattr(obj, "get_handler"):
                for t in obj.get_registered_types():
                    merged.register_handler(t, obj.get_handler(t))
            else:
                raise InvalidArgument(
                    f"handlers: {spec!r} is a {type(obj).__name__}, not a TaskHandlerRegistry "
                    "(or an object with get_registered_types() and get_handler())"
                )
        return merged

    def queue_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Queue(settings.db, **kwargs)``."""
        return {"busy_timeout": self.busy_timeout}

    def worker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Worker(queue, registry, **kwargs)``."""
        return {
            "worker_id": self.worker_id,
            "queues": self.queues,
            "strategy": self.strategy,
            "concurrency": self.concurrency,
            "lease": self.lease,
            "poll_interval": self.poll_interval,
            "capabilities": self.capabilities,
            "shutdown_grace": self.shutdown_grace,
            "heartbeat_interval": self.heartbeat_interval,
        }


def _scalar(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _describe(e: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    allowed = ", ".join(WorkerSettings.model_fields)
    for err in e.errors():
        key = str(err["loc"][0]) if err["loc"] else "?"
        where = sources.get(key)
        origin = f" (from {where})" if where else ""
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown worker setting {key!r}{origin}; allowed settings: {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        lines.append(f"worker setting {key!r}{origin}: {msg}; got {got!r}")
    return "invalid worker settings: " + "; ".join(lines)
