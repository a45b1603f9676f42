"""The handler registry: which function runs each task type.

A ``Worker`` claims only the types its registry knows, so a mixed fleet never takes (and never
dead-letters) another worker's tasks. The registry keeps the behaviour of the older in-process
registry that existing code relies on (``ValueError`` for bad input, a dedicated error for a
duplicate or a missing type) and adds a decorator form and loading from a config file.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from .errors import HandlerAlreadyRegistered, HandlerNotFound, InvalidArgument
from .settings_files import read_settings_file

__all__ = ["TaskHandlerRegistry", "HandlerInfo", "load_object"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class HandlerInfo:
    """What the registry knows about one task type."""

    task_type: str
    handler: Callable[..., Any]
    description: str = ""
    version: str = "1.0.0"

    def as_dict(self) -> dict[str, Any]:
        return {
            "task_type": self.task_type,
            "handler": getattr(self.handler, "__qualname__", repr(self.handler)),
            "module": getattr(self.handler, "__module__", None),
            "description": self.description,
            "version": self.version,
        }


class TaskHandlerRegistry:
    """Task type -> handler. Thread-safe: a worker reads it while the app may register more."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._handlers: dict[str, HandlerInfo] = {}

    def register_handler(
        self,
        task_type: str,
        handler: Callable[..., Any],
        description: str = "",
        version: str = "1.0.0",
        allow_override: bool = False,
    ) -> None:
        """Register ``handler`` for ``task_type``.

        Raises ``ValueError`` (``InvalidArgument``) for an empty type or a non-callable handler,
        and ``HandlerAlreadyRegistered`` when the type has a handler and ``allow_override`` is false.
        """
        if not isinstance(task_type, str) or not task_type.strip():
            raise InvalidArgument(f"task_type must be a non-empty string, got {task_type!r}")
        if not callable(handler):
            raise InvalidArgument(
                f"handler for {task_type!r} must be callable (a function taking the task context), "
                f"got {type(handler).__name__}"
            )
        with self._lock:
            if task_type in self._handlers and not allow_override:
                raise HandlerAlreadyRegistered(
                    f"task type {task_type!r} already has a handler "
                    f"({_name(self._handlers[task_type].handler)}); pass allow_override=True to replace it"
                )
            self._handlers[task_type] = HandlerInfo(task_type, handler, description, version)

    def handler(
        self, task_type: str, *, description: str = "", version: str = "1.0.0", allow_override: bool = False
    ) -> Callable[[F], F]:
        """Decorator form: ``@registry.handler("email.send")`` registers the function below it."""

        def register(fn: F) -> F:
            self.register_handler(task_type, fn, description or (fn.__doc__ or "").strip(), version, allow_override)
            return fn

        return register

    def unregister_handler(self, task_type: str) -> bool:
        """Forget ``task_type``; False when it was not registered."""
        with self._lock:
            return self._handlers.pop(task_type, None) is not None

    def get_handler(self, task_type: str) -> Callable[..., Any]:
        """The handler of ``task_type``; ``HandlerNotFound`` (also a ``KeyError``) when none."""
        with self._lock:
            info = self._handlers.get(task_type)
        if info is None:
            raise HandlerNotFound(
                f"no handler is registered for task type {task_type!r}; "
                f"registered: {sorted(self._handlers) or 'none'}"
            )
        return info.handler

    def is_registered(self, task_type: str) -> bool:
        with self._lock:
            return task_type in self._handlers

    def get_registered_types(self) -> set[str]:
        with self._lock:
            return set(self._handlers)

    def get_handler_info(self, task_type: str) -> dict[str, Any]:
        """Type, handler name, module, description and version of one registration."""
        with self._lock:
            info = self._handlers.get(task_type)
        if info is None:
            raise HandlerNotFound(f"no handler is registered for task type {task_type!r}")
        return info.as_dict()

    def clear(self) -> None:
        with self._lock:
            self._handlers.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._handlers)

    def __contains__(self, task_type: object) -> bool:
        return isinstance(task_type, str) and self.is_registered(task_type)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.get_registered_types()))

    def update(self, other: "TaskHandlerRegistry", *, allow_override: bool = False) -> None:
        """Register every handler of ``other`` here."""
        for t in other:
            info = other._handlers[t]
            self.register_handler(t, info.handler, info.description, info.version, allow_override)

    @classmethod
    def from_config(cls, path: str | Path) -> "TaskHandlerRegistry":
        """A registry from a JSON, TOML or YAML file that maps task types to functions::

            [handlers."email.send"]
            module = "app.tasks"
            function = "send_email"
            description = "Send one e-mail"   # optional
            version = "1.2.0"                 # optional
        """
        data = read_settings_file(path)
        entries = data.get("handlers") if isinstance(data, Mapping) else None
        if not isinstance(entries, Mapping) or not entries:
            raise InvalidArgument(
                f"{path}: expected a 'handlers' table mapping each task type to "
                "{module = '...', function = '...'}"
            )
        reg = cls()
        for task_type, spec in entries.items():
            where = f"{path}: handlers.{task_type}"
            if not isinstance(spec, Mapping):
                raise InvalidArgument(f"{where} must be a table with 'module' and 'function'")
            unknown = set(spec) - {"module", "function", "description", "version"}
            if unknown:
                raise InvalidArgument(
                    f"{where} has unknown keys {sorted(unknown)}; allowed: module, function, description, version"
                )
            module, function = spec.get("module"), spec.get("function")
            if not isinstance(module, str) or not module or not isinstance(function, str) or not function:
                raise InvalidArgument(f"{where} needs 'module' and 'function' as non-empty strings")
            fn = load_object(f"{module}:{function}", what=where)
            reg.register_handler(
                task_type, fn, str(spec.get("description", "")), str(spec.get("version", "1.0.0"))
            )
        return reg


def load_object(spec: str, *, what: str = "handlers") -> Any:
    """Import ``module:attribute`` (the attribute may be dotted) and return the attribute."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgument(f"{what}: {spec!r} must look like 'package.module:attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise InvalidArgument(f"{what}: cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidArgument(f"{what}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
