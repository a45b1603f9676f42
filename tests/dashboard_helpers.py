"""Handlers and a server entry point for the dashboard tests (run in real processes).

- ``python -m prismq_queue worker --handlers dashboard_helpers:registry`` runs the handlers;
- ``python dashboard_helpers.py serve DB PORT`` serves ``web.create_app`` on 127.0.0.1:PORT with
  the tokens of ``TOKENS`` and a depth sample every second.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from prismq_queue import TaskHandlerRegistry

FULL = "dash-full-token"
READER = "dash+read/token"  # a "+" and a "/": the page must not mangle them

registry = TaskHandlerRegistry()


def _wait_for(path: Path, seconds: float, ctx) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and not ctx.cancelled:
        time.sleep(0.05)


@registry.handler("dash.steps", description="Reports progress step by step; with a gate dir, each step waits for a file")
def steps(ctx):
    n = int(ctx.payload.get("steps", 4))
    gate = ctx.payload.get("gate")
    for i in range(1, n + 1):
        ctx.progress(round(100 * i / (n + 1)), step=f"step {i} of {n}", message=ctx.payload.get("message", "working"))
        if gate:
            # The test opens each gate once it has seen this step on the page: progress moves
            # only as fast as the test looks, however slow the machine is.
            _wait_for(Path(gate) / str(i), 120.0, ctx)
        else:
            time.sleep(float(ctx.payload.get("step_seconds", 0.5)))
        if ctx.cancelled:
            return {"stopped_at": i}
    return {"steps": n}


@registry.handler("dash.fail", description="Fails; with a marker file, fails only the first time")
def fail(ctx):
    marker = ctx.payload.get("marker")
    if marker and Path(marker).exists():
        return {"ok": "second run"}
    if marker:
        Path(marker).touch()
    raise RuntimeError(ctx.payload.get("error", "it failed"))


@registry.handler("dash.quick", description="Returns at once")
def quick(ctx):
    time.sleep(float(ctx.payload.get("seconds", 0.05)) if isinstance(ctx.payload, dict) else 0.05)
    return {"echo": ctx.payload}


def serve(db: str, port: int) -> None:
    import uvicorn

    from prismq_queue import web

    auth = web.Auth(
        tokens={
            FULL: web.Token(scopes={"read", "write", "admin"}),
            READER: web.Token(scopes={"read"}),
        }
    )
    app = web.create_app(db, auth=auth, history_interval=1.0, events_interval=0.3)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: dashboard_helpers.py serve DB PORT")
