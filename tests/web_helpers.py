"""Process entry points and fakes for the web tests (importable by spawned processes)."""

from __future__ import annotations

import threading
import time

from prismq_queue import Queue, Worker
from worker_handlers import Registry


def progress_handler(ctx):
    ctx.progress(40, step="download", message="fetching")
    time.sleep(0.3)
    ctx.progress(80, step="encode", message="encoding")
    time.sleep(0.3)
    return {"ok": True}


def run_worker(path, queue_name, n_tasks, seconds=30.0):
    """A real Worker in this (spawned) process: runs `n_tasks` tasks of `queue_name`, then stops."""
    q = Queue(path)
    worker = Worker(
        q,
        Registry({"web.progress": progress_handler}),
        queues=[queue_name],
        concurrency=2,
        poll_interval=0.05,
        heartbeat_interval=0.5,
    )
    runner = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    runner.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and q.stats(queue=queue_name)["completed"] < n_tasks:
        q.wait_for_change(0.2)
    worker.stop()
    runner.join(10)
    q.close()


class QueueProxy:
    """Wraps a real Queue; the methods named in `override` are replaced (to force errors or delays)."""

    def __init__(self, queue, **override):
        self._queue = queue
        self._override = override

    def __getattr__(self, name):
        if name in self._override:
            return self._override[name]
        return getattr(self._queue, name)
