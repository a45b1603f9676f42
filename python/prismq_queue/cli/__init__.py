"""The ``prismq-queue`` command line (also ``python -m prismq_queue``), built on click.

Every command takes --db (default: prismq_queue.db here, or $PRISMQ_DB) and every command that prints data
takes --json for scripts. Times are UTC. Exit codes: 0 done; 1 the operation could not be done (the task had
already finished, the database is in use or unusable, the port is taken); 2 bad usage or an invalid value; 3 no
such task.

Long operations (backup, restore, vacuum, purge, import-legacy, copy) draw a progress bar on stderr when stderr is a
terminal, or with --progress; never on stdout, so --json output stays clean.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from .._prismq_queue import SQLITE_VERSION
from ..errors import InvalidArgument, QueueError, TaskNotFound
from . import copying, maintenance, migration, running, schedules, tasks
from . import limits as limits_commands
from ._common import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, Duration, Progress

# The name the progress reporter had before the package split (tests patch it to slow a backup).
_Progress = Progress

__all__ = ["EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_USAGE", "Duration", "main"]


class _Group(click.Group):
    """Turns queue errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskNotFound as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_NOT_FOUND)
        except InvalidArgument as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_USAGE)
        except QueueError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(EXIT_FAILED)


# The epilog is the doc's second paragraph, plain text (click shows it as written).
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=__doc__.split("\n\n")[1])
# The SQLite version too: the extension carries its own, whatever the system has (bug reports).
@click.version_option(package_name="prismq_queue", message=f"%(prog)s %(version)s (bundled SQLite {SQLITE_VERSION})")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """prismq-queue: a persistent task queue in one SQLite file."""
    logging.basicConfig(
        level=max(logging.DEBUG, logging.WARNING - 10 * verbose),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _group in (tasks, maintenance, migration, copying, running, schedules, limits_commands):
    for _command in _group.COMMANDS:
        main.add_command(_command)
