"""Process entry points for tests/test_backends.py (spawn start method)."""

from __future__ import annotations

import os
import threading


def drain_with_worker(url, worker_id, out, concurrency=4):
    """Run a Worker until the queue holds nothing queued or running; report the ids its handler
    ran (with repeats, if any) and this process's pid."""
    from prismq_queue import Queue
    from prismq_queue.worker import Worker
    from worker_handlers import Registry

    ran = []
    lock = threading.Lock()

    def record(ctx):
        with lock:
            ran.append(ctx.task.id)
        return {"pid": os.getpid()}

    q = Queue(url)
    w = Worker(q, Registry({"drain": record}), worker_id=worker_id, concurrency=concurrency,
               poll_interval=0.1, heartbeat_interval=0.5, batch_size=10)

    def stop_when_drained():
        while not stopped.wait(0.2):
            s = q.stats()
            if s["queued"] == 0 and s["running"] == 0:
                w.stop()
                return

    stopped = threading.Event()
    watcher = threading.Thread(target=stop_when_drained, daemon=True)
    watcher.start()
    try:
        w.run(install_signal_handlers=False)
    finally:
        stopped.set()
        out.put((worker_id, os.getpid(), ran))
        q.close()
