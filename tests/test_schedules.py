"""Periodic tasks (docs/schedules.md), on both backends: defining, listing, pausing, resuming and
removing schedules; each due time enqueued exactly once by several processes running the
scheduler at once; the missed-times policies after a gap (on a clock the test controls:
``run_schedules(now=...)``); and every bad input refused with nothing written."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from schedule_helpers import run_passes

from prismq_queue import InvalidArgument, Queue, ScheduleNotFound

HERE = Path(__file__).parent
UTC = timezone.utc


@pytest.fixture
def queue(queue_url):
    with Queue(queue_url) as q:
        yield q


def tasks_of(q, type_="tick"):
    return sorted(q.list(type=type_, limit=10_000), key=lambda t: t.run_after)


def test_schedule_returns_its_dict_and_the_same_call_again_changes_nothing(queue):
    before = datetime.now(UTC)
    s = queue.schedule(
        "report.daily", "report", cron="0 6 * * *", payload={"to": "ops"}, tz="Europe/Prague", priority=5, timeout=30
    )
    assert s["name"] == "report.daily" and s["type"] == "report" and s["queue"] == "default"
    assert (s["cron"], s["every"], s["tz"], s["missed"]) == ("0 6 * * *", None, "Europe/Prague", "skip")
    assert s["payload"] == {"to": "ops"} and s["options"] == {"priority": 5, "timeout": 30.0}
    assert s["paused"] is False and s["last_run"] is None
    nxt = s["next_run"]
    assert nxt.tzinfo is not None and nxt.utcoffset() == timedelta(0)
    assert before < nxt <= before + timedelta(days=1, hours=1)
    assert nxt.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Prague")).hour == 6
    assert (
        queue.schedule(
            "report.daily",
            "report",
            cron="0 6 * * *",
            payload={"to": "ops"},
            tz="Europe/Prague",
            priority=5,
            timeout=30,
        )
        == s
    )
    assert queue.schedules() == [s]
    # A new definition replaces it: next run from the new pattern.
    t = queue.schedule("report.daily", "report", cron="0 7 * * *", tz="Europe/Prague")
    assert t["cron"] == "0 7 * * *" and t["options"] == {} and t["payload"] is None
    assert len(queue.schedules()) == 1


def test_a_due_time_becomes_one_task_due_then_with_the_schedule_options(queue):
    s = queue.schedule(
        "tick", "tick", every=60, payload={"n": 1}, queue="periodic", priority=7, max_attempts=2, requires={"gpu": True}
    )
    due = s["next_run"]
    assert queue.run_schedules(now=due - timedelta(milliseconds=1)) == 0
    assert queue.run_schedules(now=due) == 1
    assert queue.run_schedules(now=due) == 0
    [t] = tasks_of(queue)
    assert (t.run_after, t.payload, t.queue, t.priority, t.max_attempts) == (due, {"n": 1}, "periodic", 7, 2)
    assert t.requires == {"gpu": True}
    assert t.idempotency_key == f"schedule:tick:{int(due.timestamp() * 1000)}"
    [row] = queue.schedules()
    assert row["last_run"] == due and row["next_run"] == due + timedelta(seconds=60)


def test_after_a_gap_skip_enqueues_only_the_latest_time_and_catch_up_each(queue):
    skip = queue.schedule("skip", "tick", every=60)
    catch = queue.schedule("catch", "tock", every=60, missed="catch_up")
    assert catch["missed"] == "catch_up"
    later = max(skip["next_run"], catch["next_run"]) + timedelta(minutes=10, seconds=5)
    queue.run_schedules(now=later)
    [one] = tasks_of(queue, "tick")
    assert later - timedelta(seconds=60) < one.run_after <= later
    caught = tasks_of(queue, "tock")
    assert len(caught) == 11
    gaps = {b.run_after - a.run_after for a, b in zip(caught, caught[1:])}
    assert gaps == {timedelta(seconds=60)}
    # Both move past `later` on their grid.
    for row in queue.schedules():
        assert later < row["next_run"] <= later + timedelta(seconds=60)


def test_catch_up_after_a_year_is_bounded(queue):
    s = queue.schedule("minutely", "tick", every=60, missed="catch_up")
    assert queue.run_schedules(now=s["next_run"] + timedelta(days=365)) == 100
    assert len(tasks_of(queue)) == 100


def test_pause_resume_and_unschedule(queue):
    s = queue.schedule("tick", "tick", every=60)
    assert queue.pause_schedule("tick")["paused"] is True
    assert queue.pause_schedule("tick")["paused"] is True  # again: no error
    assert queue.run_schedules(now=s["next_run"] + timedelta(hours=1)) == 0
    # A call with the same definition keeps the pause (an app start-up does not undo an operator's pause).
    assert queue.schedule("tick", "tick", every=60)["paused"] is True
    r = queue.resume_schedule("tick")
    assert r["paused"] is False and r["next_run"] > datetime.now(UTC)  # nothing of the pause is enqueued
    assert queue.run_schedules(now=r["next_run"]) == 1
    assert queue.unschedule("tick") is True
    assert queue.unschedule("tick") is False
    assert queue.schedules() == []
    assert len(tasks_of(queue)) == 1  # what it enqueued stays
    for call in (queue.pause_schedule, queue.resume_schedule):
        with pytest.raises(ScheduleNotFound, match="no schedule is named 'tick'") as e:
            call("tick")
        assert isinstance(e.value, KeyError) and e.value.name == "tick"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cron": "61 * * * *"}, "not a valid pattern"),
        ({"cron": "every day"}, "not a valid pattern"),
        ({"cron": "0 0 30 2 *"}, "has no time after"),
        ({"cron": "0 6 * * *", "tz": "Mars/Olympus"}, "not a known time zone"),
        ({"cron": "0 6 * * *", "every": 60}, "not both"),
        ({}, "give cron"),
        ({"every": 0}, "every must be between 1 and"),
        ({"every": -5}, "every must be between 1 and"),
        ({"every": 0.5}, "every must be between 1 and"),
        ({"every": 10**12}, "every must be between"),
        ({"every": float("nan")}, "every must be finite"),
        ({"every": "60"}, "every must be a number of seconds"),
        ({"every": 60, "priority": 0}, "priority must be between 1"),
        ({"every": 60, "max_attempts": 0}, "max_attempts must be at least 1"),
        ({"every": 60, "timeout": -1}, "timeout must be"),
        ({"every": 60, "delay": 5}, "delay is not an option of a schedule"),
        ({"every": 60, "idempotency_key": "k"}, "idempotency_key is not an option"),
        ({"every": 60, "colour": "red"}, 'unknown schedule option "colour"'),
        ({"every": 60, "missed": "sometimes"}, 'missed must be "skip"'),
        ({"every": 60, "queue": ""}, "queue must be a non-empty string"),
    ],
)
def test_bad_input_is_refused_with_nothing_written(queue, kwargs, match):
    with pytest.raises(InvalidArgument, match=match):
        queue.schedule("s", "tick", **kwargs)
    assert queue.schedules() == []


def test_a_bad_name_or_type_is_refused(queue):
    with pytest.raises(InvalidArgument, match="name must be a non-empty string"):
        queue.schedule(" ", "tick", every=60)
    with pytest.raises(InvalidArgument, match="type must be a non-empty string"):
        queue.schedule("s", "", every=60)
    assert queue.schedules() == []


def test_several_processes_running_the_scheduler_at_once_enqueue_each_due_time_once(queue_url):
    with Queue(queue_url) as q:
        s = q.schedule("tick", "tick", every=60, missed="catch_up")
    first = s["next_run"].timestamp()
    # Every process walks the same 40 due times, each a little after the other: they race for each.
    times = [first + 60 * k + 0.001 * j for k in range(40) for j in range(3)]
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=run_passes, args=(queue_url, start, times, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with Queue(queue_url) as q:
        tasks = tasks_of(q)
    due = [t.run_after.timestamp() for t in tasks]
    assert due == [first + 60 * k for k in range(40)]
    # Each pass counted only the tasks its own transaction enqueued: they add up to one per time.
    assert sum(n for _, n in results) == 40


def test_worker_processes_run_the_scheduler(queue_url):
    with Queue(queue_url) as q:
        q.schedule("tick", "tick", every=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    code = f"import schedule_helpers as h, sys; h.run_worker({str(queue_url)!r}, sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, f"w{i}"], env=env) for i in range(3)]
    try:
        with Queue(queue_url) as q:
            deadline = time.monotonic() + 60
            while len(q.list(type="tick", status="completed")) < 3 and time.monotonic() < deadline:
                q.wait_for_change(0.5)
            done = q.list(type="tick", status="completed", limit=1000)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    assert len(done) >= 3
    with Queue(queue_url) as q:
        every = tasks_of(q)
    due = [t.run_after for t in every]
    assert len(set(due)) == len(due)  # never one due time twice, however many workers
    assert all(t.result == t.run_after.isoformat() for t in done)
