"""Producing and inspecting: enqueue, stats, list, show, cancel, retry, workers."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

import click

from .._defaults import DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from .._prismq_queue import Queue
from ._common import EXIT_FAILED, STATUSES, db_option, json_option, print_json, table, time_text

if TYPE_CHECKING:
    from .._prismq_queue import StatusName


@click.command()
@db_option
@click.argument("task_type")
@click.argument("payload", required=False, default="null")
@click.option(
    "--priority",
    type=click.IntRange(MIN_PRIORITY, MAX_PRIORITY),
    default=DEFAULT_PRIORITY,
    show_default=True,
    help="1 is most urgent.",
)
@click.option("--queue", "queue_name", default="default", show_default=True)
@click.option("--delay", type=float, default=None, help="Seconds before the task may run.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=DEFAULT_MAX_ATTEMPTS, show_default=True)
@click.option("--idempotency-key", default=None, help="Enqueue at most once per key.")
@json_option
def enqueue(
    db: str,
    task_type: str,
    payload: str,
    priority: int,
    queue_name: str,
    delay: float | None,
    max_attempts: int,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Enqueue one task; PAYLOAD is JSON (default null). Prints the task id."""
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON: {e}", param_hint="PAYLOAD") from None
    with Queue(db) as q:
        tid = q.enqueue(
            task_type,
            value,
            priority=priority,
            queue=queue_name,
            delay=delay,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
        )
    print_json({"id": tid}) if as_json else click.echo(tid)


@click.command()
@db_option
@click.option("--queue", "queue_name", default=None, help="Only this queue.")
@json_option
def stats(db: str, queue_name: str | None, as_json: bool) -> None:
    """Task counts by status and the age of the oldest due task."""
    with Queue(db) as q:
        s = q.stats(queue=queue_name)
    if as_json:
        return print_json(s)
    table(["status", "tasks"], [(k, s[k]) for k in STATUSES])
    age = s.get("oldest_queued_age_seconds")
    click.echo(f"\ntotal {s['total']}; oldest due task waiting {'-' if age is None else f'{age:.1f}s'}")


@click.command(name="list")
@db_option
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--type", "task_type", default=None)
@click.option("--queue", "queue_name", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--after-id", type=int, default=None, help="Keyset paging: rows after this id.")
@json_option
def list_(
    db: str,
    status: StatusName | None,
    task_type: str | None,
    queue_name: str | None,
    limit: int,
    after_id: int | None,
    as_json: bool,
) -> None:
    """List tasks, oldest first."""
    with Queue(db) as q:
        tasks = q.list(status=status, type=task_type, queue=queue_name, limit=limit, after_id=after_id)
    if as_json:
        return print_json([t.as_dict() for t in tasks])
    if not tasks:
        filters = {"status": status, "type": task_type, "queue": queue_name, "after id": after_id}
        given = ", ".join(f"{k} {v}" for k, v in filters.items() if v is not None)
        return click.echo(f"no tasks ({given})" if given else "no tasks")
    table(
        ["id", "type", "queue", "status", "prio", "attempts", "created", "error"],
        [
            (
                t.id,
                t.type,
                t.queue,
                t.status,
                t.priority,
                f"{t.attempts}/{t.max_attempts}",
                time_text(t.created_at),
                (t.error or "")[:60],
            )
            for t in tasks
        ],
    )


@click.command()
@db_option
@click.argument("task_id", type=int)
@click.option("--logs/--no-logs", default=True, show_default=True)
@json_option
def show(db: str, task_id: int, logs: bool, as_json: bool) -> None:
    """Everything about one task: its fields, each failed attempt's error, the last traceback, and its log."""
    with Queue(db) as q:
        t = q.get(task_id)
        attempts = q.attempts(task_id)
        lines = q.logs(task_id, limit=1000) if logs else []
    d = t.as_dict()
    d.pop("lease_token", None)
    if as_json:
        d["failed_attempts"] = [a.as_dict() for a in attempts]
        d["logs"] = [{"at": e.at, "level": e.level, "message": e.message, "details": e.details} for e in lines]
        return print_json(d)
    d.pop("traceback", None)  # multi-line: printed with the attempts below
    for k, v in d.items():
        shown = time_text(v) if isinstance(v, datetime) else json.dumps(v) if isinstance(v, (dict, list)) else v
        click.echo(f"{k:>16}: {shown}")
    _echo_attempts(attempts)
    if lines:
        click.echo("\nlog:")
        for e in lines:
            click.echo(f"  {time_text(e.at)} {e.level:<8} {e.message}")


def _indented(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def _echo_attempts(attempts: Sequence[Any]) -> None:
    """Each failed attempt's error, then the last failure's traceback. A task that failed before
    attempts were recorded has none: its last error is the ``error`` field above."""
    if not attempts:
        return
    click.echo(f"\nfailed attempts ({len(attempts)}):")
    if attempts[0].seq > 1:
        click.echo(f"  ({attempts[0].seq - 1} earlier not kept)")
    for a in attempts:
        ran = f", ran {(a.finished_at - a.started_at).total_seconds():.3f}s" if a.started_at else ""
        click.echo(
            f"  #{a.seq} attempt {a.number}/{a.max_attempts}: {a.outcome} at {time_text(a.finished_at)}"
            f" on {a.worker or '-'}{ran}"
        )
        click.echo(_indented(a.error, "      "))
    last = attempts[-1]
    if last.traceback:
        click.echo(f"\ntraceback of the last failure (#{last.seq}, attempt {last.number}/{last.max_attempts}):")
        click.echo(_indented(last.traceback, "  "))
    else:
        click.echo(f"\nno traceback for the last failure (#{last.seq}: {last.outcome})")


def _steer(verb: str, op: Callable[[Queue, int], bool], db: str, task_id: int, as_json: bool) -> None:
    with Queue(db) as q:
        ok = op(q, task_id)
        status = q.get(task_id).status
    if as_json:
        print_json({"id": task_id, verb: ok, "status": status})
    else:
        click.echo(f"task {task_id} {verb}" if ok else f"task {task_id} not {verb}: it is {status}")
    if not ok:
        sys.exit(EXIT_FAILED)


@click.command()
@db_option
@click.argument("task_id", type=int)
@json_option
def cancel(db: str, task_id: int, as_json: bool) -> None:
    """Cancel a queued or running task (exit 1 if it had already finished)."""
    _steer("cancelled", lambda q, i: q.cancel(i), db, task_id, as_json)


@click.command()
@db_option
@click.argument("task_id", type=int)
@json_option
def retry(db: str, task_id: int, as_json: bool) -> None:
    """Send a failed (dead-lettered) or cancelled task back to the queue."""
    _steer("requeued", lambda q, i: q.retry(i), db, task_id, as_json)


@click.command()
@db_option
@json_option
def workers(db: str, as_json: bool) -> None:
    """Workers with their last heartbeat."""
    with Queue(db) as q:
        ws = q.workers()
    if as_json:
        return print_json(
            [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "queues": w.queues,
                    "capabilities": w.capabilities,
                    "started_at": w.started_at,
                    "last_heartbeat": w.last_heartbeat,
                    "tasks_done": w.tasks_done,
                    "stale": w.stale,
                }
                for w in ws
            ]
        )
    if not ws:
        return click.echo("no workers (none has sent a heartbeat, or every one stopped cleanly)")
    table(
        ["id", "host", "pid", "heartbeat age", "done", "state"],
        [(w.id, w.host, w.pid, f"{w.heartbeat_age:.1f}s", w.tasks_done, "stale" if w.stale else "alive") for w in ws],
    )


COMMANDS = [enqueue, stats, list_, show, cancel, retry, workers]
