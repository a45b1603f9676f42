"""Maintenance: backup, restore, checkpoint, vacuum, purge."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Literal

import click

from .._location import is_url, shown
from .._prismq_queue import Queue
from ..errors import InvalidArgument, QueueError
from ._common import EXIT_FAILED, Duration, Progress, db_option, json_option, print_json, progress_option, size_text

if TYPE_CHECKING:
    from .._prismq_queue import StatusName


class _Stopped(Exception):
    """A stop signal arrived while a core operation ran: raised from its progress callback, so
    the operation unwinds as it does for Ctrl-C (the backup removes its partial file)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT: Windows ends the process once its
# handler returns (a few seconds at most), so the handler waits for the cleanup first.
_WINDOWS_CLOSE_EVENTS = (2, 5, 6)


@contextlib.contextmanager
def _stop_signals_unwind() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP (Windows: Ctrl-Break and closing the console)
    raise _Stopped in the main thread, like Ctrl-C raises KeyboardInterrupt, instead of ending the
    process on the spot with the operation's files half-written."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise _Stopped(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, stop)
    unwound = threading.Event()
    console = _on_console_close(unwound) if sys.platform == "win32" else None
    try:
        yield
    finally:
        unwound.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if console is not None:
            console(False)


def _on_console_close(unwound: threading.Event) -> Callable[[bool], None]:  # pragma: no cover - Windows
    """Route the console's close/logoff/shutdown events to the main thread as SIGTERM and hold
    the process until the block has unwound. Returns the function that removes the handler."""
    if sys.platform != "win32":  # called there alone; mypy checks what follows as Windows code
        raise NotImplementedError("Windows only")
    import _thread
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)
    def handler(event: int) -> bool:
        if event not in _WINDOWS_CLOSE_EVENTS:
            return False  # Ctrl-C and Ctrl-Break: Python's own handler
        try:
            _thread.interrupt_main(signal.SIGTERM)
        except TypeError:  # Python 3.9: only Ctrl-C's KeyboardInterrupt, which unwinds the same way
            _thread.interrupt_main()
        unwound.wait(4.0)
        return True

    kernel32.SetConsoleCtrlHandler(handler, True)
    return lambda add: kernel32.SetConsoleCtrlHandler(handler, add)


@click.command()
@db_option
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@progress_option
@json_option
def backup(db: str, dest: str, force: bool, show_progress: bool | None, as_json: bool) -> None:
    """Write a consistent copy of the database to DEST while others keep working.

    The copy is one point in time, written to a temporary file and renamed to DEST when complete; it is a
    single self-contained file (put it back with restore). DEST must not exist unless --force.
    Stopped by Ctrl-C, SIGTERM or SIGHUP, it removes its temporary file; one left by a backup that
    was killed outright is removed by the next backup to DEST.
    """
    if not is_url(db) and not os.path.exists(db):
        raise InvalidArgument(f"the database \"{db}\" does not exist: nothing to back up (check --db)")
    started = time.monotonic()
    try:
        with _stop_signals_unwind(), Queue(db) as q, Progress("backup", "pages", show_progress) as bar:
            r = q.backup(dest, overwrite=force, progress=bar)
    except _Stopped as e:
        click.echo(f"error: backup stopped by {e}: its temporary file was removed", err=True)
        sys.exit(EXIT_FAILED)
    r.update(source=shown(db, absolute=True), seconds=round(time.monotonic() - started, 3))
    for name in r["removed_partials"]:
        click.echo(f"removed {name}: the temporary file of an earlier backup to {dest} that did not finish "
                   "(its process is gone)", err=True)
    if as_json:
        return print_json(r)
    click.echo(f"backed up {shown(db)} to {dest}: {size_text(r['bytes'])} in {r['seconds']:.1f}s")


@click.command()
@db_option
@click.argument("backup_file", metavar="BACKUP", type=click.Path(dir_okay=False))
@progress_option
@json_option
def restore(db: str, backup_file: str, show_progress: bool | None, as_json: bool) -> None:
    """Replace the database (--db) with BACKUP, safely; creates --db if it does not exist.

    BACKUP is checked first (a prismq_queue database this version can open, integrity_check clean). The
    database must not be in use: stop every worker, serve and app that has it open (exit 1 otherwise,
    nothing changed). The copy is one transaction, and no old -wal/-shm file is left to replay onto it.
    """
    started = time.monotonic()
    with Progress("restore", "pages", show_progress) as bar:
        r = Queue.restore(backup_file, db, progress=bar)
    r["seconds"] = round(time.monotonic() - started, 3)
    if as_json:
        return print_json(r)
    made = " (created)" if r["created"] else ""
    click.echo(
        f"restored {backup_file} into {shown(db)}{made}: {size_text(r['bytes'])}, "
        f"schema version {r['schema_version']}, "
        f"in {r['seconds']:.1f}s"
    )


@click.command()
@db_option
@click.option(
    "--mode", type=click.Choice(["passive", "full", "restart", "truncate"]), default="passive", show_default=True
)
@json_option
def checkpoint(db: str, mode: Literal["passive", "full", "restart", "truncate"], as_json: bool) -> None:
    """Copy the write-ahead log back into the database file."""
    with Queue(db) as q:
        r = q.checkpoint(mode)
    print_json(r) if as_json else click.echo(", ".join(f"{k}={v}" for k, v in r.items()))


@click.command()
@db_option
@progress_option
@json_option
def vacuum(db: str, show_progress: bool | None, as_json: bool) -> None:
    """Rebuild the file to reclaim free pages (holds the write lock while it runs: workers wait).

    Ctrl-C interrupts it and changes nothing.
    """
    if is_url(db):
        with Queue(db) as q:
            q.vacuum()  # raises Unsupported, saying what to use instead
    if not os.path.exists(db):
        raise InvalidArgument(f'the database "{db}" does not exist (check --db)')
    before = os.path.getsize(db)
    started = time.monotonic()
    with Queue(db) as q, Progress("vacuum", "", show_progress) as bar:
        q.vacuum(progress=bar)
    # The rebuilt file went through the WAL: copy it back and shrink the WAL, if no other process
    # is reading right now (best effort, never waiting long; a later checkpoint does it otherwise).
    try:
        with Queue(db, busy_timeout=2.0) as q:
            q.checkpoint("truncate")
    except QueueError:
        pass
    r: dict[str, Any] = {
        "path": os.path.abspath(db),
        "bytes_before": before,
        "bytes": os.path.getsize(db),
        "seconds": round(time.monotonic() - started, 3),
    }
    if as_json:
        return print_json(r)
    click.echo(f"vacuumed {shown(db)}: {size_text(before)} -> {size_text(r['bytes'])} in {r['seconds']:.1f}s")


@click.command()
@db_option
@click.option(
    "--older-than",
    type=Duration(),
    required=True,
    help="Age since the task finished: seconds, or with a unit (90s, 15m, 12h, 7d).",
)
@click.option(
    "--status",
    "statuses",
    type=click.Choice(["completed", "failed", "cancelled"]),
    multiple=True,
    help="Repeatable; default: completed.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=2000,
    show_default=True,
    help="Tasks deleted per transaction: other processes wait at most one batch for the write lock.",
)
@progress_option
@json_option
def purge(
    db: str,
    older_than: float,
    statuses: tuple[StatusName, ...],
    batch_size: int,
    show_progress: bool | None,
    as_json: bool,
) -> None:
    """Delete finished tasks (and their logs) that finished more than --older-than ago.

    Runs in batches; Ctrl-C stops it between batches (the batches done stay deleted).
    """
    if older_than < 0:
        raise click.BadParameter("must be zero or positive", param_hint="--older-than")
    with Queue(db) as q, Progress("purge", "tasks", show_progress) as bar:
        n = q.purge(
            older_than=older_than, statuses=list(statuses) or ["completed"], batch_size=batch_size, progress=bar
        )
    print_json({"deleted": n}) if as_json else click.echo(f"deleted {n} tasks")


COMMANDS = [backup, restore, checkpoint, vacuum, purge]
