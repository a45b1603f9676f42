"""Run by tests/test_worker_signals.py in a process of its own: a Worker, run in the main thread with its
signal handlers, gets a burst of SIGTERMs while a handler runs and while it drains, ROUNDS times.
Prints how many rounds stopped; exits 3 as soon as one round did not stop within 5 s.

Why a burst: on CPython 3.9-3.12 a signal that interrupts ``SimpleQueue.get(timeout=...)`` in
the main thread can leave it blocked long past its timeout (for good, as far as seen here), and one
signal hits that window rarely (a few percent); 60 signals a round hit it within the first few rounds when the
engine waited in the main thread."""

import os
import random
import signal
import sys
import threading
import time

from prismq_queue import Queue, TaskHandlerRegistry, Worker

ROUNDS = int(sys.argv[2])
BURST = 60


def busy(ctx):
    while not ctx.cancelled:
        time.sleep(0.002)


def main() -> None:
    registry = TaskHandlerRegistry()
    registry.register_handler("busy", busy)
    stopped = 0
    # The worker puts back the handler it found when it returns; the rest of a burst that lands
    # after that must reach a handler that ignores it, not the default one that ends this process.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    with Queue(sys.argv[1]) as q:
        for n in range(ROUNDS):
            q.enqueue("busy")
            worker = Worker(q, registry, concurrency=1, poll_interval=0.05, shutdown_grace=0.15, worker_id=f"w{n}")
            returned = threading.Event()

            def signal_soon() -> None:
                while worker.running_count == 0:
                    time.sleep(0.001)
                for _ in range(BURST):  # over the engine's 50 ms waits, then over the drain's
                    time.sleep(random.uniform(0, 0.004))
                    os.kill(os.getpid(), signal.SIGTERM)
                if not returned.wait(5):
                    print(f"round {n}: the worker did not stop within 5 s of SIGTERM", flush=True)
                    os._exit(3)

            sender = threading.Thread(target=signal_soon, daemon=True)
            sender.start()
            worker.run()
            returned.set()
            sender.join()  # the whole burst lands in this round
            stopped += 1
    print(f"stopped {stopped} of {ROUNDS}", flush=True)


main()
