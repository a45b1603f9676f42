"""Page size of new database files: enqueue, claim+complete (one per call and batched) and the
worker's throughput at 1 KiB, 2 KiB and 4 KiB pages, run alternately so that a noisy machine
affects every size alike. The record behind ``NEW_FILE_PAGE_SIZE`` in ``src/db.rs``.

    python benches/bench_page_size.py [--rounds 3]

Each file is created empty with the page size set before the queue opens it (a non-empty file
keeps the size it was made with, which is how a file of an earlier build behaves).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_worker  # noqa: E402
from prismq_queue import Queue  # noqa: E402

SIZES = (1024, 2048, 4096)


def precreate(path: str, page_size: int) -> None:
    c = sqlite3.connect(path)
    c.execute(f"PRAGMA page_size = {page_size}")
    c.execute("PRAGMA journal_mode = WAL")  # writes the header: the size is fixed from here
    c.close()


def core(page_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "q.db")
        precreate(path, page_size)
        with Queue(path) as q:
            t = time.perf_counter()
            for i in range(5000):
                q.enqueue("t", {"i": i})
            enqueue = 5000 / (time.perf_counter() - t)
            q.enqueue_many([{"type": "t", "payload": {"i": i}} for i in range(40000)])
            t, n = time.perf_counter(), 0
            while n < 20000:
                [task] = q.claim("w")
                q.complete(task)
                n += 1
            cycle = n / (time.perf_counter() - t)
            t, n = time.perf_counter(), 0
            while n < 20000:
                tasks = q.claim("w", limit=100)
                q.complete_many(tasks)
                n += len(tasks)
            batch = n / (time.perf_counter() - t)
        return {"enqueue": enqueue, "claim_complete": cycle, "claim_complete_batch": batch}


def worker(page_size: int) -> float:
    real = bench_worker.Queue

    def sized(path, *a, **k):
        if not os.path.exists(path):
            precreate(path, page_size)
        return real(path, *a, **k)

    bench_worker.Queue = sized
    try:
        return bench_worker.throughput(50000, 1, 5)
    finally:
        bench_worker.Queue = real


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"page size A/B, {args.rounds} rounds, load average {os.getloadavg() if hasattr(os, 'getloadavg') else '-'}")
    results: dict[int, list[dict[str, float]]] = {s: [] for s in SIZES}
    for r in range(args.rounds):
        for size in SIZES:
            row = core(size)
            row["worker_1proc_c5"] = worker(size)
            results[size].append(row)
            print(f"round {r + 1}  {size:>5} B  " + "  ".join(f"{k} {v:,.0f}/s" for k, v in row.items()), flush=True)
    print("median per size:")
    for size, rows in results.items():
        med = {k: sorted(x[k] for x in rows)[len(rows) // 2] for k in rows[0]}
        print(f"  {size:>5} B  " + "  ".join(f"{k} {v:,.0f}/s" for k, v in med.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
