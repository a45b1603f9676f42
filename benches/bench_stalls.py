"""Writer stalls: a claim+complete loop (one task per call, 8 task types) that times every call
and reports how much of the run went to calls over 1 ms, and the longest. The record behind the
background checkpointer's WAL restarts (`src/maintenance/checkpointer.rs`, benches/README.md).

    python benches/bench_stalls.py [--tasks 40000] [--rounds 1]

A commit that had to run a checkpoint itself (SQLite's automatic one) shows here as a call of
80-120 ms; throughput alone hides how often that happens.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_core import fill, new_queue  # noqa: E402  (the cycle's backlog: 8 task types)


def run(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        with new_queue(d) as q:
            fill(q, n + 10)
            clock = time.perf_counter
            slow: list[float] = []
            t0 = clock()
            for _ in range(n):
                a = clock()
                [task] = q.claim("w")
                b = clock()
                _ = task.payload
                q.complete(task)
                c = clock()
                slow += [x for x in (b - a, c - b) if x > 0.001]
            wall = clock() - t0
    return {
        "tasks_per_s": n / wall,
        "calls_over_1ms": len(slow),
        "share_in_calls_over_1ms": sum(slow) / wall,
        "longest_ms": max(slow, default=0.0) * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    for r in range(args.rounds):
        o = run(args.tasks)
        print(
            f"round {r + 1}: {o['tasks_per_s']:,.0f} tasks/s; {o['calls_over_1ms']} calls over 1 ms, "
            f"{100 * o['share_in_calls_over_1ms']:.1f}% of the run; longest {o['longest_ms']:.1f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
