"""Process entry points for the multi-process core tests (spawn start method)."""

from __future__ import annotations

import time

from prismq_queue import Queue


def enqueue_same_key(path, key, barrier, out):
    q = Queue(path)
    barrier.wait()
    out.put(q.enqueue("race", {"by": key}, idempotency_key=key))
    q.close()


def open_new_file(path, barrier, out):
    barrier.wait()
    try:
        q = Queue(path)
        q.enqueue("opened")
        q.close()
        out.put("ok")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put(f"{type(e).__name__}: {e}")


def claim_and_complete(path, worker_id, batch, out):
    """Claim until the queue is empty; report claimed ids and any error text."""
    q = Queue(path)
    claimed, errors = [], []
    idle = 0
    while idle < 20:
        try:
            tasks = q.claim(worker_id, limit=batch, lease=120)
            if not tasks:
                idle += 1
                time.sleep(0.005)
                continue
            idle = 0
            claimed += [t.id for t in tasks]
            if batch == 1:
                for t in tasks:
                    q.complete(t, {"by": worker_id})
            else:
                assert all(q.complete_many([(t, {"by": worker_id}) for t in tasks]))
        except Exception as e:  # noqa: BLE001 - the test asserts there are none
            errors.append(f"{type(e).__name__}: {e}")
    out.put((worker_id, claimed, errors))
    q.close()


def keep_writing(path, seconds, out):
    q = Queue(path)
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        q.enqueue_many([{"type": "w", "payload": {"n": n + i}} for i in range(50)])
        n += 50
    out.put(n)
    q.close()
