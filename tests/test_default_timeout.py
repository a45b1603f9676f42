"""A default execution timeout per queue (issue 20; the older system's EXECUTION_TIMEOUT, 300 s):
a task without a ``timeout`` of its own runs under its queue's default, on both backends."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from datetime import timedelta

import pytest

from prismq_queue import InvalidArgument, Queue
from prismq_queue.worker import Worker

sys.path.insert(0, os.path.dirname(__file__))
from worker_handlers import Registry  # noqa: E402


@pytest.fixture
def queue(queue_url):
    with Queue(queue_url) as q:
        yield q


def wait_until(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def running(q, registry, **kw):
    w = Worker(q, registry, poll_interval=0.1, heartbeat_interval=0.5, **kw)
    t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    try:
        yield w
    finally:
        w.stop()
        t.join(timeout=30)
        assert not t.is_alive(), "worker did not stop"


def test_a_queue_without_a_setting_gives_300_seconds(queue):
    tid = queue.enqueue("t")
    assert queue.default_timeout("default") == 300.0
    assert queue.get(tid).timeout == 300.0  # the timeout its attempt runs under
    assert queue.get(queue.enqueue("t", timeout=7)).timeout == 7.0  # its own wins
    [claimed] = queue.claim("w", limit=1)
    assert claimed.id == tid and claimed.timeout == 300.0


def test_a_worker_times_out_a_task_without_its_own_timeout_after_the_queue_s_default(queue):
    q = queue
    seen = {}

    def wait_for_cancel(ctx):
        # Cooperative, like any sync handler: stops when the worker says the attempt is over.
        seen[ctx.payload] = ctx.task.timeout
        while not ctx.cancelled:
            if ctx.payload != "plain" and q.get(plain).status == "failed":
                return "outlived the default"
            time.sleep(0.01)
        return "stopped"

    # Enqueued before the default is set: applied when claimed, not when enqueued.
    plain = q.enqueue("wait", "plain", queue="fast", max_attempts=1)
    own = q.enqueue("wait", "own", queue="fast", timeout=600, max_attempts=1)
    unlimited = q.enqueue("wait", "unlimited", queue="open", max_attempts=1)
    q.set_default_timeout("fast", 0.2)
    q.set_default_timeout("open", None)  # asked for: no timeout at all

    with running(q, Registry({"wait": wait_for_cancel}), concurrency=3):
        assert wait_until(lambda: all(q.get(t).status in ("failed", "completed") for t in (plain, own, unlimited)))
    t = q.get(plain)
    assert t.status == "failed" and t.error == "TimeoutError: attempt ran longer than its timeout of 0.2s"
    assert q.get(own).status == "completed" and q.get(unlimited).status == "completed"
    assert seen == {"plain": 0.2, "own": 600.0, "unlimited": None}
    assert q.get(unlimited).timeout is None and q.default_timeout("open") is None


@pytest.mark.parametrize(
    "bad, message",
    [
        (0, r"^default timeout must be a positive number of seconds, got 0$"),
        (-1.5, r"^default timeout must be a positive number of seconds"),
        (timedelta(days=-1), r"^default timeout must be a positive number of seconds"),
        (float("nan"), r"^default timeout must be finite"),
        (10**12, r"^default timeout must be"),
        ("300", r"default timeout"),
    ],
)
def test_bad_defaults_are_refused_with_nothing_written(queue, bad, message):
    queue.set_default_timeout("q", 5)
    with pytest.raises(InvalidArgument, match=message):
        queue.set_default_timeout("q", bad)
    with pytest.raises(InvalidArgument, match="queue must be a non-empty string"):
        queue.set_default_timeout(" ", 5)
    assert queue.default_timeout("q") == 5.0
