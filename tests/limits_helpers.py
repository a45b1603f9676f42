"""Process entry points for tests/test_limits.py (spawn start method): claim loops in their own
processes, so limits are proven across processes (and, on PostgreSQL, across connections)."""

from __future__ import annotations

import os
import time


def claim_loop(url, worker_id, queue, batch, hold, out, ready=None, go=None):
    """Claim from `queue` in batches of `batch`, hold each batch `hold` seconds, complete it;
    stop once nothing is queued or running there. Report the ids this process ran. With `ready`
    and `go`, say so once the queue is open and wait for every process (a process starts in
    seconds under wine: the first would otherwise drain the queue alone)."""
    from prismq_queue import Queue

    ran = []
    with Queue(url) as q:
        if ready is not None and go is not None:
            ready.put(worker_id)
            go.wait(120)
        while True:
            got = q.claim(worker_id, queues=[queue], limit=batch, lease=60)
            if not got:
                s = q.stats(queue=queue)
                if s["queued"] == 0 and s["running"] == 0:
                    break
                q.wait_for_change(0.02)
                continue
            if hold:
                time.sleep(hold)
            for t in got:
                q.complete(t)
                ran.append(t.id)
    out.put((worker_id, os.getpid(), ran))


def hold_and_hang(url, queue, n, ready):
    """Claim `n` tasks of `queue` with a short lease, say so, then hang until killed."""
    from prismq_queue import Queue

    q = Queue(url)
    got = q.claim("doomed", queues=[queue], limit=n, lease=0.5)
    ready.put([t.id for t in got])
    while True:
        time.sleep(1)
