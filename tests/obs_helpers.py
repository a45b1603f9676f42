"""Process entry points for the observability tests (spawn start method)."""

from __future__ import annotations

import time

from prismq_queue import Queue

STEP = 0.15  # seconds between two changes: longer than a stream's min_gap, so each is a look


def produce_lifecycle(path, go, done):
    """Once `go` is set: a task that runs with two progress reports and completes, and one that
    fails into the dead letter. Sets `done` at the end."""
    q = Queue(path)
    go.wait(30)
    ok = q.enqueue("resize", {"image": "cat.png"}, queue="media")
    time.sleep(STEP)
    [t] = q.claim("other-process", types=["resize"])
    assert t.id == ok
    time.sleep(STEP)
    q.progress(t, 30, step="download", message="fetching")
    time.sleep(STEP)
    q.progress(t, 60, step="resize")
    time.sleep(STEP)
    q.complete(t, {"thumb": "cat.small.png"})
    time.sleep(STEP)
    q.enqueue("resize", {"image": "broken.png"}, queue="media", max_attempts=1)
    time.sleep(STEP)
    [t] = q.claim("other-process", types=["resize"])
    time.sleep(STEP)
    q.fail(t, ValueError("not an image"))
    q.close()
    done.set()
