"""The ``prismq-queue`` command line (also ``python -m prismq_queue``), built on click.

Every command takes ``--db`` (default: ``prismq_queue.db`` here, or ``$PRISMQ_DB``) and every command that
prints data takes ``--json`` for scripts. Exit codes: 0 done; 1 the operation could not be done (the task had
already finished, the database is in use or unusable, the port is taken); 2 bad usage or an invalid value; 3 no
such task.

Long operations (backup, restore, vacuum, purge, import-legacy) draw a progress bar on stderr when stderr is a
terminal, or with --progress; never on stdout, so --json output stays clean.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import click

from . import SQLITE_VERSION, Queue
from .errors import InvalidArgument, QueueError, TaskNotFound

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
        help="The queue database file (env PRISMQ_DB).",
    )(fn)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


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


# ------------------------------------------------------------------ helpers
def _when(dt: datetime | None) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if dt else "-"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    click.echo(json.dumps(_jsonable(value), indent=2, sort_keys=True))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _open(db: str) -> Queue:
    return Queue(db)


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


class _Progress:
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

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # pragma: no cover


# ------------------------------------------------------------------ producing and inspecting
@main.command()
@db_option
@click.argument("task_type")
@click.argument("payload", required=False, default="null")
@click.option("--priority", type=click.IntRange(1, 1000), default=100, show_default=True, help="1 is most urgent.")
@click.option("--queue", "queue_name", default="default", show_default=True)
@click.option("--delay", type=float, default=None, help="Seconds before the task may run.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--idempotency-key", default=None, help="Enqueue at most once per key.")
@json_option
def enqueue(db: str, task_type: str, payload: str, priority: int, queue_name: str, delay: float | None,
            max_attempts: int, idempotency_key: str | None, as_json: bool) -> None:
    """Enqueue one task; PAYLOAD is JSON (default null). Prints the task id."""
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as e:
        raise click.BadParameter(f"not valid JSON: {e}", param_hint="PAYLOAD") from None
    with _open(db) as q:
        tid = q.enqueue(task_type, value, priority=priority, queue=queue_name, delay=delay,
                        max_attempts=max_attempts, idempotency_key=idempotency_key)
    _print_json({"id": tid}) if as_json else click.echo(tid)


@main.command()
@db_option
@click.option("--queue", "queue_name", default=None, help="Only this queue.")
@json_option
def stats(db: str, queue_name: str | None, as_json: bool) -> None:
    """Task counts by status and the age of the oldest due task."""
    with _open(db) as q:
        s = q.stats(queue=queue_name)
    if as_json:
        return _print_json(s)
    _table(["status", "tasks"], [(k, s[k]) for k in STATUSES])
    age = s.get("oldest_queued_age_seconds")
    click.echo(f"\ntotal {s['total']}; oldest due task waiting {'-' if age is None else f'{age:.1f}s'}")


@main.command(name="list")
@db_option
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--type", "task_type", default=None)
@click.option("--queue", "queue_name", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--after-id", type=int, default=None, help="Keyset paging: rows after this id.")
@json_option
def list_(db: str, status: str | None, task_type: str | None, queue_name: str | None, limit: int,
          after_id: int | None, as_json: bool) -> None:
    """List tasks, oldest first."""
    with _open(db) as q:
        tasks = q.list(status=status, type=task_type, queue=queue_name, limit=limit, after_id=after_id)
    if as_json:
        return _print_json([t.as_dict() for t in tasks])
    _table(
        ["id", "type", "queue", "status", "prio", "attempts", "created", "error"],
        [(t.id, t.type, t.queue, t.status, t.priority, f"{t.attempts}/{t.max_attempts}", _when(t.created_at),
          (t.error or "")[:60]) for t in tasks],
    )


@main.command()
@db_option
@click.argument("task_id", type=int)
@click.option("--logs/--no-logs", default=True, show_default=True)
@json_option
def show(db: str, task_id: int, logs: bool, as_json: bool) -> None:
    """Everything about one task, and its log."""
    with _open(db) as q:
        t = q.get(task_id)
        lines = q.logs(task_id, limit=1000) if logs else []
    d = t.as_dict()
    d.pop("lease_token", None)
    if as_json:
        d["logs"] = [{"at": e.at, "level": e.level, "message": e.message, "details": e.details} for e in lines]
        return _print_json(d)
    for k, v in d.items():
        click.echo(f"{k:>16}: {_when(v) if isinstance(v, datetime) else json.dumps(v) if isinstance(v, (dict, list)) else v}")
    if lines:
        click.echo("\nlog:")
        for e in lines:
            click.echo(f"  {_when(e.at)} {e.level:<8} {e.message}")


def _steer(verb: str, op: Callable[[Queue, int], bool], db: str, task_id: int, as_json: bool) -> None:
    with _open(db) as q:
        ok = op(q, task_id)
        status = q.get(task_id).status
    if as_json:
        _print_json({"id": task_id, verb: ok, "status": status})
    else:
        click.echo(f"task {task_id} {verb}" if ok else f"task {task_id} not {verb}: it is {status}")
    if not ok:
        sys.exit(EXIT_FAILED)


@main.command()
@db_option
@click.argument("task_id", type=int)
@json_option
def cancel(db: str, task_id: int, as_json: bool) -> None:
    """Cancel a queued or running task (exit 1 if it had already finished)."""
    _steer("cancelled", lambda q, i: q.cancel(i), db, task_id, as_json)


@main.command()
@db_option
@click.argument("task_id", type=int)
@json_option
def retry(db: str, task_id: int, as_json: bool) -> None:
    """Send a failed (dead-lettered) or cancelled task back to the queue."""
    _steer("requeued", lambda q, i: q.retry(i), db, task_id, as_json)


@main.command()
@db_option
@json_option
def workers(db: str, as_json: bool) -> None:
    """Workers with their last heartbeat."""
    with _open(db) as q:
        ws = q.workers()
    if as_json:
        return _print_json([
            {"id": w.id, "host": w.host, "pid": w.pid, "queues": w.queues, "capabilities": w.capabilities,
             "started_at": w.started_at, "last_heartbeat": w.last_heartbeat, "tasks_done": w.tasks_done,
             "stale": w.stale} for w in ws
        ])
    _table(["id", "host", "pid", "heartbeat age", "done", "state"],
           [(w.id, w.host, w.pid, f"{w.heartbeat_age:.1f}s", w.tasks_done, "stale" if w.stale else "alive")
            for w in ws])


# ------------------------------------------------------------------ maintenance
@main.command()
@db_option
@click.argument("dest", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@progress_option
@json_option
def backup(db: str, dest: str, force: bool, show_progress: bool | None, as_json: bool) -> None:
    """Write a consistent copy of the database to DEST while others keep working.

    The copy is one point in time, written to a temporary file and renamed to DEST when complete; it is a
    single self-contained file (put it back with `restore`). DEST must not exist unless --force.
    """
    if not os.path.exists(db):
        raise InvalidArgument(f"the database {db!r} does not exist: nothing to back up (check --db)")
    started = time.monotonic()
    with _open(db) as q, _Progress("backup", "pages", show_progress) as bar:
        r = q.backup(dest, overwrite=force, progress=bar)
    r.update(source=os.path.abspath(db), seconds=round(time.monotonic() - started, 3))
    if as_json:
        return _print_json(r)
    click.echo(f"backed up {db} to {dest}: {_size(r['bytes'])} in {r['seconds']:.1f}s")


@main.command()
@db_option
@click.argument("backup_file", metavar="BACKUP", type=click.Path(dir_okay=False))
@progress_option
@json_option
def restore(db: str, backup_file: str, show_progress: bool | None, as_json: bool) -> None:
    """Replace the database (--db) with BACKUP, safely; creates --db if it does not exist.

    BACKUP is checked first (a prismq_queue database this version can open, integrity_check clean). The
    database must not be in use: stop every worker, `serve` and app that has it open (exit 1 otherwise,
    nothing changed). The copy is one transaction, and no old -wal/-shm file is left to replay onto it.
    """
    started = time.monotonic()
    with _Progress("restore", "pages", show_progress) as bar:
        r = Queue.restore(backup_file, db, progress=bar)
    r["seconds"] = round(time.monotonic() - started, 3)
    if as_json:
        return _print_json(r)
    made = " (created)" if r["created"] else ""
    click.echo(f"restored {backup_file} into {db}{made}: {_size(r['bytes'])}, schema version {r['schema_version']}, "
               f"in {r['seconds']:.1f}s")


@main.command()
@db_option
@click.option("--mode", type=click.Choice(["passive", "full", "restart", "truncate"]), default="passive",
              show_default=True)
@json_option
def checkpoint(db: str, mode: str, as_json: bool) -> None:
    """Copy the write-ahead log back into the database file."""
    with _open(db) as q:
        r = q.checkpoint(mode)
    _print_json(r) if as_json else click.echo(", ".join(f"{k}={v}" for k, v in r.items()))


@main.command()
@db_option
@progress_option
@json_option
def vacuum(db: str, show_progress: bool | None, as_json: bool) -> None:
    """Rebuild the file to reclaim free pages (holds the write lock while it runs: workers wait).

    Ctrl-C interrupts it and changes nothing.
    """
    if not os.path.exists(db):
        raise InvalidArgument(f"the database {db!r} does not exist (check --db)")
    before = os.path.getsize(db)
    started = time.monotonic()
    with _open(db) as q, _Progress("vacuum", "", show_progress) as bar:
        q.vacuum(progress=bar)
    # The rebuilt file went through the WAL: copy it back and shrink the WAL, if no other process
    # is reading right now (best effort, never waiting long; a later checkpoint does it otherwise).
    try:
        with Queue(db, busy_timeout=2.0) as q:
            q.checkpoint("truncate")
    except QueueError:
        pass
    r = {"path": os.path.abspath(db), "bytes_before": before, "bytes": os.path.getsize(db),
         "seconds": round(time.monotonic() - started, 3)}
    if as_json:
        return _print_json(r)
    click.echo(f"vacuumed {db}: {_size(before)} -> {_size(r['bytes'])} in {r['seconds']:.1f}s")


@main.command()
@db_option
@click.option("--older-than", type=Duration(), required=True,
              help="Age since the task finished: seconds, or with a unit (90s, 15m, 12h, 7d).")
@click.option("--status", "statuses", type=click.Choice(["completed", "failed", "cancelled"]), multiple=True,
              help="Repeatable; default: completed.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True,
              help="Tasks deleted per transaction: other processes wait at most one batch for the write lock.")
@progress_option
@json_option
def purge(db: str, older_than: float, statuses: tuple[str, ...], batch_size: int, show_progress: bool | None,
          as_json: bool) -> None:
    """Delete finished tasks (and their logs) that finished more than --older-than ago.

    Runs in batches; Ctrl-C stops it between batches (the batches done stay deleted).
    """
    if older_than < 0:
        raise click.BadParameter("must be zero or positive", param_hint="--older-than")
    with _open(db) as q, _Progress("purge", "tasks", show_progress) as bar:
        n = q.purge(older_than=older_than, statuses=list(statuses) or ["completed"], batch_size=batch_size,
                    progress=bar)
    _print_json({"deleted": n}) if as_json else click.echo(f"deleted {n} tasks")


# ------------------------------------------------------------------ migration
def _describe_problem(p: dict[str, Any]) -> str:
    where = f"task {p['legacy_id']}" if p.get("legacy_id") is not None else "a task without a readable id"
    if p.get("log_id") is not None:
        where += f", log line {p['log_id']}"
    value = "" if p.get("value") is None else f" (value {p['value']!r})"
    return f"{where}, {p['column']}{value}: {p['reason']}: {p['action']}"


@main.command(name="import-legacy")
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
    if os.path.exists(db) and os.path.samefile(db, old_db):
        raise InvalidArgument(f"--db {db!r} is OLD.db itself: give the new queue's file with --db")
    total = info["tasks"]
    with _open(db) as q, _Progress(f"importing {total} tasks", "tasks", show_progress) as bar:
        report = q.import_legacy(old_db, progress=bar, batch_size=batch_size)
    if as_json:
        _print_json(report)
    else:
        click.echo(f"imported {report['imported']} of {report['total']} tasks from {report['source']} into {db}")
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


# ------------------------------------------------------------------ running
@main.command()
@click.option("--db", default=None, envvar="PRISMQ_DB", help="The queue database file (overrides the settings).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Worker settings file (.toml, .json, .yaml).")
@click.option("--handlers", multiple=True,
              help="module:registry, or a handlers file; repeatable.")
@click.option("--queues", default=None, help="Comma-separated queue names (default: every queue).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None)
@click.option("--concurrency", type=int, default=None, help="Handlers running at once (default 5).")
@click.option("--lease", type=float, default=None, help="Lease seconds, renewed while a handler runs.")
@click.option("--poll-interval", type=float, default=None, help="Seconds between fallback polls when idle.")
@click.option("--capabilities", default=None, help="key=value,... or a JSON object.")
@click.option("--worker-id", default=None)
@click.option("--shutdown-grace", type=float, default=None, help="Seconds running tasks get to finish on stop.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True,
              help="Drain and exit when stdin closes (serve's embedded workers: their parent is gone).")
def worker(db: str | None, config_path: str | None, handlers: tuple[str, ...], stop_on_stdin_eof: bool,
           **options: Any) -> None:
    """Run a worker until SIGTERM/SIGINT (Ctrl-C), then drain gracefully.

    Settings come from defaults, then --config, then PRISMQ_WORKER_* variables, then these flags.
    """
    from .config import WorkerSettings
    from .worker import Worker

    settings = WorkerSettings.load(config_path, db=db, handlers=list(handlers) or None, **options)
    registry = settings.make_registry()
    with Queue(settings.db) as q:
        w = Worker(q, registry, **settings.worker_kwargs())
        click.echo(f"worker {w.worker_id} on {settings.db}: types {', '.join(sorted(registry.get_registered_types()))}",
                   err=True)
        if stop_on_stdin_eof:
            threading.Thread(target=_stop_at_eof, args=(w,), name="prismq-stdin-watch", daemon=True).start()
        w.run()


def _stop_at_eof(w: Any) -> None:
    # Blocks until the parent closes the pipe, or dies (the OS closes it then): portable, unlike
    # watching the parent's pid, and free while waiting.
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except (OSError, ValueError):
        pass
    logging.getLogger("prismq_queue.worker").info("stdin closed (serve stopped or is gone): draining")
    w.stop()


@main.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="PRISMQ_HOST",
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="PRISMQ_PORT",
              help="0 picks a free port (printed).")
@click.option("--workers", "workers_n", type=click.IntRange(0, 256), default=2, show_default=True,
              help="Embedded worker processes.")
@click.option("--handlers", multiple=True,
              help="module:registry, or a handlers file; repeatable. None: demo mode (demo handlers and demo tasks).")
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=None,
              help="Handlers running at once in each worker (default 5).")
@click.option("--queues", default=None, help="Comma-separated queues the workers take (default: every queue).")
@click.option("--shutdown-grace", type=Duration(), default="30s", show_default=True,
              help="On stop, time running tasks get to finish before they are handed back to the queue.")
@click.option("--token", default=None, envvar="PRISMQ_TOKEN",
              help="The API/dashboard token (env PRISMQ_TOKEN; default: a random one per start, printed).")
@click.option("--no-auth", is_flag=True, help="No authentication at all (only on a trusted machine).")
@click.option("--retention", type=Duration(allow_off=True), default="7d", show_default=True,
              help="Purge completed and cancelled tasks this long after they finished ('off': keep them).")
@click.option("--purge-interval", type=Duration(allow_off=True), default="1h", show_default=True,
              help="How often the purge runs (the first one 10s after the start).")
@click.option("--sweep-interval", type=Duration(allow_off=True), default="30s", show_default=True,
              help="How often expired leases of crashed workers go back to the queue.")
@click.option("--analyze-interval", type=Duration(allow_off=True), default="1d", show_default=True,
              help="How often the planner's statistics are refreshed (ANALYZE, PRAGMA optimize).")
@click.option("--checkpoint-interval", type=Duration(allow_off=True), default="5m", show_default=True,
              help="How often the WAL is checked (and checkpointed, passively).")
@click.pass_context
def serve(ctx: click.Context, db: str, host: str, port: int, workers_n: int, handlers: tuple[str, ...],
          concurrency: int | None, queues: str | None, shutdown_grace: float, token: str | None, no_auth: bool,
          retention: float | None, purge_interval: float | None, sweep_interval: float | None,
          analyze_interval: float | None, checkpoint_interval: float | None) -> None:
    """Run everything on one database: the REST API, the live dashboard, worker processes and maintenance.

    Prints the dashboard's URL (with its token). With no --handlers it runs in demo mode: demo handlers, and a
    demo task every second, so tasks flow on the dashboard at once. Ctrl-C (or SIGTERM) stops it cleanly:
    running tasks finish within --shutdown-grace or go back to the queue.
    """
    try:
        from . import serve as serving
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise click.ClickException(f"serve needs the web extra ({e}): pip install 'prismq_queue[web]'") from None
    if token is not None and (not token.strip() or token != token.strip()):
        raise click.BadParameter("must be a non-empty string without surrounding spaces", param_hint="--token")
    opts = serving.ServeOptions(
        db=db, host=host, port=port, workers=workers_n, handlers=list(handlers), concurrency=concurrency,
        queues=queues, shutdown_grace=shutdown_grace, token=token, auth=not no_auth,
        schedule=serving.Schedule(sweep=sweep_interval, purge=purge_interval, retention=retention,
                                  analyze=analyze_interval, checkpoint=checkpoint_interval),
        verbose=(ctx.parent.params.get("verbose") or 0) if ctx.parent else 0,
        echo=lambda line: click.echo(line),
    )
    try:
        code = serving.run(opts)
    except serving.ServeError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(code)


@main.command()
@db_option
@click.option("--tasks", type=click.IntRange(1, 100_000), default=24, show_default=True)
def demo(db: str, tasks: int) -> None:
    """Enqueue demo tasks, run a worker until they are done, print the stats."""
    from .demo import registry
    from .worker import Worker

    with Queue(db) as q:
        types = ["demo.resize", "demo.email", "demo.flaky"]
        ids = q.enqueue_many([
            {"type": types[i % 3], "payload": {"n": i, "image": f"img-{i}.png", "to": f"user{i}@example.com",
                                                 "fail_chance": 0.4},
             "priority": 1 + (i * 37) % 200, "max_attempts": 2, "retry": {"base": 0.05, "jitter": 0.0}}
            for i in range(tasks)
        ])
        click.echo(f"enqueued {len(ids)} tasks into {db}")
        w = Worker(q, registry, concurrency=5, worker_id="demo-worker", poll_interval=0.1)
        runner = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                pending = sum(1 for t in (q.get(i) for i in ids) if t.status in ("queued", "running"))
                if not pending:
                    break
                time.sleep(0.05)
        finally:
            w.stop()
            runner.join(30)
        done = [q.get(i) for i in ids]
        for status in ("completed", "failed"):
            n = sum(t.status == status for t in done)
            click.echo(f"{status:>10}: {n}")
        dead = next((t for t in done if t.status == "failed"), None)
        if dead is not None:
            click.echo(f"a dead letter: task {dead.id} ({dead.type}) after {dead.attempts} attempts: {dead.error}")
        click.echo("\nqueue stats:")
        s = q.stats()
        _table(["status", "tasks"], [(k, s[k]) for k in STATUSES])


if __name__ == "__main__":  # pragma: no cover
    main()
