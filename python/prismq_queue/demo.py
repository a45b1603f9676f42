"""Demo handlers, so that a new user sees tasks flow before writing any: ``prismq-queue demo``
runs them, and ``prismq-queue worker --handlers prismq_queue.demo:registry`` serves them."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from .registry import TaskHandlerRegistry
from .worker import TaskContext

registry = TaskHandlerRegistry()


@registry.handler("demo.resize", description="Pretend to resize an image, reporting progress")
def resize(ctx: TaskContext) -> dict[str, Any]:
    steps = ("download", "decode", "resize", "upload")
    for i, step in enumerate(steps):
        if ctx.cancelled:
            return {"stopped_at": step}
        ctx.progress(100 * i / len(steps), step=step)
        time.sleep(float(ctx.payload.get("step_seconds", 0.01)) if isinstance(ctx.payload, dict) else 0.01)
    return {"image": ctx.payload.get("image") if isinstance(ctx.payload, dict) else None, "size": "128x128"}


@registry.handler("demo.email", description="Pretend to send an e-mail (async)")
async def email(ctx: TaskContext) -> dict[str, Any]:
    await asyncio.sleep(0.005)
    return {"sent_to": ctx.payload.get("to") if isinstance(ctx.payload, dict) else None}


@registry.handler("demo.flaky", description="Fails on purpose, to show retries and the dead letter")
def flaky(ctx: TaskContext) -> str:
    chance = float(ctx.payload.get("fail_chance", 0.5)) if isinstance(ctx.payload, dict) else 0.5
    if random.random() < chance:
        raise ConnectionError("the pretend upstream did not answer")
    return "ok"
