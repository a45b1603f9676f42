"""Process entry points for tests/test_schedules.py (spawn start method)."""

from __future__ import annotations

import os


def run_passes(url, start, times, out):
    """Wait for `start`, then run the scheduler once at each of `times` (epoch seconds, a clock
    the test controls); report how many tasks this process's passes enqueued."""
    from prismq_queue import Queue

    with Queue(url) as q:
        start.wait(30)
        enqueued = sum(q.run_schedules(now=t) for t in times)
    out.put((os.getpid(), enqueued))


def run_worker(url, worker_id):
    """A Worker whose handler records nothing: it runs the scheduler on its timer until stopped."""
    from prismq_queue import Queue, TaskHandlerRegistry, Worker

    registry = TaskHandlerRegistry()
    registry.register_handler("tick", lambda ctx: ctx.task.run_after.isoformat())
    with Queue(url) as q:
        Worker(q, registry, worker_id=worker_id, poll_interval=0.2, concurrency=2).run()
