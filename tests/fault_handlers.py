"""Handlers for the worker fault and command-line tests, imported by worker processes.

Each records its run in a side file (one line per run: the task id), so a test can tell that
every task ran exactly once; a task can be held until a gate file appears."""

from __future__ import annotations

import os
import threading
import time

from prismq_queue import TaskHandlerRegistry

registry = TaskHandlerRegistry()
_write = threading.Lock()


@registry.handler("record")
def record(ctx):
    p = ctx.payload
    gate = p.get("gate")
    while gate and not os.path.exists(gate):
        if ctx.cancelled:
            return None  # handed back at shutdown: this run does not count
        time.sleep(0.02)
    ctx.progress(100, step="done")  # during a database outage this must not fail the task
    with _write, open(p["runs"], "a", encoding="utf-8") as f:
        f.write(f"{ctx.task.id}\n")
    return {"n": p["n"], "blob": "x" * p.get("size", 0)}


@registry.handler("bad")
def bad(ctx):
    raise ValueError(f"bad input {ctx.payload!r}")


@registry.handler("ok")
def ok(ctx):
    return {"ok": ctx.payload}
