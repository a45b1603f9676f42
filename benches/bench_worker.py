"""End-to-end worker throughput and pick-up latency (issue 3's speed targets).

    python benches/bench_worker.py            # full run
    python benches/bench_worker.py --quick    # smoke run

1. No-op handlers, N tasks queued in advance, 1..4 worker processes (spawn), various concurrency:
   tasks/s from the first claim to the last completion, measured through the database.
2. Pick-up latency: an idle worker in another process; this process enqueues one task at a time
   and the handler records when it started; p50/p99 of (start - enqueue).
3. Idle CPU of a worker process over a few seconds (from /proc or psutil-free rusage of the child).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prismq_queue import Queue  # noqa: E402


class _Registry:
    def __init__(self, handlers):
        self.handlers = handlers

    def get_registered_types(self):
        return set(self.handlers)

    def get_handler(self, t):
        return self.handlers[t]


def _noop(ctx):
    return None


def _stamp(ctx):
    return time.time()


def _worker_main(path, concurrency, seconds, ready):
    from prismq_queue.worker import Worker

    q = Queue(path)
    w = Worker(q, _Registry({"noop": _noop, "stamp": _stamp}), concurrency=concurrency)
    timer = threading.Timer(seconds, w.stop)
    timer.daemon = True  # a pending timer must not keep the process alive after a SIGTERM drain
    timer.start()
    ready.set()
    w.run()


def throughput(n, processes, concurrency):
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.db")
        with Queue(path) as q:
            for i in range(0, n, 5000):
                q.enqueue_many([{"type": "noop", "payload": {"i": j}} for j in range(i, min(n, i + 5000))])
        events = [ctx.Event() for _ in range(processes)]
        procs = [ctx.Process(target=_worker_main, args=(path, concurrency, 600, e)) for e in events]
        for p in procs:
            p.start()
        with Queue(path) as q:
            while q.stats()["running"] == 0 and q.stats()["completed"] == 0:
                time.sleep(0.001)
            t0 = time.perf_counter()
            while q.stats()["completed"] < n:
                time.sleep(0.01)
            dt = time.perf_counter() - t0
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        return n / dt


def pickup_latency(samples, url=None):
    """`url`: a queue to measure on (bench_postgres.py gives a PostgreSQL schema's); by default a
    fresh file in a temporary directory."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as d:
        path = url or os.path.join(d, "lat.db")
        Queue(path).close()
        ready = ctx.Event()
        p = ctx.Process(target=_worker_main, args=(path, 5, 600, ready))
        p.start()
        ready.wait()
        time.sleep(1.0)  # let it go idle
        lat, after_commit = [], []
        with Queue(path) as q:
            for _ in range(samples):
                t0 = time.time()
                tid = q.enqueue("stamp")
                t1 = time.time()
                while True:
                    t = q.get(tid)
                    if t.status == "completed":
                        break
                    time.sleep(0.0005)
                # From the enqueue call (its own commit included), and from its return.
                lat.append((t.result - t0) * 1000)
                after_commit.append((t.result - t1) * 1000)
                time.sleep(0.05)  # idle again between samples
        # Idle CPU of the worker process over 5 s (Linux: /proc/<pid>/stat utime+stime).
        idle = None
        stat = f"/proc/{p.pid}/stat"
        if os.path.exists(stat):
            def ticks():
                f = open(stat).read().split(")")[-1].split()
                return int(f[11]) + int(f[12])
            time.sleep(0.5)
            a = ticks()
            time.sleep(5)
            idle = 100.0 * (ticks() - a) / os.sysconf("SC_CLK_TCK") / 5
        p.terminate()
        p.join()
    def pct(xs):
        xs = sorted(xs)
        return {"p50_ms": statistics.median(xs), "p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))], "max_ms": xs[-1]}

    return {**pct(lat), "after_commit": pct(after_commit), "idle_cpu_percent": idle}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = 20_000 if args.quick else 100_000
    results = {}
    settings = [(1, 5), (1, 20), (1, 40), (2, 20), (4, 10)] if not args.quick else [(1, 5), (2, 20)]
    for procs, conc in settings:
        results[f"throughput_{procs}proc_c{conc}"] = throughput(n, procs, conc)
    results["pickup"] = pickup_latency(50 if args.quick else 300)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"no-op tasks, {n} queued in advance (targets: >= 12,000/s for 1 process default, >= 20,000/s best)")
    for k, v in results.items():
        if k.startswith("throughput"):
            print(f"  {k:<28} {v:>10,.0f} tasks/s")
    pk = results["pickup"]
    print(f"pick-up latency, idle worker in another process (targets: p50 < 5 ms, p99 < 20 ms, idle < 1% CPU)")
    print(f"  p50 {pk['p50_ms']:.2f} ms   p99 {pk['p99_ms']:.2f} ms   max {pk['max_ms']:.2f} ms   idle CPU {pk['idle_cpu_percent']}%")


if __name__ == "__main__":
    main()
