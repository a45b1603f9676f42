"""Periodic tasks: ``schedules`` lists them; ``schedules pause|resume|remove NAME`` steers one.
Schedules are defined in code (``Queue.schedule``), where the app starts: see docs/schedules.md."""

from __future__ import annotations

from typing import Any, Optional

import click

from .._prismq_queue import Queue
from ..errors import ScheduleNotFound
from ._common import EXIT_NOT_FOUND, db_option, json_option, print_json, table, time_text


def _when(s: dict[str, Any]) -> str:
    if s["cron"] is not None:
        return f"cron {s['cron']}" + ("" if s["tz"] == "UTC" else f" ({s['tz']})")
    return f"every {s['every']:g}s"


@click.group(invoke_without_command=True)
@db_option
@json_option
@click.pass_context
def schedules(ctx: click.Context, db: str, as_json: bool) -> None:
    """Periodic tasks: list them (or pause, resume, remove one)."""
    if ctx.invoked_subcommand is not None:
        return
    with Queue(db) as q:
        rows = q.schedules()
    if as_json:
        return print_json(rows)
    if not rows:
        return click.echo("no schedules (define them with Queue.schedule(...))")
    table(
        ["name", "type", "queue", "when", "next run", "last run", "missed", "state"],
        [
            (
                s["name"],
                s["type"],
                s["queue"],
                _when(s),
                time_text(s["next_run"]),
                time_text(s["last_run"]),
                s["missed"],
                "paused" if s["paused"] else "active",
            )
            for s in rows
        ],
    )


def _steer(db: str, name: str, action: str) -> Optional[dict[str, Any]]:
    """Pause, resume or remove ``name``; an unknown name exits 3 (as an unknown task does)."""
    result: Optional[dict[str, Any]] = None
    with Queue(db) as q:
        try:
            if action == "pause":
                result = q.pause_schedule(name)
            elif action == "resume":
                result = q.resume_schedule(name)
            elif not q.unschedule(name):
                raise ScheduleNotFound(f"no schedule is named {name!r}: see `prismq-queue schedules`", name)
        except ScheduleNotFound as e:
            click.echo(f"error: {e}", err=True)
            raise SystemExit(EXIT_NOT_FOUND) from None
    return result


@schedules.command()
@db_option
@click.argument("name")
def pause(db: str, name: str) -> None:
    """Stop enqueueing NAME's due times until resumed."""
    _steer(db, name, "pause")
    click.echo(f"schedule {name} paused")


@schedules.command()
@db_option
@click.argument("name")
def resume(db: str, name: str) -> None:
    """Resume NAME: next due after now (what fell in the pause is not enqueued)."""
    s = _steer(db, name, "resume")
    assert s is not None
    click.echo(f"schedule {name} resumed; next run {time_text(s['next_run'])}")


@schedules.command()
@db_option
@click.argument("name")
def remove(db: str, name: str) -> None:
    """Remove NAME (the tasks it enqueued stay)."""
    _steer(db, name, "remove")
    click.echo(f"schedule {name} removed")


COMMANDS = [schedules]
