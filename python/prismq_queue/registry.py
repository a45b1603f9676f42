"""The handler registry: which function runs each task type.

A ``Worker`` claims only the types its registry knows, so a mixed fleet never takes (and never
dead-letters) another worker's tasks. The registry keeps the behaviour of the older in-process
registry that existing code relies on (``ValueError`` for bad input, a dedicated error for a
duplicate or a missing type) and adds a decorator form and loading from a config file.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from .errors import HandlerAlreadyRegistered, HandlerNotFound, InvalidArgument
from .settings_files import read_settings_file

__all__ = ["TaskHandlerRegistry", "HandlerInfo", "load_object"]

log = logging.getLogger("prismq_queue.registry")

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
                    f"({_qualified_name(self._handlers[task_type].handler)}); pass allow_override=True to replace it"
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

    def update(self, other: TaskHandlerRegistry, *, allow_override: bool = False) -> None:
        """Register every handler of ``other`` here."""
        for t in other:
            info = other._handlers[t]
            self.register_handler(t, info.handler, info.description, info.version, allow_override)

    @classmethod
    def from_config(cls, path: str | Path) -> TaskHandlerRegistry:
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
    """Import ``module:attribute`` (the attribute may be dotted) and return the attribute.

    The current directory is searched first, as ``python -m`` (and Celery, RQ) do, so that
    ``--handlers app.tasks:registry`` works from the folder that holds ``app/``. Any failure is an
    ``InvalidArgument`` of one line (where Python looked, or the file and line that failed); the
    traceback goes to the ``prismq_queue.registry`` logger at INFO level (``-v``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgument(f"{what}: {spec!r} must look like 'package.module:attribute'")
    obj: Any = _import(module_name, what)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidArgument(f"{what}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _import(module_name: str, what: str) -> Any:
    _search_current_directory()
    try:
        return importlib.import_module(module_name)
    except Exception as e:  # whatever the module raises while it runs is a handler mistake too
        log.info("importing %r for %s failed:", module_name, what, exc_info=e)
        raise InvalidArgument(f"{what}: {_import_failure(module_name, e)}") from e


def _search_current_directory() -> None:
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def _import_failure(module_name: str, e: Exception) -> str:
    """One line on why ``module_name`` did not import."""
    if isinstance(e, SyntaxError):
        where = _relative_if_below_cwd(e.filename) if e.filename else "?"
        line = f", line {e.lineno}" if e.lineno else ""
        return f"cannot import module {module_name!r}: {type(e).__name__} in {where}{line}: {e.msg}"
    missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
    if missing and (module_name == missing or module_name.startswith(missing + ".")):
        return (f"cannot import module {module_name!r}: {e}; looked in {_import_path_text()}. Run the command from the "
                f"folder that holds {missing.partition('.')[0]!r}, or add that folder to PYTHONPATH")
    return f"cannot import module {module_name!r}: {type(e).__name__}{_failed_at(e)}: {e}"


def _import_path_text() -> str:
    cwd = os.getcwd()
    seen: list[str] = []
    for p in sys.path:
        full = os.path.abspath(p or os.curdir)
        if full not in seen:
            seen.append(full)
    return ", ".join(f"{p} (the current directory)" if p == cwd else p for p in seen)


def _failed_at(e: BaseException) -> str:
    """Where ``e`` was raised (" at FILE, line N"), when that is in the imported code, not in the
    import machinery or here."""
    machinery = (os.path.dirname(importlib.__file__), os.path.abspath(__file__))
    frames = [
        f for f in traceback.extract_tb(e.__traceback__)
        if not f.filename.startswith("<frozen ") and not f.filename.startswith(machinery)
    ]
    return f" at {_relative_if_below_cwd(frames[-1].filename)}, line {frames[-1].lineno}" if frames else ""


def _relative_if_below_cwd(path: str) -> str:
    """``path`` relative to the current directory when it lies below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith(os.pardir) else rel


def _qualified_name(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
