"""Issue 15, the core's promises under hostile input: every duration, time, integer and string
argument is range-checked before anything is written (InvalidArgument naming the argument and
what is allowed), and nothing a caller can store takes a reader down.

Ranges (prismq_queue's core, ``src/time.rs``): a duration is at most 100 years
(3,155,760,000 s); an instant lies within the years 1..9999 UTC.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import snapshot
from prismq_queue import InvalidArgument, Queue

MAX_DURATION_S = 36_525 * 86_400
UTC = timezone.utc


def _state(q):
    stats, rows = snapshot(q)
    stats = dict(stats)
    stats.pop("oldest_queued_age_seconds")  # grows with the clock, not with writes
    return stats, rows


@contextmanager
def writes_nothing(q):
    """Nothing observable changed, and nothing at all was committed (data_version of another
    connection moves on any commit, to tables the API does not show too)."""
    con = sqlite3.connect(q.path, isolation_level=None)
    try:
        version = con.execute("PRAGMA data_version").fetchone()[0]
        before = _state(q)
        yield
        assert _state(q) == before
        assert con.execute("PRAGMA data_version").fetchone()[0] == version, "something was committed"
    finally:
        con.close()


@pytest.fixture
def q(queue):
    queue.enqueue("seed", {"n": 1}, priority=5)
    queue.enqueue("seed", {"n": 2}, idempotency_key="seed-key")
    queue.enqueue("seed", {"n": 3}, delay=3600)
    [done] = queue.claim("seeder", types=["seed"])
    queue.complete(done, {"ok": True})
    return queue


# -- 1. a huge lease or delay never wraps --------------------------------------------------------


def test_a_huge_lease_is_refused_and_the_task_is_handed_out_once(queue):
    tid = queue.enqueue("t")
    with writes_nothing(queue):
        with pytest.raises(InvalidArgument) as e:
            queue.claim("w1", lease=1e16)
    assert "lease must be between 0.001 and 3155760000 seconds (100 years), got 1e+16" in str(e.value)
    [t] = queue.claim("w2", lease=60)
    assert t.id == tid
    assert queue.claim("w3") == [], "the task must not be handed out twice"


@pytest.mark.parametrize(
    "delay", [1e16, 10**16, timedelta.max, timedelta(days=36_526), MAX_DURATION_S + 1, -1e300, -(10**30)]
)
def test_a_huge_delay_is_refused(q, delay):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            q.enqueue("t", delay=delay)
    assert str(e.value).startswith("delay must be ")
    assert "3155760000 seconds (100 years)" in str(e.value) or "zero or positive" in str(e.value)


def test_the_longest_delay_and_lease_are_accepted_and_read_back(queue):
    tid = queue.enqueue("t", delay=MAX_DURATION_S)
    assert queue.get(tid).run_after.year >= 2100
    tid2 = queue.enqueue("u")
    [t] = queue.claim("w", types="u", lease=MAX_DURATION_S)
    assert t.id == tid2 and t.lease_until.year >= 2100
    assert queue.renew(t, MAX_DURATION_S).year >= 2100
    assert queue.get(tid2).as_dict()["lease_until"].year >= 2100


def test_a_huge_renewal_is_refused_and_the_lease_kept(queue):
    queue.enqueue("t")
    [t] = queue.claim("w", lease=60)
    before = queue.get(t.id).lease_until
    with writes_nothing(queue):
        with pytest.raises(InvalidArgument, match=r"^lease must be between 0.001 and 3155760000 seconds"):
            queue.renew(t, 1e16)
        with pytest.raises(InvalidArgument, match=r"^lease must be between 0.001 and 3155760000 seconds"):
            queue.renew(t, timedelta.max)
    assert queue.get(t.id).lease_until == before
    assert queue.claim("other") == []


@pytest.mark.parametrize("key", ["cap", "base"])
def test_a_huge_retry_cap_or_base_is_refused(q, key):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=rf"^retry policy {key} must be between 0 and 3155760000 seconds"):
            q.set_retry_policy("default", **{key: 1e16})
        with pytest.raises(InvalidArgument, match=rf"retry policy {key} must be between 0 and 3155760000 seconds"):
            q.enqueue("t", retry={key: 1e16})


def test_a_huge_retry_policy_stored_by_an_older_version_still_fails_cleanly(queue):
    # Written behind the API's back, as an earlier version accepted it.
    con = sqlite3.connect(queue.path)
    con.execute("INSERT INTO queue_config (queue, retry_policy) VALUES ('default', '{\"cap\": 1e16, \"base\": 1e16}')")
    con.commit()
    con.close()
    tid = queue.enqueue("t")
    [t] = queue.claim("w")
    when = queue.fail(t, "boom")
    assert when is not None and when.year <= 9999
    row = queue.get(tid)
    assert row.status == "queued" and row.run_after == when
    assert row.as_dict()["run_after"] == when
    assert queue.claim("w2") == [], "not due for a long time"


@pytest.mark.parametrize(
    "run_after, shown",
    [
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12))), "+10000-01-01T11:59:59.000Z"),
        (datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))), "0000-12-31T23:00:00.000Z"),
        (1e16, "1e+16 seconds since the epoch"),
        (-(10**20), "seconds since the epoch"),
    ],
    ids=["9999-12-31T23:59:59-12:00", "0001-01-01T00:00+01:00", "1e16", "-10**20"],
)
def test_a_run_after_outside_years_1_to_9999_utc_is_refused(q, run_after, shown):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            q.enqueue("t", run_after=run_after)
    msg = str(e.value)
    assert msg.startswith(
        "run_after must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z (UTC), got "
    ), msg
    assert shown in msg


def test_the_extremes_of_the_range_are_stored_and_read_back(queue):
    latest = datetime.max.replace(tzinfo=UTC)
    earliest = datetime.min.replace(tzinfo=UTC)
    a = queue.enqueue("t", run_after=latest)
    b = queue.enqueue("t", run_after=earliest)
    assert queue.get(a).run_after == datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert queue.get(b).run_after == earliest
    assert [t.id for t in queue.claim("w", limit=5)] == [b]


def test_a_naive_datetime_max_is_refused(q):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match="must be timezone-aware"):
            q.enqueue("t", run_after=datetime.max)


# -- 12. integers beyond 64 bits, floats beyond range, lone surrogates ---------------------------

BIG = [2**63, -(2**63) - 1, 10**400]
SURROGATE = "bad\ud800name"


def _claimed(q):
    q.enqueue("victim", {"n": 9})
    [t] = q.claim("holder", types="victim")
    return t


# Every Queue method argument that takes an int, a float, a duration, an instant or a string,
# with how to call it with a bad value. Each must raise InvalidArgument and write nothing.
CALLS = {
    # enqueue and enqueue_many
    "enqueue.priority": lambda q, v: q.enqueue("t", priority=v),
    "enqueue.max_attempts": lambda q, v: q.enqueue("t", max_attempts=v),
    "enqueue.delay": lambda q, v: q.enqueue("t", delay=v),
    "enqueue.timeout": lambda q, v: q.enqueue("t", timeout=v),
    "enqueue.run_after": lambda q, v: q.enqueue("t", run_after=v),
    "enqueue.retry.cap": lambda q, v: q.enqueue("t", retry={"cap": v}),
    "enqueue.retry.jitter": lambda q, v: q.enqueue("t", retry={"jitter": v}),
    "enqueue.type": lambda q, v: q.enqueue(v),
    "enqueue.queue": lambda q, v: q.enqueue("t", queue=v),
    "enqueue.idempotency_key": lambda q, v: q.enqueue("t", idempotency_key=v),
    "enqueue.payload": lambda q, v: q.enqueue("t", {"k": v}),
    "enqueue.requires": lambda q, v: q.enqueue("t", requires={"k": v}),
    "enqueue_many.priority": lambda q, v: q.enqueue_many([{"type": "t"}, {"type": "t", "priority": v}]),
    "enqueue_many.delay": lambda q, v: q.enqueue_many([{"type": "t"}, {"type": "t", "delay": v}]),
    "enqueue_many.timeout": lambda q, v: q.enqueue_many([{"type": "t", "timeout": v}]),
    "enqueue_many.max_attempts": lambda q, v: q.enqueue_many([{"type": "t", "max_attempts": v}]),
    "enqueue_many.run_after": lambda q, v: q.enqueue_many([{"type": "t", "run_after": v}]),
    "enqueue_many.type": lambda q, v: q.enqueue_many([{"type": v}]),
    "enqueue_many.key": lambda q, v: q.enqueue_many([{"type": "t", v: 1}]),
    # reading
    "get.task_id": lambda q, v: q.get(v),
    "find.idempotency_key": lambda q, v: q.find(v),
    "list.limit": lambda q, v: q.list(limit=v),
    "list.after_id": lambda q, v: q.list(after_id=v),
    "list.type": lambda q, v: q.list(type=v),
    "list.queue": lambda q, v: q.list(queue=v),
    "list.status": lambda q, v: q.list(status=v),
    "list.order": lambda q, v: q.list(order=v),
    "stats.queue": lambda q, v: q.stats(queue=v),
    "logs.task_id": lambda q, v: q.logs(v),
    "attempts.task_id": lambda q, v: q.attempts(v),
    "logs.limit": lambda q, v: q.logs(1, limit=v),
    "position.task_id": lambda q, v: q.position(v),
    "position.strategy": lambda q, v: q.position(1, strategy=v),
    "explain_claim.strategy": lambda q, v: q.explain_claim(v),
    "metrics.window": lambda q, v: q.metrics(window=v),
    "queue_depths.queues": lambda q, v: q.queue_depths([v]),
    "change_cursor.queues": lambda q, v: q.change_cursor(queues=[v]),
    "changes_since.limit": lambda q, v: q.changes_since(q.change_cursor(), limit=v),
    "changes_since.timeout": lambda q, v: q.changes_since(q.change_cursor(), timeout=v),
    "changes_since.min_gap": lambda q, v: q.changes_since(q.change_cursor(), min_gap=v),
    "wait_for_change.timeout": lambda q, v: q.wait_for_change(v),
    "wait_for_change.since": lambda q, v: q.wait_for_change(0, since=(v, 0)),
    # steering
    "cancel.task_id": lambda q, v: q.cancel(v),
    "retry.task_id": lambda q, v: q.retry(v),
    "set_priority.task_id": lambda q, v: q.set_priority(v, 5),
    "set_priority.priority": lambda q, v: q.set_priority(1, v),
    "set_retry_policy.queue": lambda q, v: q.set_retry_policy(v, base=1),
    "set_retry_policy.base": lambda q, v: q.set_retry_policy("default", base=v),
    "set_retry_policy.factor": lambda q, v: q.set_retry_policy("default", factor=v),
    "set_retry_policy.cap": lambda q, v: q.set_retry_policy("default", cap=v),
    "set_retry_policy.jitter": lambda q, v: q.set_retry_policy("default", jitter=v),
    "set_default_timeout.queue": lambda q, v: q.set_default_timeout(v, 5),
    "set_default_timeout.timeout": lambda q, v: q.set_default_timeout("default", v),
    "default_timeout.queue": lambda q, v: q.default_timeout(v),
    # consuming
    "claim.worker_id": lambda q, v: q.claim(v),
    "claim.limit": lambda q, v: q.claim("w", limit=v),
    "claim.lease": lambda q, v: q.claim("w", lease=v),
    "claim.queues": lambda q, v: q.claim("w", queues=[v]),
    "claim.types": lambda q, v: q.claim("w", types=v),
    "claim.strategy": lambda q, v: q.claim("w", strategy=v),
    "claim.capabilities": lambda q, v: q.claim("w", capabilities={"k": v}),
    "settle.limit": lambda q, v: q.settle(worker_id="w", limit=v),
    "settle.lease": lambda q, v: q.settle(worker_id="w", lease=v),
    "renew.lease": lambda q, v: q.renew(_claimed(q), v),
    "progress.percent": lambda q, v: q.progress(_claimed(q), v),
    "progress.step": lambda q, v: q.progress(_claimed(q), 5, step=v),
    "progress.message": lambda q, v: q.progress(_claimed(q), 5, message=v),
    "complete.result": lambda q, v: q.complete(_claimed(q), {"r": v}),
    # workers and logs
    "heartbeat.worker_id": lambda q, v: q.heartbeat(v),
    "heartbeat.host": lambda q, v: q.heartbeat("w", host=v),
    "heartbeat.pid": lambda q, v: q.heartbeat("w", pid=v),
    "heartbeat.tasks_done": lambda q, v: q.heartbeat("w", tasks_done=v),
    "heartbeat.concurrency": lambda q, v: q.heartbeat("w", concurrency=v),
    "heartbeat.queues": lambda q, v: q.heartbeat("w", queues=[v]),
    "remove_worker.worker_id": lambda q, v: q.remove_worker(v),
    "log.task_id": lambda q, v: q.log(v, "info", "m"),
    "log.level": lambda q, v: q.log(1, v, "m"),
    "log.message": lambda q, v: q.log(1, "info", v),
    # maintenance
    "purge.older_than": lambda q, v: q.purge(older_than=v),
    "purge.batch_size": lambda q, v: q.purge(older_than=0, batch_size=v),
    "purge.statuses": lambda q, v: q.purge(older_than=0, statuses=[v]),
    "checkpoint.mode": lambda q, v: q.checkpoint(v),
    # runs of the task manager adapter
    "save_run.run_id": lambda q, v: q.save_run(v, "m", "queued", datetime.now(UTC), {}),
    "save_run.module_id": lambda q, v: q.save_run("r", v, "queued", datetime.now(UTC), {}),
    "save_run.status": lambda q, v: q.save_run("r", "m", v, datetime.now(UTC), {}),
    "save_run.created_at": lambda q, v: q.save_run("r", "m", "queued", v, {}),
    "save_run.completed_at": lambda q, v: q.save_run("r", "m", "done", datetime.now(UTC), {}, completed_at=v),
    "load_run.run_id": lambda q, v: q.load_run(v),
    "list_runs.status": lambda q, v: q.list_runs(status=v),
    "list_runs.module_id": lambda q, v: q.list_runs(module_id=v),
    "list_runs.limit": lambda q, v: q.list_runs(limit=v),
    "delete_run.run_id": lambda q, v: q.delete_run(v),
    "purge_runs.completed_before": lambda q, v: q.purge_runs(v),
    "start_run.run_id": lambda q, v: q.start_run(v, "m", worker_id="w"),
    "start_run.type": lambda q, v: q.start_run("r", v, worker_id="w"),
    "start_run.worker_id": lambda q, v: q.start_run("r", "m", worker_id=v),
    "start_run.queue": lambda q, v: q.start_run("r", "m", worker_id="w", queue=v),
    "start_run.lease": lambda q, v: q.start_run("r", "m", worker_id="w", lease=v),
    "start_run.rerun_attempts": lambda q, v: q.start_run("r", "m", worker_id="w", rerun_attempts=v),
    "start_run.takeover_from": lambda q, v: q.start_run("r", "m", worker_id="w", takeover_from=[v]),
    "recover_runs.queue": lambda q, v: q.recover_runs(queue=v),
    "recover_runs.rerun_queue": lambda q, v: q.recover_runs(rerun_queue=v, rerun_types=["m"]),
    "recover_runs.rerun_types": lambda q, v: q.recover_runs(rerun_types=[v]),
    "recover_runs.dead_holders": lambda q, v: q.recover_runs(dead_holders=[v]),
    # periodic tasks
    "schedule.name": lambda q, v: q.schedule(v, "t", every=60),
    "schedule.type": lambda q, v: q.schedule("s", v, every=60),
    "schedule.cron": lambda q, v: q.schedule("s", "t", cron=v),
    "schedule.tz": lambda q, v: q.schedule("s", "t", cron="0 6 * * *", tz=v),
    "schedule.missed": lambda q, v: q.schedule("s", "t", every=60, missed=v),
    "schedule.queue": lambda q, v: q.schedule("s", "t", every=60, queue=v),
    "schedule.every": lambda q, v: q.schedule("s", "t", every=v),
    "schedule.priority": lambda q, v: q.schedule("s", "t", every=60, priority=v),
    "schedule.payload": lambda q, v: q.schedule("s", "t", every=60, payload={"k": v}),
    "run_schedules.now": lambda q, v: q.run_schedules(now=v),
    "pause_schedule.name": lambda q, v: q.pause_schedule(v),
    "resume_schedule.name": lambda q, v: q.resume_schedule(v),
    "unschedule.name": lambda q, v: q.unschedule(v),
    "set_limit.queue": lambda q, v: q.set_limit(v, concurrency=1),
    "set_limit.type": lambda q, v: q.set_limit("default", type=v, concurrency=1),
    "set_limit.concurrency": lambda q, v: q.set_limit("default", concurrency=v),
    "set_limit.per": lambda q, v: q.set_limit("default", concurrency=1, per=v),
    "set_limit.rate": lambda q, v: q.set_limit("default", rate=v),
    "remove_limit.queue": lambda q, v: q.remove_limit(v),
    "remove_limit.type": lambda q, v: q.remove_limit("default", type=v),
}

# Which kind of bad value each argument gets: ints, numbers (floats too), or strings.
INTS = {
    "enqueue.priority", "enqueue.max_attempts", "enqueue_many.priority", "enqueue_many.max_attempts",
    "get.task_id", "list.limit", "list.after_id", "logs.task_id", "logs.limit", "position.task_id", "attempts.task_id",
    "changes_since.limit", "wait_for_change.since", "cancel.task_id", "retry.task_id",
    "set_priority.task_id", "set_priority.priority", "claim.limit", "settle.limit", "heartbeat.pid",
    "heartbeat.tasks_done", "heartbeat.concurrency", "log.task_id", "purge.batch_size", "list_runs.limit",
    "start_run.rerun_attempts", "schedule.priority", "set_limit.concurrency",
}
NUMBERS = {
    "enqueue.delay", "enqueue.timeout", "enqueue.run_after", "enqueue.retry.cap", "enqueue.retry.jitter",
    "enqueue_many.delay", "enqueue_many.timeout", "enqueue_many.run_after", "metrics.window",
    "changes_since.timeout", "changes_since.min_gap", "wait_for_change.timeout",
    "set_retry_policy.base", "set_retry_policy.factor", "set_retry_policy.cap", "set_retry_policy.jitter",
    "set_default_timeout.timeout",
    "claim.lease", "settle.lease", "renew.lease", "progress.percent", "purge.older_than",
    "save_run.created_at", "save_run.completed_at", "purge_runs.completed_before", "start_run.lease",
    "schedule.every", "run_schedules.now",
}
STRINGS = set(CALLS) - INTS - NUMBERS
# JSON values (payloads, requirements, results) that are refused as not JSON for a surrogate.
JSON_VALUES = {"enqueue.payload", "enqueue.requires", "claim.capabilities", "complete.result", "schedule.payload"}


def _bad_values(name):
    if name in JSON_VALUES:
        return [SURROGATE, 2**64]
    if name in INTS:
        return BIG
    if name in NUMBERS:
        # Integers past any range, floats past any range, and not-a-number.
        return BIG + [1e300, -1e300, math.inf, math.nan] + (
            [timedelta.max, timedelta.min] if not name.endswith(("run_after", "_at", "_before", "percent",
                                                                   "factor", "jitter", ".cap")) else []
        )
    return [SURROGATE]


def _params():
    for name, call in CALLS.items():
        for bad in _bad_values(name):
            yield pytest.param(call, bad, id=f"{name}={bad!r}"[:60])


@pytest.mark.parametrize("call, bad", list(_params()))
def test_every_argument_refuses_what_it_cannot_hold(q, call, bad):
    q.save_run("existing", "m", "queued", datetime.now(UTC), {"run_id": "existing"})
    # Set up what the call needs (a claimed task) before taking the "nothing written" snapshot.
    setup = call.__code__.co_names
    held = _claimed(q) if "_claimed" in setup else None
    if held is not None:
        call = _with_task(call, held)
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            call(q, bad)
    msg = str(e.value)
    assert msg and "Traceback" not in msg
    if isinstance(bad, str):
        # Free text says why; a name from a fixed set says which names there are.
        assert "surrogate" in msg or "not JSON-serialisable" in msg or " must be " in msg, msg


def _with_task(call, task):
    """The same call with `_claimed(q)` replaced by an already claimed `task`."""
    import types

    g = dict(call.__globals__)
    g["_claimed"] = lambda _q: task
    return types.FunctionType(call.__code__, g, call.__name__, call.__defaults__, call.__closure__)


def test_every_public_queue_method_is_covered():
    """A method added to Queue later must get its rows in CALLS (or be listed here as taking no
    argument that could be out of range)."""
    no_range_args = {
        "close", "path", "closed", "complete_many", "fail", "fail_many", "release", "sweep",
        "workers", "change_token", "wake", "backup", "restore", "vacuum", "analyze",
        "integrity_check", "import_legacy", "inspect_legacy", "lease_clock", "schedules", "limits",
    }
    methods = {m for m in dir(Queue) if not m.startswith("_")}
    covered = {name.split(".")[0] for name in CALLS}
    assert methods - covered - no_range_args == set()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.timedeltas(),
    )
)
def test_any_delay_is_either_stored_readably_or_refused_with_nothing_written(q, delay):
    before = _state(q)
    try:
        tid = q.enqueue("prop", delay=delay)
    except InvalidArgument as e:
        assert str(e).startswith("delay must "), str(e)
        assert _state(q) == before
        return
    t = q.get(tid)
    assert t.as_dict()["run_after"] == t.run_after
    assert t.run_after.year <= 9999
    q.cancel(tid)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.timedeltas(),
    )
)
def test_any_lease_is_either_honoured_or_refused(queue, lease):
    tid = queue.enqueue("prop")
    try:
        [t] = queue.claim("w", types="prop", lease=lease)
    except InvalidArgument as e:
        assert str(e).startswith("lease must "), str(e)
        assert queue.get(tid).status == "queued"
    else:
        assert t.lease_until.year <= 9999
        if t.lease_until > datetime.now(UTC) + timedelta(seconds=1):
            # A lease that has not ended is honoured: no other claim gets the task.
            assert queue.claim("other", types="prop") == []
    queue.cancel(tid)


# -- issue 16, point 10: LeaseLost says what happened, without inventing a holder ----------------


@pytest.mark.parametrize(
    "end, why, then",
    [
        (lambda q, t: q.complete(t, {"first": True}), "it is already completed",
         "the result recorded then stands, and nothing was changed"),
        (lambda q, t: q.cancel(t.id), "it was cancelled", "nothing was changed"),
        (lambda q, t: q.fail(t, "boom", retry=False), "it already failed (dead letter)",
         "nothing was changed (retry() would queue it again)"),
    ],
    ids=["completed", "cancelled", "failed"],
)
def test_lease_lost_on_a_finished_task_names_no_holder(queue, end, why, then):
    from prismq_queue import LeaseLost

    tid = queue.enqueue("t")
    [t] = queue.claim("w")
    end(queue, t)
    with pytest.raises(LeaseLost) as e:
        queue.complete(t, {"late": True})
    assert str(e.value) == f"task {tid} is no longer held by this claim: {why}; {then}"
    assert "holder" not in str(e.value)


def test_lease_lost_on_a_task_taken_over_names_its_new_holder(queue):
    from prismq_queue import LeaseLost

    tid = queue.enqueue("t")
    [old] = queue.claim("slow", lease=0.05)
    while datetime.now(UTC) <= old.lease_until + timedelta(milliseconds=20):
        import time

        time.sleep(0.01)
    [new] = queue.claim("fast", lease=60)
    with pytest.raises(LeaseLost) as e:
        queue.complete(old)
    assert str(e.value) == (
        f"task {tid} is no longer held by this claim: its lease expired and it was claimed again by fast; "
        "nothing was changed: fast holds the task now"
    )
    queue.complete(new)
