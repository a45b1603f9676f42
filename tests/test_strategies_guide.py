"""benches/bench_strategies.py, the source of the figures in docs/strategies.md: run in --quick
mode as a subprocess, then its invariants and the properties the guide states are checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benches" / "bench_strategies.py"
STRATEGIES = ("fifo", "lifo", "priority", "weighted_random")
CLASSES = ("urgent", "normal", "bulk")


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), "--quick", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def median(v):
    """A figure of a deterministic strategy, or the median of weighted_random's repeats."""
    return v["median"] if isinstance(v, dict) and "median" in v else v


@pytest.fixture(scope="module")
def result():
    p = run_bench("--json", "--seed", "11")
    assert p.returncode == 0, p.stderr + p.stdout
    return json.loads(p.stdout)


def test_every_strategy_ran_and_served_every_task_exactly_once(result):
    assert result["ok"] is True
    assert set(result["strategies"]) == {*STRATEGIES, "priority+fifo"}
    cfg = result["config"]
    expected = cfg["overload_ticks"] * cfg["overload_arrivals_per_tick"] + cfg["recovery_ticks"] * cfg[
        "recovery_arrivals_per_tick"]
    for s, r in result["strategies"].items():
        assert r["checks"] == {"ok": True, "problems": []}, s
        assert median(r["tasks"]) == expected, s
        for c in CLASSES:
            d = r["classes"][c]
            # every arrival of the class was served once: one wait per task
            assert median(d["wait"]["count"]) == median(d["arrivals"]), (s, c)
        assert sum(median(r["classes"][c]["arrivals"]) for c in CLASSES) == expected
    assert len(result["strategies"]["weighted_random"]["repeats"]) == cfg["weighted_random_repeats"] == 3
    for rep in result["strategies"]["weighted_random"]["repeats"]:
        assert rep["checks"]["ok"] and rep["tasks"] == expected


def test_the_figures_are_consistent(result):
    cfg = result["config"]
    for s, r in result["strategies"].items():
        runs = r.get("repeats", [r])
        for run in runs:
            classes = run["classes"]
            # Work conserving under overload: the worker served its full capacity every tick, and
            # the backlog grew by the excess whatever the order.
            assert sum(classes[c]["served_overload"] for c in CLASSES) == cfg["overload_ticks"] * cfg["service_per_tick"]
            excess = cfg["overload_arrivals_per_tick"] - cfg["service_per_tick"]
            assert run["backlog_at_end_of_overload"] == cfg["overload_ticks"] * excess
            assert sum(classes[c]["waiting_at_end_of_overload"] for c in CLASSES) == run["backlog_at_end_of_overload"]
            assert abs(sum(classes[c]["arrival_share_overload"] for c in CLASSES) - 1) < 1e-3
            assert abs(sum(classes[c]["service_share_overload"] for c in CLASSES) - 1) < 1e-3
            ratios = [classes[c]["service_share_overload"] / classes[c]["arrival_share_overload"] for c in CLASSES]
            assert abs(run["jain_overload"] - sum(ratios) ** 2 / (3 * sum(x * x for x in ratios))) < 1e-3
            for c in CLASSES:
                w = classes[c]["wait"]
                assert 0 <= w["p50"] <= w["p95"] <= w["p99"] <= w["max"] <= run["max_wait"], (s, c)
                assert classes[c]["oldest_age_at_end_of_overload"] < cfg["overload_ticks"]
            assert run["max_wait"] == max(classes[c]["wait"]["max"] for c in CLASSES)


def test_what_the_guide_says_about_each_strategy(result):
    st = result["strategies"]
    cls = {s: {c: st[s]["classes"][c] for c in CLASSES} for s in STRATEGIES}

    # FIFO: served in proportion to arrivals, and the shortest longest wait of all.
    assert st["fifo"]["jain_overload"] > 0.99
    assert all(st["fifo"]["max_wait"] <= median(st[s]["max_wait"]) for s in STRATEGIES)

    # Priority: urgent tasks wait least of all (0 here: fewer arrive per tick than are served),
    # and bulk carries the whole backlog of the overload.
    assert cls["priority"]["urgent"]["wait"]["max"] == 0
    assert all(cls["priority"]["urgent"]["wait"]["p99"] <= median(cls[s]["urgent"]["wait"]["p99"]) for s in STRATEGIES)
    assert cls["priority"]["urgent"]["wait"]["p99"] <= cls["priority"]["normal"]["wait"]["p99"] <= cls["priority"]["bulk"]["wait"]["p99"]
    assert cls["priority"]["bulk"]["waiting_at_end_of_overload"] == st["priority"]["backlog_at_end_of_overload"]
    assert cls["priority"]["urgent"]["service_to_arrival_ratio"] > 1 > cls["priority"]["bulk"]["service_to_arrival_ratio"]

    # LIFO: new work first, so the oldest tasks starve while the load lasts.
    assert all(cls["lifo"][c]["oldest_age_at_end_of_overload"] > cls["fifo"][c]["oldest_age_at_end_of_overload"]
               for c in CLASSES)
    assert st["lifo"]["max_wait"] > st["fifo"]["max_wait"]

    # Weighted random: urgent first in the main, bulk still served during the overload, and a
    # shorter worst wait for bulk than strict priority gives it.
    w = cls["weighted_random"]
    assert median(w["urgent"]["wait"]["p99"]) < median(w["normal"]["wait"]["p99"]) < median(w["bulk"]["wait"]["p99"])
    assert median(w["urgent"]["service_to_arrival_ratio"]) > 1 > median(w["bulk"]["service_to_arrival_ratio"])
    assert median(w["bulk"]["wait"]["max"]) < cls["priority"]["bulk"]["wait"]["max"]

    # The mitigation: one claim in ten by FIFO keeps urgent tasks at once and bounds bulk's wait.
    mixed = st["priority+fifo"]["classes"]
    assert mixed["urgent"]["wait"]["max"] == 0
    assert mixed["bulk"]["wait"]["max"] < cls["priority"]["bulk"]["wait"]["max"]
    assert mixed["bulk"]["oldest_age_at_end_of_overload"] < cls["priority"]["bulk"]["oldest_age_at_end_of_overload"]


def test_deterministic_strategies_repeat_exactly_for_a_seed(result):
    p = run_bench("--json", "--seed", "11", "--strategies", "fifo,lifo,priority")
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout)["strategies"]
    for s in ("fifo", "lifo", "priority"):
        first = dict(result["strategies"][s], elapsed_seconds=None)
        assert dict(again[s], elapsed_seconds=None) == first, s


def test_a_different_seed_changes_the_arrivals(result):
    p = run_bench("--json", "--seed", "12", "--strategies", "fifo")
    assert p.returncode == 0, p.stderr
    other = json.loads(p.stdout)["strategies"]["fifo"]["classes"]
    same = result["strategies"]["fifo"]["classes"]
    assert [other[c]["arrivals"] for c in CLASSES] != [same[c]["arrivals"] for c in CLASSES]


def test_text_report_and_bad_usage():
    p = run_bench("--strategies", "priority", "--repeats", "1")
    assert p.returncode == 0, p.stderr
    assert "priority: Jain (overload)" in p.stdout and "checks: every task served exactly once" in p.stdout
    bad = run_bench("--strategies", "random")
    assert bad.returncode == 2 and "unknown strategies" in bad.stderr
