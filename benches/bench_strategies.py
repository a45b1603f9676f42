"""Fairness and starvation of the four claim strategies under a mixed-priority load (issue 6).

    python benches/bench_strategies.py                 # full run (about 10-30 s here)
    python benches/bench_strategies.py --quick         # smaller phases, 3 weighted repeats
    python benches/bench_strategies.py --json          # the same, machine-readable
    python benches/bench_strategies.py --seed 7 --repeats 9

A discrete simulation in *ticks* against a real ``prismq_queue.Queue`` on a temporary file, so
the figures do not depend on the machine's speed. Each tick:

1. ``k`` tasks arrive, in one ``enqueue_many``; each task's class is drawn from a fixed mix and
   its priority from the class's range; the payload records its class and arrival tick;
2. one worker claims up to ``m`` tasks (``claim(limit=m, strategy=...)``: the same tasks as
   ``m`` single claims, since nothing arrives in between) and completes them
   (``complete_many``). A task claimed in the tick it arrived waited 0 ticks.

Mix: 10% urgent (priority 1..10), 30% normal (80..120), 60% bulk (500..1000), uniform within
each range. Phases: *overload* (13 arrivals per tick for 10 served: 130% load, the backlog
grows), *recovery* at 80% load (8 arrivals per tick), then *drain* (no arrivals) until the queue
is empty.

Figures per strategy and per class:
  arrival share / service share during the overload, and their ratio (1 = served in proportion
  to demand); waits in ticks (p50/p95/p99/max, nearest rank) over every task of the run;
  tasks of the class still waiting when the overload ends, and the age of the oldest (the
  starvation figure). Per strategy: Jain's fairness index over the per-class ratios,
  (sum x)^2 / (n sum x^2), 1 when every class gets its share, 1/3 when one class takes all;
  the longest wait of the run; the drain length.

FIFO, LIFO and priority are deterministic for a given --seed (their order is (priority,)
run_after, id, and run_after is the enqueue time, which only grows). Weighted random draws its
race keys inside the core from an unseeded generator, so its figures differ from run to run: it
is repeated --repeats times on the same arrivals, and each figure is given as median and range.

One more scenario, a mitigation of priority's starvation: ``priority+fifo`` claims 9 tasks per
tick by priority and then 1 by FIFO (as if one worker in ten ran with strategy="fifo").

Checks (exit 1 when one fails): every task claimed exactly once and completed; the queue empty
at the end (stats); no tick serves more than m; no tick serves fewer than min(m, queued) (work
conserving).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time

from prismq_queue import Queue, __version__

STRATEGIES = ("fifo", "lifo", "priority", "weighted_random")
# What the worker claims each tick, in order: (strategy, how many). The four strategies, and one
# mitigation: nine claims by priority and one by FIFO, so the oldest task always moves.
SCENARIOS = {
    "fifo": [("fifo", 10)],
    "lifo": [("lifo", 10)],
    "priority": [("priority", 10)],
    "weighted_random": [("weighted_random", 10)],
    "priority+fifo": [("priority", 9), ("fifo", 1)],
}
CLASSES = ("urgent", "normal", "bulk")
MIX = {  # class: (share of arrivals, lowest priority, highest priority)
    "urgent": (0.10, 1, 10),
    "normal": (0.30, 80, 120),
    "bulk": (0.60, 500, 1000),
}
SERVICE = 10          # tasks claimed and completed per tick
OVERLOAD_RATE = 13    # arrivals per tick during the overload (130%)
RECOVERY_RATE = 8     # arrivals per tick during the recovery (80%)
FULL = {"overload_ticks": 400, "recovery_ticks": 800, "repeats": 5}
QUICK = {"overload_ticks": 80, "recovery_ticks": 160, "repeats": 3}
MAX_DRAIN_TICKS = 100_000


def arrivals(seed: int, overload_ticks: int, recovery_ticks: int) -> list[list[tuple[str, int]]]:
    """The arrivals of every loaded tick: a list of (class, priority) per tick, from the seed only."""
    rng = random.Random(seed)
    names = list(MIX)
    weights = [MIX[c][0] for c in names]
    plan = []
    for tick in range(overload_ticks + recovery_ticks):
        k = OVERLOAD_RATE if tick < overload_ticks else RECOVERY_RATE
        batch = []
        for _ in range(k):
            cls = rng.choices(names, weights)[0]
            _, lo, hi = MIX[cls]
            batch.append((cls, rng.randint(lo, hi)))
        plan.append(batch)
    return plan


def nearest_rank(sorted_values: list[int], percent: int) -> int | None:
    """The smallest value with at least percent% of the values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, (percent * len(sorted_values) + 99) // 100)
    return sorted_values[rank - 1]


def wait_summary(waits: list[int]) -> dict:
    w = sorted(waits)
    return {
        "count": len(w),
        "mean": round(statistics.fmean(w), 2) if w else None,
        "p50": nearest_rank(w, 50),
        "p95": nearest_rank(w, 95),
        "p99": nearest_rank(w, 99),
        "max": w[-1] if w else None,
    }


def jain(xs: list[float]) -> float:
    return (sum(xs) ** 2) / (len(xs) * sum(x * x for x in xs)) if any(xs) else 0.0


def simulate(scenario: str, plan: list[list[tuple[str, int]]], overload_ticks: int, workdir: str) -> dict:
    """One run of the whole load against a fresh queue file; returns the figures and the checks."""
    path = os.path.join(workdir, f"{scenario.replace('+', '_')}-{time.monotonic_ns()}.db")
    outstanding: dict[int, tuple[str, int, str]] = {}   # id -> (class, arrival tick, arrival phase)
    served: set[int] = set()
    waits = {c: [] for c in CLASSES}
    waits_by_phase = {p: {c: [] for c in CLASSES} for p in ("overload", "recovery")}
    arrived_overload = dict.fromkeys(CLASSES, 0)
    arrived_total = dict.fromkeys(CLASSES, 0)
    served_overload = dict.fromkeys(CLASSES, 0)
    end_of_overload = None
    problems: list[str] = []
    total = 0
    tick = 0
    drain_ticks = 0
    started = time.perf_counter()
    with Queue(path) as q:
        while True:
            loaded = tick < len(plan)
            phase = "overload" if tick < overload_ticks else ("recovery" if loaded else "drain")
            if loaded:
                batch = plan[tick]
                ids = q.enqueue_many(
                    {"type": "job", "priority": p, "payload": {"cls": c, "tick": tick}} for c, p in batch
                )
                for task_id, (c, _) in zip(ids, batch):
                    outstanding[task_id] = (c, tick, phase)
                    arrived_total[c] += 1
                    if phase == "overload":
                        arrived_overload[c] += 1
                total += len(batch)
            elif not outstanding:
                break
            else:
                drain_ticks += 1
                if drain_ticks > MAX_DRAIN_TICKS:
                    problems.append(f"still {len(outstanding)} tasks queued after {MAX_DRAIN_TICKS} drain ticks")
                    break
            queued_before = len(outstanding)
            tasks = []
            for strategy, n in SCENARIOS[scenario]:
                tasks += q.claim("sim-worker", strategy=strategy, limit=n, lease=600)
            for t in tasks:
                if t.id in served or t.id not in outstanding:
                    problems.append(f"tick {tick}: task {t.id} claimed a second time")
                    continue
                c, arrived, arrival_phase = outstanding.pop(t.id)
                served.add(t.id)
                if t.payload != {"cls": c, "tick": arrived}:
                    problems.append(f"task {t.id}: payload {t.payload!r} is not what was enqueued")
                waits[c].append(tick - arrived)
                waits_by_phase[arrival_phase][c].append(tick - arrived)
                if phase == "overload":
                    served_overload[c] += 1
            if len(tasks) > SERVICE:
                problems.append(f"tick {tick}: {len(tasks)} tasks served, more than {SERVICE}")
            if len(tasks) < min(SERVICE, queued_before):
                problems.append(f"tick {tick}: {len(tasks)} served while {queued_before} were queued")
            if tasks and not all(q.complete_many(tasks)):
                problems.append(f"tick {tick}: a completion lost its lease")
            if tick == overload_ticks - 1:
                end_of_overload = {c: [] for c in CLASSES}
                for c, arrived, _ in outstanding.values():
                    end_of_overload[c].append(tick - arrived)
            tick += 1
        stats = q.stats()
    elapsed = time.perf_counter() - started
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    if outstanding:
        problems.append(f"{len(outstanding)} tasks never served")
    if len(served) != total:
        problems.append(f"{len(served)} tasks served, {total} enqueued")
    if stats["completed"] != total or stats["queued"] or stats["running"]:
        problems.append(f"stats at the end: {stats}")

    n_arrived = sum(arrived_overload.values())
    n_served = sum(served_overload.values())
    classes = {}
    for c in CLASSES:
        arrival_share = arrived_overload[c] / n_arrived if n_arrived else 0.0
        service_share = served_overload[c] / n_served if n_served else 0.0
        stuck = end_of_overload[c] if end_of_overload else []
        classes[c] = {
            "arrivals": arrived_total[c],
            "arrivals_overload": arrived_overload[c],
            "served_overload": served_overload[c],
            "arrival_share_overload": round(arrival_share, 4),
            "service_share_overload": round(service_share, 4),
            "service_to_arrival_ratio": round(service_share / arrival_share, 4) if arrival_share else None,
            "wait": wait_summary(waits[c]),
            "wait_by_arrival_phase": {p: wait_summary(waits_by_phase[p][c]) for p in waits_by_phase},
            "waiting_at_end_of_overload": len(stuck),
            "oldest_age_at_end_of_overload": max(stuck) if stuck else 0,
        }
    ratios = [classes[c]["service_to_arrival_ratio"] or 0.0 for c in CLASSES]
    all_waits = [w for c in CLASSES for w in waits[c]]
    return {
        "strategy": scenario,
        "tasks": total,
        "jain_overload": round(jain(ratios), 4),
        "max_wait": max(all_waits) if all_waits else None,
        "backlog_at_end_of_overload": sum(classes[c]["waiting_at_end_of_overload"] for c in CLASSES),
        "drain_ticks": drain_ticks,
        "ticks": tick,
        "classes": classes,
        "checks": {"ok": not problems, "problems": problems[:20]},
        "elapsed_seconds": round(elapsed, 2),
    }


def aggregate(runs: list[dict]):
    """Median, min and max of every number across repeated runs, in the runs' own shape."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: aggregate([r[k] for r in runs]) for k in first}
    if isinstance(first, bool) or not isinstance(first, (int, float)) or any(r is None for r in runs):
        return first if all(r == first for r in runs) else runs
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs)}


def run(seed: int, overload_ticks: int, recovery_ticks: int, repeats: int, strategies=tuple(SCENARIOS)) -> dict:
    plan = arrivals(seed, overload_ticks, recovery_ticks)
    out = {
        "config": {
            "seed": seed, "overload_ticks": overload_ticks, "recovery_ticks": recovery_ticks,
            "service_per_tick": SERVICE, "overload_arrivals_per_tick": OVERLOAD_RATE,
            "recovery_arrivals_per_tick": RECOVERY_RATE, "weighted_random_repeats": repeats,
            "mix": {c: {"share": s, "priorities": [lo, hi]} for c, (s, lo, hi) in MIX.items()},
        },
        "machine": {"python": platform.python_version(), "prismq_queue": __version__, "platform": platform.platform()},
        "strategies": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_strategies_") as workdir:
        for s in strategies:
            if s == "weighted_random":
                reps = [simulate(s, plan, overload_ticks, workdir) for _ in range(repeats)]
                summary = aggregate([{k: v for k, v in r.items() if k not in ("checks", "strategy")} for r in reps])
                summary["strategy"] = s
                summary["checks"] = {
                    "ok": all(r["checks"]["ok"] for r in reps),
                    "problems": [p for r in reps for p in r["checks"]["problems"]][:20],
                }
                summary["repeats"] = reps
                out["strategies"][s] = summary
            else:
                out["strategies"][s] = simulate(s, plan, overload_ticks, workdir)
    out["ok"] = all(r["checks"]["ok"] for r in out["strategies"].values())
    return out


def fmt(v, digits: int = 2) -> str:
    """A figure, or 'median [min-max]' for a repeated one."""
    if isinstance(v, dict) and "median" in v:
        lo, mid, hi = (fmt(v[k], digits) for k in ("min", "median", "max"))
        return mid if lo == hi else f"{mid} [{lo}-{hi}]"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "-" if v is None else str(v)


def percent(v) -> str:
    if isinstance(v, dict) and "median" in v:
        return fmt({k: 100 * v[k] for k in ("min", "median", "max")}, 1)
    return fmt(100 * v, 1)


def report(out: dict) -> None:
    cfg = out["config"]
    print(
        f"seed {cfg['seed']}: overload {cfg['overload_ticks']} ticks at {cfg['overload_arrivals_per_tick']} "
        f"arrivals/tick, recovery {cfg['recovery_ticks']} ticks at {cfg['recovery_arrivals_per_tick']}, "
        f"then drain; {cfg['service_per_tick']} served per tick; weighted_random repeated "
        f"{cfg['weighted_random_repeats']} times (median [min-max])"
    )
    for s, r in out["strategies"].items():
        print(
            f"\n{s}: Jain (overload) {fmt(r['jain_overload'])}, max wait {fmt(r['max_wait'])} ticks, "
            f"backlog at end of overload {fmt(r['backlog_at_end_of_overload'])}, "
            f"drain {fmt(r['drain_ticks'])} ticks, {fmt(r['tasks'])} tasks"
            + ("" if r["checks"]["ok"] else f"  CHECKS FAILED: {r['checks']['problems']}")
        )
        head = ("class", "arr%", "srv%", "srv/arr", "wait p50", "p95", "p99", "max", "waiting@end", "oldest")
        rows = [head]
        for c, d in r["classes"].items():
            w = d["wait"]
            rows.append((
                c, percent(d["arrival_share_overload"]), percent(d["service_share_overload"]),
                fmt(d["service_to_arrival_ratio"]), fmt(w["p50"]), fmt(w["p95"]), fmt(w["p99"]), fmt(w["max"]),
                fmt(d["waiting_at_end_of_overload"]), fmt(d["oldest_age_at_end_of_overload"]),
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        for row in rows:
            print("  " + "  ".join(v.ljust(wd) if i == 0 else v.rjust(wd) for i, (v, wd) in enumerate(zip(row, widths))))
        print("  arrived during the recovery, wait p99 / max: " + "; ".join(
            f"{c} {fmt(d['wait_by_arrival_phase']['recovery']['p99'])} / "
            f"{fmt(d['wait_by_arrival_phase']['recovery']['max'])}" for c, d in r["classes"].items()))
    print("\nchecks:", "every task served exactly once, queue empty, m per tick respected, work conserving"
          if out["ok"] else "FAILED")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short phases (80 + 160 ticks), 3 weighted repeats")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--seed", type=int, default=20261124, help="seed of the arrivals (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=None, help="weighted_random repeats (default 5, quick 3)")
    ap.add_argument("--strategies", default=",".join(SCENARIOS),
                    help="comma-separated subset of: %(default)s (priority+fifo: 9 claims by priority, 1 by fifo)")
    ap.add_argument("--from-json", metavar="FILE", help="print the tables of an earlier --json output, run nothing")
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            out = json.load(f)
        report(out)
        return 0 if out["ok"] else 1
    size = QUICK if args.quick else FULL
    strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = set(strategies) - set(SCENARIOS)
    if unknown or not strategies:
        ap.error(f"unknown strategies {sorted(unknown)}; use {', '.join(SCENARIOS)}")
    repeats = args.repeats if args.repeats is not None else size["repeats"]
    if repeats < 1:
        ap.error("--repeats must be at least 1")
    out = run(args.seed, size["overload_ticks"], size["recovery_ticks"], repeats, strategies)
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        report(out)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
