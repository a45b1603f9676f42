"""Handlers used by the worker tests, importable by spawned worker processes."""

from __future__ import annotations

import asyncio
import os
import time


class Registry:
    """The smallest registry a Worker accepts (duck typing): types and handlers."""

    def __init__(self, handlers):
        self.handlers = dict(handlers)

    def get_registered_types(self):
        return set(self.handlers)

    def get_handler(self, task_type):
        return self.handlers[task_type]


def noop(ctx):
    return None


def echo(ctx):
    return {"echo": ctx.payload, "pid": os.getpid()}


async def async_echo(ctx):
    await asyncio.sleep(0)
    return {"async": ctx.payload}


def boom(ctx):
    raise ValueError(f"bad input {ctx.payload!r}")


def slow_sync(ctx):
    # Cooperative: stops soon after cancellation or timeout.
    deadline = time.monotonic() + float(ctx.payload.get("seconds", 5))
    while time.monotonic() < deadline:
        if ctx.cancelled:
            return "stopped"
        time.sleep(0.01)
    return "finished"


async def slow_async(ctx):
    await asyncio.sleep(float(ctx.payload.get("seconds", 5)))
    return "finished"


def reporting(ctx):
    ctx.progress(50, step="half", message="halfway")
    ctx.log("working", details={"n": 1})
    return "ok"


def record_pid(ctx):
    time.sleep(float(ctx.payload.get("sleep", 0)))
    return os.getpid()


REGISTRY = Registry(
    {
        "noop": noop,
        "echo": echo,
        "async_echo": async_echo,
        "boom": boom,
        "slow_sync": slow_sync,
        "slow_async": slow_async,
        "reporting": reporting,
        "record_pid": record_pid,
    }
)


def run_worker(db_path, types=None, concurrency=5, lease=60.0, capabilities=None, worker_id=None, run_seconds=None):
    """Entry point for a worker in its own process (multiprocessing, spawn)."""
    import threading

    from prismq_queue import Queue
    from prismq_queue.worker import Worker

    handlers = REGISTRY.handlers if types is None else {t: REGISTRY.handlers[t] for t in types}
    q = Queue(db_path)
    w = Worker(q, Registry(handlers), concurrency=concurrency, lease=lease, capabilities=capabilities,
               worker_id=worker_id, poll_interval=0.2, heartbeat_interval=0.5)
    if run_seconds is not None:
        timer = threading.Timer(run_seconds, w.stop)
        timer.daemon = True
        timer.start()
    w.run()
    q.close()
