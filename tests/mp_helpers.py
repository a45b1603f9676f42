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


def claim_and_complete(path, worker_id, batch, out, barrier=None):
    """Claim until the queue is empty; report claimed ids and any error text."""
    q = Queue(path)
    if barrier is not None:
        barrier.wait()
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


def keep_writing(path, seconds, out, started=None):
    """Enqueue batches of 50 for `seconds`; set `started` after the first commit; report the count."""
    q = Queue(path)
    n = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        q.enqueue_many([{"type": "w", "payload": {"n": n + i}} for i in range(50)])
        n += 50
        if started is not None and not started.is_set():
            started.set()
    out.put(n)
    q.close()


def enqueue_keys(path, keys, barrier, out):
    """Race the other processes for every key, in the same order; report key -> id and errors."""
    q = Queue(path)
    barrier.wait()
    ids, errors = {}, []
    for i, key in enumerate(keys):
        try:
            if i % 2:
                ids[key] = q.enqueue("race", {"key": key}, idempotency_key=key)
            else:
                [ids[key]] = q.enqueue_many([{"type": "race", "payload": {"key": key}, "idempotency_key": key}])
        except Exception as e:  # noqa: BLE001 - the test asserts there are none
            errors.append(f"{type(e).__name__}: {e}")
    out.put((ids, errors))
    q.close()


def mixed_work(path, worker_id, rounds, barrier, out):
    """Everything a busy process does, at once with the others: produce, read, claim, report
    progress, complete or dead-letter, heartbeat; then drain the queue. Reports which tasks this
    process settled and how, and the text of every error any call raised."""
    q = Queue(path)
    settled, errors = {}, []

    def settle(tasks):
        for t in tasks:
            q.progress(t, 50, step="half way")
            if t.id % 4 == 0:
                q.fail(t, "deliberate", retry=False)
                settled[t.id] = "failed"
            else:
                q.complete(t, {"by": worker_id})
                settled[t.id] = "completed"

    barrier.wait()
    for r in range(rounds):
        try:
            q.enqueue_many([{"type": "mixed", "payload": {"by": worker_id, "r": r, "i": i}} for i in range(4)])
            q.stats()
            q.list(status="running", limit=5)
            settle(q.claim(worker_id, limit=3, lease=120))
            q.heartbeat(worker_id, tasks_done=len(settled))
        except Exception as e:  # noqa: BLE001 - the test asserts there are none
            errors.append(f"{type(e).__name__}: {e}")
    idle = 0
    while idle < 20 and len(errors) < 50:
        try:
            tasks = q.claim(worker_id, limit=5, lease=120)
            if not tasks:
                idle += 1
                time.sleep(0.005)
                continue
            idle = 0
            settle(tasks)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
    out.put((worker_id, settled, errors))
    q.close()


def hold_write_lock(path, seconds, started, out):
    """Hold the write lock of the file for `seconds`, as another tool (a sqlite3 shell) might."""
    import sqlite3

    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    started.set()
    time.sleep(seconds)
    con.execute("ROLLBACK")
    con.close()
    out.put("released")


def claim_once(path, strategy, out):
    """One claim (the first FIFO, LIFO or weighted one on a file creates its strategy's index)."""
    with Queue(path) as q:
        out.put([t.id for t in q.claim("starter", strategy=strategy)])


def enqueue_one(path, task_type, priority, out):
    with Queue(path) as q:
        out.put(q.enqueue(task_type, priority=priority))
