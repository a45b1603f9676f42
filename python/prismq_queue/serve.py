"""``prismq-queue serve``: the REST API, live events and dashboard, embedded worker processes and
scheduled maintenance, in one command, on one database file.

- **Checks before anything starts**: the handlers import; the port is bound here, by this
  process, before uvicorn is started with the bound socket, so "port in use" is an exact,
  race-free check (exit 1), made before the database is created; the database opens, migrates
  and takes a write (else a clear error, exit 1 or 2). No worker is started before all pass.
- **Workers** are real processes (``python -m prismq_queue worker ...``), ``--workers`` of them
  (default 2), supervised: one that exits while serve runs is logged and restarted after a
  backoff (1 s, doubling up to 30 s; back to 1 s once a worker has run for a minute). Each
  keeps its id across restarts, so its heartbeat row is reused. A worker's stdin is a pipe from
  serve: when serve dies without a chance to stop them (``kill -9``), the pipe closes and the
  workers drain and exit instead of running on as orphans.
- **Demo mode**: without ``--handlers`` the workers run ``prismq_queue.demo`` and serve feeds
  them a trickle of demo tasks (queue ``demo``), so a new user sees tasks flow on the dashboard.
- **Maintenance**: ``prismq_queue.maintenance`` in a thread (sweep, purge past ``--retention``,
  analyze, checkpoint watch).
- **Auth**: a random admin token (read, write, admin) per start unless ``--token`` or
  ``PRISMQ_TOKEN`` gives one; the dashboard URL carries it in its fragment (``/#token=...``),
  which browsers never send to the server. ``--no-auth`` turns checks off (loudly, more so on a
  non-loopback address).
- **Shutdown** on Ctrl-C / SIGTERM (Ctrl-Break on Windows): stop accepting HTTP (open event
  streams get a few seconds), tell every worker to drain (SIGTERM, or Ctrl-Break on Windows where
  the workers run in their own process group; and their stdin is closed), wait for them (their
  ``--shutdown-grace`` plus a margin; a task still running at the end of the grace is handed
  back to the queue by its worker, never lost), stop maintenance, exit 0. A second Ctrl-C stops
  at once: tasks of workers killed then come back when their lease expires.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import quote

from ._location import for_opening, is_url, shown
from ._prismq_queue import Queue
from ._scheduler import SchedulerThread
from .errors import DatabaseError, InvalidArgument, QueueError
from .maintenance import Maintenance, Schedule

log = logging.getLogger("prismq_queue.serve")

DEMO_HANDLERS = "prismq_queue.demo:registry"
RESTART_BACKOFF = (1.0, 30.0)  # first delay, cap
STABLE_AFTER = 60.0  # a worker that ran this long restarts with the first delay again
HTTP_GRACE = 3  # seconds open HTTP responses (event streams) get at shutdown
IS_WINDOWS = sys.platform == "win32"


class ServeError(QueueError):
    """serve cannot start: the message says what to fix. ``exit_code``: 1 or 2."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ServeOptions:
    db: str = "prismq_queue.db"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    handlers: list[str] = field(default_factory=list)
    concurrency: Optional[int] = None
    queues: Optional[str] = None
    shutdown_grace: float = 30.0
    token: Optional[str] = None
    auth: bool = True
    schedule: Schedule = field(default_factory=Schedule)
    demo_every: float = 1.0
    verbose: int = 0
    #: web._server.HttpLimits: connection, time and size limits of the HTTP side; None: defaults.
    limits: Any = None
    #: Written to with the banner (stdout); a test or an embedding can swap it.
    echo: Callable[[str], None] = print

    @property
    def demo(self) -> bool:
        return not self.handlers


# ---------------------------------------------------------------------- checks before starting
def check_database(path: str) -> str:
    """Open (create, migrate) the database and prove it is writable; return its absolute path
    (a ``postgresql://`` URL unchanged: it is no path).
    Raises the queue's own errors (``InvalidArgument``, ``DatabaseError``, ``SchemaVersionError``),
    whose messages say what to fix."""
    with Queue(path) as q:
        probe = f"prismq-serve-check-{os.getpid()}"
        try:
            q.heartbeat(probe, pid=os.getpid())
            q.remove_worker(probe)
        except DatabaseError as e:
            raise DatabaseError(f"the database \"{shown(path)}\" cannot be written: {e}") from None
    return for_opening(path)


def check_worker_settings(opts: ServeOptions) -> list[str]:
    """Load the settings the workers will load (flags over ``PRISMQ_WORKER_*`` variables) and
    import their handlers, here, so a typo fails now with one message instead of in every
    worker, over and over. Returns the task types."""
    from .config import WorkerSettings

    settings = WorkerSettings.load(
        None, db=opts.db, handlers=list(opts.handlers or [DEMO_HANDLERS]), concurrency=opts.concurrency,
        queues=opts.queues, shutdown_grace=opts.shutdown_grace,
    )
    return sorted(settings.make_registry().get_registered_types())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); ServeError when the port is taken or the host is not
    an address of this machine."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"--host {host!r} is not a usable address ({e}): use e.g. 127.0.0.1 or 0.0.0.0", 2) from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if IS_WINDOWS:
            # Windows' SO_REUSEADDR would let us bind a port another process listens on.
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_EXCLUSIVEADDRUSE", 0xFFFFFFFB), 1)
        else:
            # Lets a restart bind while old connections sit in TIME_WAIT; on POSIX it never allows
            # two listeners on one port, so the in-use check stays exact.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if port and _is_addr_in_use(e):
            raise ServeError(
                f"port {port} on {host} is already in use (another prismq-queue serve, or another server): stop it, "
                f"or choose another port with --port (--port 0 picks a free one)"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {e}") from None
    sock.set_inheritable(False)
    return sock


def _is_addr_in_use(e: OSError) -> bool:
    import errno

    return e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1), 10048, 10013)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def urls(host: str, port: int) -> str:
    """The base URL a person on this machine opens."""
    shown = host
    if host in ("0.0.0.0", "", "::"):
        shown = "127.0.0.1"
    elif ":" in host:
        shown = f"[{host}]"
    return f"http://{shown}:{port}"


# ---------------------------------------------------------------------- workers
class WorkerProcess:
    """One embedded worker slot: the process running in it, and its restart bookkeeping."""

    def __init__(self, index: int, worker_id: str, argv: list[str], env: Optional[dict[str, str]] = None) -> None:
        self.index = index
        self.worker_id = worker_id
        self.argv = argv
        self.env = env
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.started_at = 0.0
        self.restart_at: Optional[float] = None
        self.backoff = RESTART_BACKOFF[0]
        self.restarts = 0

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if IS_WINDOWS:
            # Its own process group: a console Ctrl-C goes to serve only, and serve can send it
            # Ctrl-Break (which the worker treats like SIGTERM).
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            # Its own session: a terminal Ctrl-C goes to serve only, which then stops the workers
            # in order (and a worker never sees the signal twice).
            kwargs["start_new_session"] = True
        if self.env is not None:
            kwargs["env"] = self.env
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, **kwargs)
        self.started_at = time.monotonic()
        self.restart_at = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ask_to_stop(self) -> None:
        """Drain: finish or hand back running tasks, then exit."""
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            if p.stdin:
                p.stdin.close()  # the portable request (and the one that survives serve's death)
        except OSError:
            pass
        if IS_WINDOWS:
            # Not p.send_signal: where Ctrl-Break cannot be delivered (serve without a console,
            # as some service wrappers run it), CPython 3.12's os.kill then terminates the worker
            # mid-task. The closed stdin above makes it drain instead.
            from ._console import send_ctrl_break

            if not send_ctrl_break(p.pid):
                log.debug("worker %s: no Ctrl-Break (no shared console); it stops on its closed stdin", self.worker_id)
            return
        try:
            p.send_signal(signal.SIGTERM)
        except OSError:
            pass

    def kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass


class Supervisor:
    """Starts the worker processes and restarts any that exits while serve runs."""

    def __init__(self, slots: list[WorkerProcess]) -> None:
        self.slots = slots
        self.stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        for s in self.slots:
            s.start()
            log.info("worker %s started (pid %d)", s.worker_id, s.proc.pid if s.proc else -1)
        self._thread = threading.Thread(target=self._watch, name="prismq-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for s in self.slots:
                if self.stopping.is_set():
                    return
                if s.restart_at is not None:
                    if now >= s.restart_at:
                        s.restarts += 1
                        s.start()
                        log.warning("worker %s restarted (pid %d, restart %d)", s.worker_id,
                                    s.proc.pid if s.proc else -1, s.restarts)
                    continue
                if s.proc is None or s.proc.poll() is None:
                    continue
                ran = now - s.started_at
                if ran >= STABLE_AFTER:
                    s.backoff = RESTART_BACKOFF[0]
                log.warning("worker %s (pid %d) exited unexpectedly with code %s after %.1fs; restarting in %.0fs",
                            s.worker_id, s.proc.pid, s.proc.returncode, ran, s.backoff)
                s.restart_at = now + s.backoff
                s.backoff = min(s.backoff * 2, RESTART_BACKOFF[1])

    def request_stop(self) -> None:
        """Tell every worker to drain now, without waiting (safe in a signal handler)."""
        self.stopping.set()
        for s in self.slots:
            s.ask_to_stop()

    def stop(self, grace: float) -> bool:
        """Ask every worker to drain, wait up to ``grace`` seconds, kill what is left. True when
        every worker exited by itself."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in self.slots:  # again: one may have been (re)started after request_stop()
            s.ask_to_stop()
        deadline = time.monotonic() + grace
        for s in self.slots:
            p = s.proc
            if p is None:
                continue
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        clean = True
        for s in self.slots:
            if s.alive():
                clean = False
                log.warning("worker %s did not stop within %.0fs: killing it (its tasks come back when their "
                            "lease expires)", s.worker_id, grace)
                s.kill()
                if s.proc is not None:
                    try:
                        s.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
        return clean

    def kill_all(self) -> None:
        self.stopping.set()
        for s in self.slots:
            s.kill()


def worker_argv(opts: ServeOptions, worker_id: str) -> list[str]:
    argv = [sys.executable, "-m", "prismq_queue"]
    if opts.verbose:
        argv.append("-" + "v" * opts.verbose)
    # A URL may hold a password, which any local user could read in a command line: it goes
    # through the environment instead (worker_env).
    db = [] if is_url(opts.db) else ["--db", opts.db]
    argv += ["worker", *db, "--worker-id", worker_id, "--shutdown-grace", str(opts.shutdown_grace),
             "--stop-on-stdin-eof"]
    for h in opts.handlers or [DEMO_HANDLERS]:
        argv += ["--handlers", h]
    if opts.concurrency is not None:
        argv += ["--concurrency", str(opts.concurrency)]
    if opts.queues:
        argv += ["--queues", opts.queues]
    return argv


def worker_env(opts: ServeOptions) -> Optional[dict[str, str]]:
    """The embedded workers' environment: serve's own, plus PRISMQ_DB for a URL (see worker_argv)."""
    return {**os.environ, "PRISMQ_DB": opts.db} if is_url(opts.db) else None


# ---------------------------------------------------------------------- running
def http_limits(opts: ServeOptions) -> Any:
    """The ``web._server.HttpLimits`` serve runs with: ``opts.limits``, or the defaults."""
    from .web._server import HttpLimits

    return opts.limits if opts.limits is not None else HttpLimits()


def _make_server(app: Any, opts: ServeOptions) -> Any:
    import uvicorn

    from .web._server import fit_to_open_files, uvicorn_options

    class Server(uvicorn.Server):
        # serve handles the signals itself (it also has workers to stop); uvicorn's own handling
        # would re-raise the signal after its shutdown and kill the process before the workers
        # have drained.
        def capture_signals(self) -> Any:
            import contextlib

            return contextlib.nullcontext()

    config = uvicorn.Config(
        app,
        log_config=None,  # keep the logging the CLI set up
        log_level="debug" if opts.verbose >= 2 else "info" if opts.verbose else "warning",
        access_log=opts.verbose >= 1,
        timeout_graceful_shutdown=HTTP_GRACE,
        lifespan="on",
        **uvicorn_options(fit_to_open_files(http_limits(opts))),
    )
    return Server(config)


def _redact_logs() -> None:
    from .web import _redact

    # Tokens in URLs (?token=), headers and first messages never reach a log line, at any -v.
    _redact.install(root_handlers=True)


def _print_banner(
    opts: ServeOptions, db: str, port: int, token: Optional[str], handlers: list[str], types: list[str]
) -> None:
    """Where the dashboard and the API are (with the token), what the workers run, and warnings."""
    base = urls(opts.host, port)
    say = opts.echo
    say(f"prismq-queue serve: database {shown(db, absolute=True)}")
    if token:
        say(f"  dashboard: {base}/#token={quote(token, safe='')}")
        say(f"  REST API:  {base}/api  (header: Authorization: Bearer {token}; docs at {base}/docs)")
    else:
        say(f"  dashboard: {base}/")
        say(f"  REST API:  {base}/api  (no authentication; docs at {base}/docs)")
    if opts.host in ("0.0.0.0", "::", ""):
        say(f"  listening on every network interface, port {port}")
    processes = "process" if opts.workers == 1 else "processes"
    say(f"  workers:   {opts.workers} {processes} running {', '.join(handlers)} (types: {', '.join(types)})")
    if not opts.auth:
        warning = (
            "WARNING: authentication is OFF (--no-auth): anyone who can reach this port may read, change "
            "and delete tasks"
        )
        if not is_loopback(opts.host):
            warning += (
                f", and {opts.host} is reachable from other machines. Do not run it like this on a shared network"
            )
        say(warning)
        log.warning(warning)
    if opts.demo:
        say("  demo mode: no --handlers given, so the workers run the demo handlers and serve enqueues a demo task")
        say(
            "             every second (queue 'demo'). Run your own: prismq-queue serve --handlers your.module:registry"
        )


def run(opts: ServeOptions) -> int:
    """Check, start everything, block until a signal, shut down. Returns the exit code (0 after
    a clean shutdown). Raises ServeError or a queue error when serve cannot start."""
    from . import web  # needs the web extra; checked before anything starts

    logging.getLogger("prismq_queue.serve").setLevel(min(logging.INFO, logging.WARNING - 10 * opts.verbose))
    logging.getLogger("prismq_queue.maintenance").setLevel(min(logging.INFO, logging.WARNING - 10 * opts.verbose))
    _redact_logs()
    if opts.workers < 0:
        raise InvalidArgument(f"--workers must be 0 or more, got {opts.workers}")

    # Cheapest first, and nothing written until the last check: the handlers import; the port
    # (so a refused start leaves no database file behind); then the database, which it creates.
    handlers = opts.handlers or [DEMO_HANDLERS]
    types = check_worker_settings(opts)
    sock = bind(opts.host, opts.port)
    try:
        db = check_database(opts.db)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]

    if opts.auth:
        token = opts.token or secrets.token_urlsafe(24)
        auth = web.Auth(tokens={token: web.Token(scopes={"read", "write", "admin"}, projects=None)})
    else:
        token = None
        auth = web.Auth.disabled()

    say = opts.echo
    _print_banner(opts, db, port, token, handlers, types)

    maint_queue = Queue(db)
    maintenance = Maintenance(maint_queue, opts.schedule)
    say(f"  maintenance: {maintenance.describe()}")
    scheduler = SchedulerThread(maint_queue)  # periodic tasks, even with --workers 0

    host_tag = socket.gethostname().split(".")[0]
    slots = [
        WorkerProcess(i, wid, worker_argv(opts, wid), worker_env(opts))
        for i in range(opts.workers)
        for wid in [f"serve-{host_tag}-{port}-{i + 1}"]
    ]
    supervisor = Supervisor(slots)
    demo_stop = threading.Event()
    demo_thread: Optional[threading.Thread] = None
    server = _make_server(web.create_app(db, auth=auth, **http_limits(opts).router_options()), opts)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            server.force_exit = True
            supervisor.kill_all()
            try:
                log.warning("second interrupt: stopping at once")
            except Exception:  # noqa: BLE001 - as below
                pass
            return
        stopping.set()
        server.should_exit = True
        supervisor.request_stop()  # the workers drain while the HTTP side closes
        try:  # after the stop: logging can fail here if the interrupted code was writing the same stream
            log.warning(
                "received signal %d: shutting down (workers get %.0fs to finish their tasks; press Ctrl-C "
                "again to stop at once)",
                signum,
                opts.shutdown_grace,
            )
        except Exception:  # noqa: BLE001 - the stop above is what matters
            pass

    previous = _install_signals(on_signal, hold=opts.shutdown_grace + 15.0)
    say("Press Ctrl-C to stop.")  # only now: a Ctrl-C before the handlers was a traceback
    sys.stdout.flush()
    code = 0
    try:
        supervisor.start()
        maintenance.start()
        scheduler.start()
        if opts.demo and opts.workers:
            from .demo import trickle

            demo_thread = threading.Thread(
                target=trickle,
                args=(maint_queue, demo_stop),
                kwargs={"every": opts.demo_every},
                name="prismq-demo",
                daemon=True,
            )
            demo_thread.start()
        server.run(sockets=[sock])
        if not server.started and not stopping.is_set():
            log.error("the web server did not start (see the errors above)")
            code = 1
    finally:
        stopping.set()
        demo_stop.set()
        clean = supervisor.stop(opts.shutdown_grace + 10.0)
        maintenance.stop()
        scheduler.stop()
        if demo_thread is not None:
            demo_thread.join(5)
        maint_queue.close()
        sock.close()
        _restore_signals(previous)
    if code == 0:
        say("prismq-queue serve: stopped" + ("" if clean else " (some workers had to be killed)"))
    return code


def _install_signals(handler: Callable[[int, Any], None], hold: float) -> dict[Any, Any]:
    """Ctrl-C, SIGTERM, Ctrl-Break; on Windows also a console close, logoff or shutdown (a
    service's stop), whose handler holds the process up to ``hold`` seconds for the clean stop."""
    previous: dict[Any, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    from ._console import on_console_end

    console = on_console_end(lambda event: handler(event, None), hold)
    if console is not None:
        previous["console"] = console
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
    return previous


def _restore_signals(previous: dict[Any, Any]) -> None:
    for sig, handler in previous.items():
        if sig == "console":
            handler.finished()  # the clean stop is done: a held console handler may return
            continue
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError):
            pass
