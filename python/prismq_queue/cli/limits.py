"""Limits: ``limits`` (list them), ``limit set`` and ``limit remove``.

A limit is kept per (queue, type) (type none: the whole queue) and enforced by every claim, in
every process and on every host (``Queue.set_limit``). Bad values are the core's to judge: its
``InvalidArgument`` is one line on stderr and exit 2, as for every command.
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import click

from .._prismq_queue import Queue
from ._common import EXIT_FAILED, db_option, json_option, print_json, table

# What the table shows of a limit, in the order of Queue.limits()' keys.
_COLUMNS = ["queue", "type", "concurrency", "per", "rate", "running", "waiting", "tokens"]


def _tokens_text(tokens: Any) -> Optional[str]:
    return None if tokens is None else f"{float(tokens):.1f}"


def _echo_limits(rows: list[dict[str, Any]]) -> None:
    table(
        _COLUMNS,
        [
            (
                r["queue"],
                r.get("type") or "*",
                r.get("concurrency"),
                r.get("per"),
                r.get("rate"),
                r.get("running"),
                r.get("waiting"),
                _tokens_text(r.get("tokens")),
            )
            for r in rows
        ],
    )


def _find(q: Queue, queue_name: str, task_type: Optional[str]) -> Optional[dict[str, Any]]:
    for row in q.limits():
        if row["queue"] == queue_name and row.get("type") == task_type:
            return row
    return None


def _where(queue_name: str, task_type: Optional[str]) -> str:
    return f"queue {queue_name!r}" + (f", type {task_type!r}" if task_type is not None else "")


@click.command(name="limits")
@db_option
@json_option
def limits(db: str, as_json: bool) -> None:
    """Every limit with what it holds now: slots running, tasks waiting on it, rate tokens left."""
    with Queue(db) as q:
        rows = q.limits()
    if as_json:
        return print_json(rows)
    if not rows:
        return click.echo("no limits (set one with: prismq-queue limit set QUEUE --concurrency N)")
    _echo_limits(rows)


@click.group(name="limit")
def limit() -> None:
    """Set or remove the concurrency and rate limit of a queue, or of one type in it."""


@limit.command(name="set")
@db_option
@click.argument("queue_name", metavar="QUEUE")
@click.option("--type", "task_type", default=None, help="Only tasks of this type (default: the whole queue).")
@click.option("--concurrency", type=int, default=None, help="Tasks running at once, at most (>= 1).")
@click.option("--per", default=None, help="Count --concurrency per value of this payload key (e.g. project).")
@click.option("--rate", default=None, help="Tasks started per period, at most: 100/min, 5/s, 1000/h, 10/day.")
@json_option
def set_(
    db: str,
    queue_name: str,
    task_type: Optional[str],
    concurrency: Optional[int],
    per: Optional[str],
    rate: Optional[str],
    as_json: bool,
) -> None:
    """Create or replace the limit of QUEUE (and --type). Replacing keeps nothing of the old one."""
    with Queue(db) as q:
        q.set_limit(queue_name, type=task_type, concurrency=concurrency, per=per, rate=rate)
        row = _find(q, queue_name, task_type)
    if as_json:
        return print_json(row)
    click.echo(f"limit set on {_where(queue_name, task_type)}")
    if row is not None:
        _echo_limits([row])


@limit.command(name="remove")
@db_option
@click.argument("queue_name", metavar="QUEUE")
@click.option("--type", "task_type", default=None, help="The limit of this type (default: the queue's own).")
@json_option
def remove(db: str, queue_name: str, task_type: Optional[str], as_json: bool) -> None:
    """Remove the limit of QUEUE (and --type); exit 1 if there was none."""
    with Queue(db) as q:
        removed = q.remove_limit(queue_name, type=task_type)
    if as_json:
        print_json({"queue": queue_name, "type": task_type, "removed": removed})
    elif removed:
        click.echo(f"limit removed from {_where(queue_name, task_type)}")
    else:
        click.echo(f"error: no limit on {_where(queue_name, task_type)}; nothing removed", err=True)
    if not removed:
        sys.exit(EXIT_FAILED)


COMMANDS = [limits, limit]
