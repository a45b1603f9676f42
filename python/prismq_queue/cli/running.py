"""Running: a worker, the whole service (``serve``), and the demo."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click

from .._location import shown
from .._prismq_queue import Queue
from ._common import EXIT_FAILED, STATUSES, STRATEGIES, Duration, db_option, table


@click.command()
@click.option("--db", default=None, envvar="PRISMQ_DB",
              help="The queue database: a SQLite file, or a postgresql:// URL (overrides the settings).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Worker settings file (.toml, .json, .yaml).")
@click.option("--handlers", multiple=True,
              help="module:registry (imported from the current directory first), or a handlers file; repeatable.")
@click.option("--queues", default=None, help="Comma-separated queue names (default: every queue).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None)
@click.option("--concurrency", type=int, default=None, help="Handlers running at once (default 5).")
@click.option("--lease", type=float, default=None, help="Lease seconds, renewed while a handler runs.")
@click.option("--poll-interval", type=float, default=None, help="Seconds between fallback polls when idle.")
@click.option("--capabilities", default=None, help="key=value,... or a JSON object.")
@click.option("--worker-id", default=None)
@click.option("--shutdown-grace", type=float, default=None, help="Seconds running tasks get to finish on stop.")
@click.option("--busy-timeout", type=float, default=None,
              help="Seconds a write waits for another process's lock before it counts as failed (default 60); "
                   "failed writes are retried with backoff, results kept meanwhile.")
@click.option("-v", "--verbose", "verbose", count=True,
              help="A line per task, and the traceback when the handlers do not import.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors: no banner, no lines per failed task, no stop line.")
@click.option("--stop-on-stdin-eof", is_flag=True, hidden=True,
              help="Drain and exit when stdin closes (serve's embedded workers: their parent is gone).")
@click.pass_context
def worker(ctx: click.Context, /, db: str | None, config_path: str | None, handlers: tuple[str, ...],
           stop_on_stdin_eof: bool, verbose: int, quiet: bool, **options: Any) -> None:
    """Run a worker until SIGTERM/SIGINT (Ctrl-C), then drain gracefully.

    Settings come from defaults, then --config, then PRISMQ_WORKER_* variables, then these flags. It prints
    a banner, a line per failed or dead-lettered task and one when it stops (-q: only errors; -v: every task).
    When the database refuses writes (full disk, lock held past --busy-timeout) it keeps finished results,
    stops claiming and retries until writes work again. Exit 0 once stopped with everything saved or handed
    back; 1 when results could not be saved or tasks handed back before it stopped (they run again once
    their leases expire), or the database became unusable.
    """
    from ..config import WorkerSettings
    from ..worker import Worker

    verbose += (ctx.parent.params.get("verbose") or 0) if ctx.parent else 0
    with _worker_logging(verbose, quiet):
        settings = WorkerSettings.load(config_path, db=db, handlers=list(handlers) or None, **options)
        registry = settings.make_registry()
        with Queue(settings.db, **settings.queue_kwargs()) as q:
            w = Worker(q, registry, **settings.worker_kwargs())
            if not quiet:
                _worker_banner(w, settings, registry, one_line=stop_on_stdin_eof)
            if stop_on_stdin_eof:
                threading.Thread(target=_stop_at_eof, args=(w,), name="prismq-stdin-watch", daemon=True).start()
            w.run()
    if w.results_unsaved or w.tasks_left_running:
        sys.exit(EXIT_FAILED)


@contextlib.contextmanager
def _worker_logging(verbose: int, quiet: bool) -> Iterator[None]:
    """The worker's console: its own lines (failed tasks, outages, the stop) plain and timestamped,
    the rest as the group set it up; -q: errors only; -v: info, and a line per task. Restored after."""
    own, root, ack = (logging.getLogger(n) for n in ("prismq_queue.worker", "", "prismq_queue.core.ack"))
    saved = (own.handlers[:], own.propagate, own.level, root.level, ack.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    own.handlers[:] = [handler]
    own.propagate = False
    own.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    root.setLevel(logging.ERROR if quiet else max(logging.DEBUG, logging.WARNING - 10 * verbose))
    # The worker reports each failed attempt itself, with the task's type: the core's line would repeat it.
    ack.setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        yield
    finally:
        own.handlers[:], own.propagate = saved[0], saved[1]
        own.setLevel(saved[2])
        root.setLevel(saved[3])
        ack.setLevel(saved[4])


def _worker_banner(w: Any, settings: Any, registry: Any, one_line: bool) -> None:
    """Database, handlers, queues, concurrency; one line for serve's embedded workers (serve has
    its own banner)."""
    types = ", ".join(sorted(registry.get_registered_types())) or "none"
    queues = ", ".join(settings.queues) if settings.queues else "every queue"
    if one_line:
        click.echo(f"worker {w.worker_id} started: types {types}; queues: {queues}; concurrency {settings.concurrency}",
                   err=True)
        return
    click.echo(f"prismq-queue worker {w.worker_id} on {shown(settings.db, absolute=True)}", err=True)
    click.echo(f"  handlers: {', '.join(settings.handlers)} (types: {types})", err=True)
    click.echo(f"  queues: {queues}; concurrency {settings.concurrency}", err=True)
    click.echo(f"Ctrl-C stops it: running tasks get {settings.shutdown_grace:g}s to finish, then go back to the queue.",
               err=True)


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


@click.command()
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
# HTTP limits (web._server.HttpLimits; None: its default, named in the help). docs/operations.md.
@click.option("--max-connections", type=click.IntRange(1), default=None,
              help="Open HTTP and WebSocket connections at most; one more closes the longest idle one [256].")
@click.option("--header-timeout", type=Duration(), default=None,
              help="Time a connection gets to send a request's headers, else 408 and closed [10s].")
@click.option("--body-timeout", type=Duration(), default=None,
              help="Time a request's body gets to arrive after its headers, else the connection is closed [30s].")
@click.option("--keep-alive", type=Duration(), default=None, help="Idle keep-alive connections are closed after [5s].")
@click.option("--max-body-size", "max_body_bytes", type=click.IntRange(1), default=None,
              help="Largest request body in bytes, else 413 [1114112: 1 MiB payloads plus 64 KiB].")
@click.option("--ws-auth-timeout", type=Duration(), default=None,
              help="Time a WebSocket gets to send its first-message token [5s].")
@click.option("--ws-max-unauthenticated", type=click.IntRange(1), default=None,
              help="WebSockets waiting for their token at once; one more closes the oldest [64].")
@click.option("--ws-max-message", type=click.IntRange(1), default=None,
              help="Largest WebSocket message in bytes [65536].")
@click.pass_context
def serve(ctx: click.Context, /, db: str, host: str, port: int, workers_n: int, handlers: tuple[str, ...],
          concurrency: int | None, queues: str | None, shutdown_grace: float, token: str | None, no_auth: bool,
          retention: float | None, purge_interval: float | None, sweep_interval: float | None,
          analyze_interval: float | None, checkpoint_interval: float | None, **http_limits: Any) -> None:
    """Run everything on one database: the REST API, the live dashboard, worker processes and maintenance.

    Prints the dashboard's URL (with its token). With no --handlers it runs in demo mode: demo handlers, and a
    demo task every second, so tasks flow on the dashboard at once. Ctrl-C (or SIGTERM) stops it cleanly:
    running tasks finish within --shutdown-grace or go back to the queue.
    """
    try:
        from .. import serve as serving
        from ..maintenance import Schedule
        from ..web._server import HttpLimits
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise click.ClickException(f"serve needs the web extra ({e}): pip install 'prismq_queue[web]'") from None
    if token is not None and (not token.strip() or token != token.strip()):
        raise click.BadParameter("must be a non-empty string without surrounding spaces", param_hint="--token")
    try:
        limits = HttpLimits(**{k: v for k, v in http_limits.items() if v is not None})
    except ValueError as e:
        raise click.UsageError(f"--{str(e).replace('_', '-')}") from None
    opts = serving.ServeOptions(
        db=db, host=host, port=port, workers=workers_n, handlers=list(handlers), concurrency=concurrency,
        queues=queues, shutdown_grace=shutdown_grace, token=token, auth=not no_auth,
        schedule=Schedule(sweep=sweep_interval, purge=purge_interval, retention=retention,
                                  analyze=analyze_interval, checkpoint=checkpoint_interval),
        verbose=(ctx.parent.params.get("verbose") or 0) if ctx.parent else 0,
        echo=lambda line: click.echo(line),
        limits=limits,
    )
    try:
        code = serving.run(opts)
    except serving.ServeError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    sys.exit(code)


@click.command()
@db_option
@click.option("--tasks", type=click.IntRange(1, 100_000), default=24, show_default=True)
def demo(db: str, tasks: int) -> None:
    """Enqueue demo tasks, run a worker until they are done, print the stats."""
    from ..demo import registry
    from ..worker import Worker

    with Queue(db) as q:
        types = ["demo.resize", "demo.email", "demo.flaky"]
        ids = q.enqueue_many([
            {"type": types[i % 3], "payload": {"n": i, "image": f"img-{i}.png", "to": f"user{i}@example.com",
                                                 "fail_chance": 0.4},
             "priority": 1 + (i * 37) % 200, "max_attempts": 2, "retry": {"base": 0.05, "jitter": 0.0}}
            for i in range(tasks)
        ])
        click.echo(f"enqueued {len(ids)} tasks into {shown(db)}")
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
        table(["status", "tasks"], [(k, s[k]) for k in STATUSES])


COMMANDS = [worker, serve, demo]
