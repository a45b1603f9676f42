"""Copy: ``copy --from A --to B``, one queue into another (SQLite or PostgreSQL, either way)."""

from __future__ import annotations

import click

from .. import _prismq_queue
from .._location import shown
from ._common import Progress, json_option, print_json, progress_option

_TABLES = [("tasks", "tasks"), ("logs", "log lines"), ("attempts", "attempt records"), ("runs", "runs"),
           ("retry_policies", "retry policies"), ("dependencies", "dependencies"),
           ("holds", "holds of held tasks"), ("limits", "limits"), ("schedules", "schedules"),
           ("queue_timeouts", "default timeouts")]


@click.command(name="copy")
@click.option("--from", "source", required=True, metavar="DB",
              help="The queue to copy: a SQLite file or a postgresql:// URL (its rows are left as they are).")
@click.option("--to", "destination", required=True, metavar="DB",
              help="Where to copy it: a SQLite file or a postgresql:// URL (created if missing).")
@click.option("--allow-live-leases", is_flag=True,
              help="Copy even while workers hold leases on the source (their tasks are copied as running).")
@progress_option
@json_option
def copy(source: str, destination: str, allow_live_leases: bool, show_progress: bool | None,
         as_json: bool) -> None:
    """Copy every task, log line, attempt record, run, dependency and setting of --from into --to.

    Ids, statuses, attempts, leases, times, payloads and results are kept as they are; a held task
    stays held until its dependencies complete on --to. Retry policies, limits (their rate starting
    with a full bucket), schedules and default timeouts come along. Stop the workers of --from
    first: while tasks run under a live lease the copy is refused (exit 2), unless
    --allow-live-leases. Running it again copies only what is new; a --to that holds another
    queue's tasks or settings is refused before anything is written. Passwords are never printed.
    """
    with Progress("copying", "rows", show_progress) as bar:
        report = _prismq_queue.copy_queue(source, destination, progress=bar, allow_live_leases=allow_live_leases)
    if as_json:
        print_json(report)
        return
    click.echo(f"copied {shown(source)} into {shown(destination)}")
    for key, name in _TABLES:
        copied, there = report["copied"][key], report["already_there"][key]
        click.echo(f"  {name}: {copied} copied, {there} already there")
    if report["live_leases"]:
        click.echo(f"  {report['live_leases']} tasks were copied as running under a live lease: the destination "
                   "re-queues them once their leases end")


COMMANDS = [copy]
