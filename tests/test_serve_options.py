"""``prismq-queue serve``'s options and refusals not covered by test_serve.py: a host that does not
resolve or is not this machine's, an IPv6 address (its URL in brackets), ``--queues`` and ``-v``
passed on to the workers, ``--no-auth`` on ``localhost``, a second Ctrl-C that stops at once,
and a negative worker count given by an embedding."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest
from serve_helpers import Lines, Serve, env, run_serve, wait_until

from prismq_queue import InvalidArgument, Queue
from prismq_queue.serve import ServeOptions
from prismq_queue.serve import run as serve_run

EXIT_FAILED, EXIT_USAGE = 1, 2
POSIX_ONLY = pytest.mark.skipif(
    sys.platform == "win32",
    reason="sends SIGINT to serve; on Windows serve is stopped with Ctrl-Break, which test_serve.py covers",
)


class VerboseServe(Serve):
    """``python -m prismq_queue -v serve ARGS``: -v is the command group's option."""

    def __init__(self, cwd, *args):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prismq_queue", "-v", "serve", *map(str, args)],
            cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)
        self.base = self.token = None


@pytest.fixture
def serving(tmp_path):
    started = []

    def start(*args, verbose=False):
        s = (VerboseServe if verbose else Serve)(tmp_path, *args)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.close()


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "host, code, message",
    [
        ("no-such-host.invalid", EXIT_USAGE, "--host 'no-such-host.invalid' is not a usable address"),
        # TEST-NET-1 (RFC 5737): never an address of this machine.
        ("192.0.2.1", EXIT_FAILED, "cannot listen on 192.0.2.1:0: "),
    ],
    ids=["unresolvable", "not-this-machine"],
)
def test_a_host_serve_cannot_listen_on_is_refused_before_anything_is_written(tmp_path, host, code, message):
    got, out, err = run_serve(tmp_path, "--db", tmp_path / "q.db", "--host", host, "--port", 0)
    assert got == code, err
    assert message in err and "dashboard" not in out and "started (pid" not in err
    assert list(tmp_path.iterdir()) == []  # not even the database file


@POSIX_ONLY
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback address")
def test_ipv6_host_queues_and_verbosity_reach_the_workers(tmp_path, serving):
    db = tmp_path / "q.db"
    with Queue(db) as q:
        # Queue "b" is not served: its task, though first and of higher priority, stays queued.
        other = q.enqueue("echo", {"n": "b"}, queue="b", priority=1000)
        mine = q.enqueue("echo", {"n": "a"}, queue="a")
    s = serving("--db", db, "--host", "::1", "--port", 0, "--workers", 1, "--queues", "a",
                "--handlers", "worker_handlers:REGISTRY", "--no-auth", "--shutdown-grace", "5s", verbose=True)
    assert s.base.startswith("http://[::1]:") and s.token is None
    with Queue(db) as q:
        wait_until(lambda: q.get(mine).status == "completed", what="the task of queue a")
        assert q.get(other).status == "queued"
    with httpx.Client(base_url=s.base, timeout=30) as http:
        r = http.get(f"/api/queue/tasks/{other}")  # no token: --no-auth
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
    s.interrupt()
    assert s.wait() == 0, s.output()
    err = s.err.text()
    assert f"GET /api/queue/tasks/{other}" in err  # -v: uvicorn's access log
    # -v and --queues passed on: the worker's own DEBUG line names the queues it takes.
    assert "started (queues=['a'], concurrency=5)" in err
    assert "reachable from other machines" not in err  # ::1 is a loopback address


@POSIX_ONLY
def test_no_auth_on_localhost_warns_without_the_network_warning_and_off_turns_maintenance_jobs_off(
    tmp_path, serving
):
    s = serving("--db", tmp_path / "q.db", "--host", "localhost", "--port", 0, "--workers", 0, "--no-auth",
                "--handlers", "worker_handlers:REGISTRY", "--retention", "off", "--sweep-interval", "0",
                "--analyze-interval", "never")
    s.interrupt()
    assert s.wait() == 0, s.output()
    out = s.out.text()
    assert "WARNING: authentication is OFF (--no-auth)" in out
    assert "reachable from other machines" not in out
    assert "maintenance: sweep off; purge off; analyze off; checkpoint check every 5m" in out


@POSIX_ONLY
def test_a_second_interrupt_stops_at_once_leaving_running_tasks_to_their_lease(tmp_path, serving):
    db = tmp_path / "q.db"
    with Queue(db) as q:
        tid = q.enqueue("record_pid", {"sleep": 600})  # a handler that ignores cancellation
    s = serving("--db", db, "--port", 0, "--workers", 1, "--shutdown-grace", "10m",
                "--handlers", "worker_handlers:REGISTRY")
    with Queue(db) as q:
        wait_until(lambda: q.get(tid).status == "running", what="the task running")
        s.interrupt()
        s.err.wait_for("shutting down")
        s.interrupt()
        assert s.wait(60) == 0, s.output()
        assert "second interrupt: stopping at once" in s.err.text()
        t = q.get(tid)
        assert t.status == "running" and t.attempts == 1  # its worker was killed: back when its lease ends
        assert t.lease_until is not None


def test_a_negative_worker_count_is_refused_by_serve_run(tmp_path):
    with pytest.raises(InvalidArgument, match="--workers must be 0 or more, got -1"):
        serve_run(ServeOptions(db=str(tmp_path / "q.db"), port=0, workers=-1))
    assert list(tmp_path.iterdir()) == []
