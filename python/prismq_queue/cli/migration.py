"""Migration: ``import-legacy``, the older Python queue's file into the queue."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .._location import is_url, shown
from .._prismq_queue import Queue
from ..errors import InvalidArgument
from ._common import EXIT_FAILED, Progress, db_option, json_option, print_json, progress_option


def _describe_problem(p: dict[str, Any]) -> str:
    where = f"task {p['legacy_id']}" if p.get("legacy_id") is not None else "a task without a readable id"
    if p.get("log_id") is not None:
        where += f", log line {p['log_id']}"
    value = "" if p.get("value") is None else f" (value {p['value']!r})"
    return f"{where}, {p['column']}{value}: {p['reason']}: {p['action']}"


@click.command(name="import-legacy")
@db_option
@click.argument("old_db", metavar="OLD.db")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Tasks per transaction: other processes wait at most one batch for the write lock.")
@progress_option
@json_option
def import_legacy(db: str, old_db: str, batch_size: int, show_progress: bool | None, as_json: bool) -> None:
    """Import OLD.db, the file of the older Python queue, into the queue (--db).

    OLD.db is opened read-only and never changed. Leased and processing tasks come back as
    queued (claimable at once), failed and dead_letter ones as failed; payloads, priorities,
    attempts, times, idempotency keys, compatibility (as requires) and logs are kept. Running it
    again imports nothing twice and resumes an import that was stopped. Rows with unreadable
    values are skipped and listed (exit 1): fix them in OLD.db and run it again.
    """
    # Check the old file before --db is opened, so a wrong file creates nothing.
    info = Queue.inspect_legacy(old_db)
    if not is_url(db) and os.path.exists(db) and os.path.samefile(db, old_db):
        raise InvalidArgument(f"--db \"{db}\" is OLD.db itself: give the new queue's file with --db")
    total = info["tasks"]
    with Queue(db) as q, Progress(f"importing {total} tasks", "tasks", show_progress) as bar:
        report = q.import_legacy(old_db, progress=bar, batch_size=batch_size)
    if as_json:
        print_json(report)
    else:
        click.echo(f"imported {report['imported']} of {report['total']} tasks from {report['source']} into {shown(db)}")
        if report["by_status"]:
            click.echo("  by status: " + ", ".join(f"{k} {v}" for k, v in report["by_status"].items()))
        click.echo(f"  logs imported: {report['logs_imported']}")
        click.echo(f"  already imported by an earlier run: {report['skipped_already_imported']}")
        if report["mapped_to_existing"]:
            click.echo(f"  mapped onto existing tasks by idempotency key: {report['mapped_to_existing']}")
        if report["skipped_invalid"]:
            click.echo(f"  skipped (unreadable values): {report['skipped_invalid']}")
        for note in report["notes"]:
            click.echo(f"  note: {note}")
        if report["legacy_workers"]:
            click.echo("old workers (not imported; start the new ones with these capabilities):")
            for w in report["legacy_workers"][:20]:
                click.echo(f"  {w['worker_id']}: {w['capabilities'] or '{}'}")
            if report["legacy_workers_total"] > 20:
                click.echo(f"  ... and {report['legacy_workers_total'] - 20} more (--json lists them)")
        if report["problems"]:
            click.echo(f"problems ({report['problem_count']}):")
            for p in report["problems"][:20]:
                click.echo(f"  {_describe_problem(p)}")
            if report["problem_count"] > 20:
                click.echo(f"  ... and {report['problem_count'] - 20} more (--json lists them)")
    if report["skipped_invalid"]:
        click.echo(
            f"error: {report['skipped_invalid']} rows of {old_db} were not imported: fix them there and run "
            "import-legacy again (rows already imported are not imported twice)",
            err=True,
        )
        sys.exit(EXIT_FAILED)


COMMANDS = [import_legacy]
