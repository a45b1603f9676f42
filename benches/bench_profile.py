"""The core's hot paths under several builds of the module, run alternately (the build profile A/B).

    python benches/bench_profile.py A=wheels/a.whl B=wheels/b.whl [...] [--rounds 12]

Each wheel is unpacked into a temporary directory; every round runs one child process per build
(the order rotated from round to round), and each child times enqueue, enqueue_many,
claim+complete and batch claim+complete_many on fresh files. The figure is the CPU time of the
child process per operation: on a shared 2-core machine wall time counts the waits for a core,
CPU time counts the work the build's code does. Printed: per build, the median over rounds of its
ratio to the first build in the same round (below 1 is faster), CPU and wall. Give the first
build twice (A=x.whl A2=x.whl) to see the noise floor.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile


def _timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def _fill(q, n):
    for s in range(0, n, 5000):
        q.enqueue_many(
            [
                {"type": f"t{i % 8}", "payload": {"i": i}}
                for i in range(s, min(n, s + 5000))
            ]
        )


def hot_paths(d):
    """Milliseconds per operation, (cpu, wall), for each hot path."""
    from prismq_queue import Queue

    out = {}
    with Queue(os.path.join(d, "enqueue.db")) as q:
        n = 5000
        c, w = _timed(
            lambda: [
                q.enqueue("email.send", {"to": "a@example.com", "i": i})
                for i in range(n)
            ]
        )
        out["enqueue"] = (c / n * 1000, w / n * 1000)
    with Queue(os.path.join(d, "many.db")) as q:
        n = 50_000
        batches = [
            [
                {
                    "type": "email.send",
                    "payload": {"to": "a@example.com", "i": i},
                    "priority": 100,
                }
                for i in range(s, s + 1000)
            ]
            for s in range(0, n, 1000)
        ]
        c, w = _timed(lambda: [q.enqueue_many(b) for b in batches])
        out["enqueue_many"] = (c / n * 1000, w / n * 1000)
    with Queue(os.path.join(d, "cycle.db")) as q:
        n, n_batch = 5000, 40_000
        _fill(q, n + n_batch + 1000)

        def cycle():
            for _ in range(n):
                [t] = q.claim("w")
                _ = t.payload
                q.complete(t)

        def batch():
            done = 0
            while done < n_batch:
                tasks = q.claim("w", limit=100)
                for t in tasks:
                    _ = t.payload
                q.complete_many(tasks)
                done += len(tasks)

        c, w = _timed(cycle)
        out["claim_complete"] = (c / n * 1000, w / n * 1000)
        c, w = _timed(batch)
        out["claim_complete_batch"] = (c / n_batch * 1000, w / n_batch * 1000)
    return out


def _load():
    return os.getloadavg() if hasattr(os, "getloadavg") else "n/a (Windows)"


def _child():
    import prismq_queue

    # An installed copy earlier on sys.path would make every build measure the same module.
    assert prismq_queue.__file__.startswith(
        os.environ["PYTHONPATH"]
    ), prismq_queue.__file__
    with tempfile.TemporaryDirectory(prefix="prismq-profile-") as d:
        print(json.dumps(hot_paths(d)))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "builds", nargs="+", help="NAME=path/to/wheel.whl, the first is the reference"
    )
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    builds = dict(b.split("=", 1) for b in args.builds)
    for name, wheel in builds.items():
        # The shell leaves NAME=dir/*.whl unexpanded: one wheel per build, found here.
        [builds[name]] = glob.glob(wheel)
    names = list(builds)
    with tempfile.TemporaryDirectory(prefix="prismq-wheels-") as root:
        for name, wheel in builds.items():
            zipfile.ZipFile(wheel).extractall(os.path.join(root, name))
        runs = {name: [] for name in names}
        for r in range(args.rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                env = dict(
                    os.environ,
                    PYTHONPATH=os.path.join(root, name),
                    PRISMQ_PROFILE_CHILD="1",
                )
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                runs[name].append(json.loads(out))
            print(
                f"round {r + 1}/{args.rounds} done, load average {_load()}",
                file=sys.stderr,
            )
    ref = runs[names[0]]
    for kind, i in (("CPU", 0), ("wall", 1)):
        print(
            f"{kind} time per operation: median over {args.rounds} rounds of the ratio to {names[0]} (median us)"
        )
        for name in names:
            cells = []
            for fig in ref[0]:
                ratio = statistics.median(
                    run[fig][i] / base[fig][i] for run, base in zip(runs[name], ref)
                )
                us = statistics.median(run[fig][i] for run in runs[name]) * 1000
                cells.append(f"{fig} {ratio:.3f} ({us:.1f})")
            print(f"  {name:<4} " + "  ".join(cells))


if __name__ == "__main__":
    if os.environ.get("PRISMQ_PROFILE_CHILD"):
        _child()
    else:
        main()
