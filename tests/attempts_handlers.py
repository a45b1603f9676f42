"""Handlers for the attempt-record tests, run by real worker processes
(``prismq-queue worker --handlers attempts_handlers:registry``) and by in-process workers."""

from __future__ import annotations

import time

from prismq_queue import TaskHandlerRegistry

registry = TaskHandlerRegistry()


def _parse_invoice(payload, attempt):
    # The failing line the tests look for: it names this function and this line.
    raise ValueError(f"invoice {payload['invoice']} has no customer (attempt {attempt})")


def _load(payload, attempt):
    return _parse_invoice(payload, attempt)


@registry.handler("invoice.nested")
def nested(ctx):
    return _load(ctx.payload, ctx.task.attempts)


@registry.handler("invoice.slow")
def slow(ctx):
    deadline = time.monotonic() + 60
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"late": True}


def failing_line() -> int:
    """The line number of the ``raise`` in ``_parse_invoice``."""
    import inspect

    lines, first = inspect.getsourcelines(_parse_invoice)
    return first + next(i for i, line in enumerate(lines) if line.strip().startswith("raise "))
