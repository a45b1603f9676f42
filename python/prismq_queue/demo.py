"""Demo handlers, so that a new user sees tasks flow before writing any: ``prismq-queue demo``
runs them, ``prismq-queue serve`` (with no ``--handlers``) runs them and feeds them a trickle of
tasks (``trickle``), and ``prismq-queue worker --handlers prismq_queue.demo:registry`` serves them.

Every handler takes its pace from the payload: ``step_seconds`` (default 0.01, so that
``prismq-queue demo`` finishes in a moment) is the time per progress step; ``serve`` asks for
about half a second, so the dashboard shows progress bars moving.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from typing import Any

from .registry import TaskHandlerRegistry
from .task_context import TaskContext

log = logging.getLogger("prismq_queue.demo")

registry = TaskHandlerRegistry()

DEMO_QUEUE = "demo"


def _option(ctx: TaskContext, key: str, default: float) -> float:
    value = ctx.payload.get(key, default) if isinstance(ctx.payload, dict) else default
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


def _steps(ctx: TaskContext, steps: tuple[str, ...], *, fail_at: int | None = None) -> str | None:
    """Walk through ``steps``, reporting progress; returns the step it stopped at if cancelled."""
    pause = _option(ctx, "step_seconds", 0.01)
    for i, step in enumerate(steps):
        if ctx.cancelled:
            return step
        ctx.progress(100 * i / len(steps), step=step)
        if fail_at == i:
            raise ConnectionError(f"the pretend upstream did not answer during {step!r}")
        time.sleep(pause)
    return None


@registry.handler("demo.resize", description="Pretend to resize an image, reporting progress")
def resize(ctx: TaskContext) -> dict[str, Any]:
    stopped = _steps(ctx, ("download", "decode", "resize", "upload"))
    if stopped is not None:
        return {"stopped_at": stopped}
    return {"image": ctx.payload.get("image") if isinstance(ctx.payload, dict) else None, "size": "128x128"}


@registry.handler("demo.report", description="Pretend to build a report in ten steps")
def report(ctx: TaskContext) -> dict[str, Any]:
    stopped = _steps(ctx, tuple(f"section {i}" for i in range(1, 11)))
    if stopped is not None:
        return {"stopped_at": stopped}
    return {"pages": 10}


@registry.handler("demo.email", description="Pretend to send an e-mail (async)")
async def email(ctx: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(max(0.005, _option(ctx, "step_seconds", 0.0)))
    return {"sent_to": ctx.payload.get("to") if isinstance(ctx.payload, dict) else None}


@registry.handler("demo.flaky", description="Fails on purpose, to show retries and the dead letter")
def flaky(ctx: TaskContext) -> str:
    chance = _option(ctx, "fail_chance", 0.5)
    fails = random.random() < chance
    steps = ("connect", "send", "confirm")
    stopped = _steps(ctx, steps, fail_at=random.randrange(len(steps)) if fails else None)
    return "ok" if stopped is None else f"stopped at {stopped}"


def demo_task(n: int, *, step_seconds: float = 0.5) -> dict[str, Any]:
    """The ``n``-th task of the trickle, as an ``enqueue_many`` item: mostly work with progress,
    an e-mail now and then, and a flaky call that sometimes ends in the dead letter."""
    kind = ("demo.resize", "demo.report", "demo.email", "demo.flaky", "demo.resize", "demo.flaky")[n % 6]
    return {
        "type": kind,
        "queue": DEMO_QUEUE,
        "payload": {
            "n": n,
            "image": f"img-{n}.png",
            "to": f"user{n}@example.com",
            "step_seconds": step_seconds if kind != "demo.report" else step_seconds / 2,
            "fail_chance": 0.5,
        },
        "priority": 1 + (n * 37) % 200,
        "max_attempts": 2,
        "retry": {"base": 2.0, "jitter": 0.1},
    }


def trickle(queue: Any, stop: threading.Event, *, every: float = 1.0, first: int = 6,
            max_backlog: int = 20, step_seconds: float = 0.5) -> None:
    """Enqueue ``first`` demo tasks, then one every ``every`` seconds until ``stop`` is set,
    pausing while more than ``max_backlog`` demo tasks wait (so an idle demo never piles up)."""
    queue.enqueue_many([demo_task(i, step_seconds=step_seconds) for i in range(first)])
    n = first
    while not stop.wait(every):
        try:
            if queue.stats(queue=DEMO_QUEUE)["queued"] < max_backlog:
                queue.enqueue_many([demo_task(n, step_seconds=step_seconds)])
                n += 1
        except Exception as e:  # a locked or closed database: the demo just pauses
            log.warning("demo trickle could not enqueue: %s", e)
