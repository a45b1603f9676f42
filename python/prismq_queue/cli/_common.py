"""What the commands share: their common options, output as tables or JSON, durations, progress."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, Callable

import click

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

STATUSES = ["queued", "running", "completed", "failed", "cancelled"]
STRATEGIES = ["fifo", "lifo", "priority", "weighted_random"]


def db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db",
        default="prismq_queue.db",
        envvar="PRISMQ_DB",
        show_default=True,
        help="The queue database: a SQLite file, or a postgresql:// URL (env PRISMQ_DB).",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def time_text(dt: datetime | None) -> str:
    """A time as the tables show it, in UTC."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, sort_keys=True))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


class Duration(click.ParamType):
    """Seconds, or a number with a unit: ``90``, ``90s``, ``15m``, ``12h``, ``7d``. With
    ``allow_off``, ``off`` (or ``0``) means None: the feature is turned off."""

    name = "duration"
    UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

    def __init__(self, allow_off: bool = False) -> None:
        self.allow_off = allow_off

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None or isinstance(value, (int, float)):
            return value
        text = str(value).strip().lower()
        if self.allow_off and text in ("off", "none", "never", "0"):
            return None
        m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)", text)
        if not m:
            off = ", or 'off'" if self.allow_off else ""
            self.fail(f"{value!r} is not a duration: give seconds or a number with a unit, like 90, 15m, 12h, 7d{off}",
                      param, ctx)
        return float(m.group(1)) * self.UNITS[m.group(2)]


def progress_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--progress/--no-progress", "show_progress", default=None,
                        help="Progress on stderr (default: only when stderr is a terminal).")(fn)


class Progress:
    """A progress report on stderr for a core call's ``progress(done, total)`` callback: click's
    bar on a terminal; plain lines (at most a few a second, as the core calls) when asked for
    with --progress and stderr is not a terminal; nothing otherwise. ``total`` None: the
    operation cannot tell how far it is (VACUUM), so only the time spent is shown."""

    def __init__(self, label: str, unit: str, show: bool | None) -> None:
        tty = sys.stderr.isatty()
        self.enabled = tty if show is None else show
        self.tty = tty
        self.label = label
        self.unit = unit
        self.started = time.monotonic()
        self._bar: Any = None
        self._spin = 0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if total is None:
            elapsed = time.monotonic() - self.started
            if self.tty:
                self._spin += 1
                spinner = "|/-\\"[self._spin % 4]
                click.echo(f"\r{self.label} {spinner} {elapsed:.0f}s", err=True, nl=False)
            else:
                click.echo(f"{self.label}: running, {elapsed:.1f}s", err=True)
            return
        if self.tty:
            if self._bar is None:
                self._bar = click.progressbar(length=max(total, 1), label=self.label, file=sys.stderr, show_pos=True)
                self._bar.__enter__()
            self._bar.length = max(total, 1)
            self._bar.update(done - self._bar.pos)
        else:
            pct = 100 * done / total if total else 100
            click.echo(f"{self.label}: {done}/{total} {self.unit} ({pct:.0f}%)", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif self.enabled and self.tty and self._spin:
            click.echo("", err=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def size_text(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover
