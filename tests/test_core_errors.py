"""Bad input: every call gets a clear typed error, and nothing is written.

"Nothing written" is checked two ways: everything observable through the API (``snapshot``) is
the same before and after, and SQLite's ``PRAGMA data_version``, read from a separate connection,
has not moved (it changes on any commit by another connection, including to tables the API does
not show, such as lanes, logs and workers).
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import stat
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest

from conftest import snapshot
from prismq_queue import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DatabaseError,
    InvalidArgument,
    LeaseLost,
    Queue,
    QueueError,
    SchemaVersionError,
    TaskNotFound,
)

MISSING_ID = 424242


def cases(*pairs):
    """(bad value, expected message) pairs, with the bad value as the test id."""
    return [pytest.param(bad, message, id=repr(bad)[:30]) for bad, message in pairs]


def state(q):
    stats, rows = snapshot(q)
    stats = dict(stats)
    stats.pop("oldest_queued_age_seconds")  # grows with the clock, not with writes
    return stats, rows


@contextmanager
def writes_nothing(q):
    con = sqlite3.connect(q.path, isolation_level=None)
    try:
        version = con.execute("PRAGMA data_version").fetchone()[0]
        before = state(q)
        yield
        assert state(q) == before
        assert con.execute("PRAGMA data_version").fetchone()[0] == version, "something was committed"
    finally:
        con.close()


@pytest.fixture
def q(queue):
    """A queue with a bit of everything in it, so a stray write would have something to change."""
    queue.enqueue("seed", {"n": 1}, priority=5)
    queue.enqueue("seed", {"n": 2}, idempotency_key="seed-key")
    queue.enqueue("seed", {"n": 3}, delay=3600)
    [done] = queue.claim("seeder", types=["seed"])
    queue.complete(done, {"ok": True})
    return queue


def test_the_error_hierarchy():
    for cls in (InvalidArgument, TaskNotFound, LeaseLost, SchemaVersionError, DatabaseError):
        assert issubclass(cls, QueueError), cls
    assert issubclass(InvalidArgument, ValueError)
    assert issubclass(TaskNotFound, KeyError)
    for cls in (LeaseLost, SchemaVersionError, DatabaseError):
        assert not issubclass(cls, (ValueError, KeyError)), cls


def test_invalid_argument_is_caught_as_value_error_and_queue_error(q):
    with writes_nothing(q):
        with pytest.raises(ValueError) as e:
            q.enqueue("t", priority=0)
    assert isinstance(e.value, InvalidArgument) and isinstance(e.value, QueueError)


# -- enqueue -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    cases(
        ("", r"^type must be a non-empty string$"),
        ("   ", r"^type must be a non-empty string$"),
        (5, r"^type must be a non-empty string, got int$"),
        (None, r"^type must be a non-empty string, got NoneType$"),
        (b"email.send", r"^type must be a non-empty string, got bytes$"),
        ("x" * 201, r"^type must be at most 200 characters, got 201$"),
    ),
)
def test_bad_type(q, bad, message):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.enqueue(bad, {"a": 1})


def _self_containing_list():
    loop = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    "payload, where, why",
    [
        pytest.param(object(), "payload", "type object is not supported", id="object"),
        pytest.param({1, 2}, "payload", "type set is not supported", id="set"),
        pytest.param(frozenset("a"), "payload", "type frozenset is not supported", id="frozenset"),
        pytest.param(math.nan, "payload", "NaN is not a finite number", id="nan"),
        pytest.param(-math.inf, "payload", "-inf is not a finite number", id="-inf"),
        pytest.param(b"raw", "payload", "type bytes is not supported", id="bytes"),
        pytest.param(datetime.now(timezone.utc), "payload", "type datetime is not supported", id="datetime"),
        pytest.param(2**64, "payload", "the integer 18446744073709551616 does not fit in 64 bits", id="2**64"),
        pytest.param({1: "a"}, "payload", "its keys must be strings, got the int key 1", id="int-key"),
        # nested: the message says where
        pytest.param({"a": [1, {"b": object()}]}, "payload['a'][1]['b']", "type object is not", id="nested-object"),
        pytest.param({"tags": {"x", "y"}}, "payload['tags']", "type set is not supported", id="nested-set"),
        pytest.param({"scores": [1.0, math.inf]}, "payload['scores'][1]", "inf is not a finite", id="nested-inf"),
        pytest.param([{"v": math.nan}], "payload[0]['v']", "NaN is not a finite number", id="nested-nan"),
        pytest.param((1, (2, {3: 4})), "payload[1][1]", "its keys must be strings", id="nested-int-key"),
        pytest.param(_self_containing_list(), "payload" + "[0]" * 10 + "[...]", "it is nested more than 200 levels",
                     id="contains-itself"),
    ],
)
def test_payload_that_is_not_json(q, payload, where, why):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            q.enqueue("t", payload)
    assert str(e.value).startswith(f"{where} is not JSON-serialisable: {why}"), str(e.value)
    assert str(e.value).endswith("pass dicts, lists, strings, numbers, booleans and None only")


def test_json_payloads_round_trip_exactly(q):
    # The other side of the payload checks: everything JSON can hold comes back as given.
    payload = {"s": "é✓", "i": -(2**63), "u": 2**64 - 1, "f": 0.1, "b": False, "n": None, "l": [[], {}]}
    assert q.get(q.enqueue("t", payload)).payload == payload


def test_payload_above_a_small_limit(tmp_path):
    with Queue(str(tmp_path / "small.db"), max_payload_bytes=64) as q:
        ok = q.enqueue("t", "x" * 62)  # 64 bytes as JSON, with the quotes: exactly the limit
        assert q.get(ok).payload == "x" * 62
        with writes_nothing(q):
            with pytest.raises(InvalidArgument, match=r"^payload is 65 bytes as JSON, above the limit of 64 bytes"):
                q.enqueue("t", "x" * 63)
            with pytest.raises(InvalidArgument, match=r"^item 1: payload is 102 bytes as JSON, above the limit of 64"):
                q.enqueue_many([{"type": "t"}, {"type": "t", "payload": "x" * 100}])


def test_payload_above_the_default_one_mib_limit(q):
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1024 * 1024
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            q.enqueue("t", {"blob": "x" * DEFAULT_MAX_PAYLOAD_BYTES})
    msg = str(e.value)
    size = DEFAULT_MAX_PAYLOAD_BYTES + len('{"blob":""}')
    assert msg.startswith(f"payload is {size} bytes as JSON, above the limit of 1048576 bytes")
    assert "store large data elsewhere" in msg and "raise max_payload_bytes" in msg


@pytest.mark.parametrize(
    "bad, message",
    cases(
        (-1, r"^max_payload_bytes must be a positive number of bytes, got -1$"),
        (0, r"^max_payload_bytes must be a positive number of bytes, got 0$"),
        (1.5, r"^max_payload_bytes must be an integer, got float$"),
        (True, r"^max_payload_bytes must be an integer, got bool$"),
    ),
)
def test_bad_max_payload_bytes_option(tmp_path, bad, message):
    with pytest.raises(InvalidArgument, match=message):
        Queue(str(tmp_path / "q.db"), max_payload_bytes=bad)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "bad, message",
    cases(
        (0, r"^priority must be between 1 \(most urgent\) and 1000, got 0$"),
        (1001, r"^priority must be between 1 \(most urgent\) and 1000, got 1001$"),
        (-5, r"^priority must be between 1 \(most urgent\) and 1000, got -5$"),
        (1.5, r"^priority must be an integer, got float$"),
        (5.0, r"^priority must be an integer, got float$"),
        (True, r"^priority must be an integer, got bool$"),
        ("5", r"^priority must be an integer, got str$"),
    ),
)
def test_bad_priority(q, bad, message):
    tid = q.list(status="queued")[0].id
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.enqueue("t", priority=bad)
        with pytest.raises(InvalidArgument, match=message):
            q.set_priority(tid, bad)


@pytest.mark.parametrize(
    "bad, message",
    cases(
        (-1, r"^delay must be zero or positive, got -1 seconds$"),
        (-0.5, r"^delay must be zero or positive, got -0.5 seconds$"),
        (timedelta(seconds=-3), r"^delay must be zero or positive, got -3 seconds$"),
        (float("nan"), r"^delay must be finite, got NaN$"),
        ("10", r"^delay must be a number of seconds or a timedelta, got str$"),
    ),
)
def test_bad_delay(q, bad, message):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.enqueue("t", delay=bad)


def test_delay_and_run_after_together(q):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=r"^give either delay or run_after, not both$"):
            q.enqueue("t", delay=5, run_after=datetime.now(timezone.utc) + timedelta(minutes=1))


def test_naive_run_after(q):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            q.enqueue("t", run_after=datetime.now() + timedelta(minutes=1))
    assert str(e.value).startswith("run_after must be timezone-aware (a naive datetime is ambiguous)")
    assert "timezone.utc" in str(e.value)  # and says what to do


@pytest.mark.parametrize(
    "bad, message",
    cases(
        (0, r"^max_attempts must be at least 1, got 0$"),
        (-2, r"^max_attempts must be at least 1, got -2$"),
        (2.0, r"^max_attempts must be an integer, got float$"),
    ),
)
def test_bad_max_attempts(q, bad, message):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.enqueue("t", max_attempts=bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"queue": ""}, r"^queue must be a non-empty string$"),
        ({"idempotency_key": ""}, r"^idempotency_key must be a non-empty string"),
        ({"idempotency_key": "k" * 1001}, r"^idempotency_key must be a non-empty string of at most 1000 characters$"),
        ({"requires": ["gpu"]}, r"^requires must be a dict, got list$"),
        ({"requires": {"gpu": {1}}}, r"^requires\['gpu'\] is not JSON-serialisable: type set"),
        ({"timeout": 0}, r"^timeout must be a positive number of seconds, got 0$"),
        ({"retry": {"base": -1}}, r"^retry policy base must be a number of seconds >= 0, got -1$"),
        ({"retry": {"bogus": 1}}, r"^retry must be a dict with any of the keys base, factor, cap, jitter"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_other_bad_enqueue_options(q, kwargs, message):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.enqueue("t", {"a": 1}, **kwargs)


# -- enqueue_many: all or nothing ----------------------------------------------------------------

GOOD = {"type": "good", "payload": {"n": 1}}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"type": "t", "priority": 0}, r"priority must be between 1 \(most urgent\) and 1000, got 0$"),
        ({"type": "t", "payload": object()}, r"payload is not JSON-serialisable: type object"),
        ({"type": "t", "payload": {"a": [math.nan]}}, r"payload\['a'\]\[0\] is not JSON-serialisable"),
        ({"type": "t", "delay": -1}, r"delay must be zero or positive"),
        ({"type": "t", "max_attempts": 0}, r"max_attempts must be at least 1, got 0$"),
        ({"type": "t", "run_after": datetime.now()}, r"run_after must be timezone-aware"),
        ({"type": ""}, r"type must be a non-empty string$"),
        ({"payload": 1}, r"'type' is required$"),
        ({"type": "t", "prio": 3}, r'unknown key "prio"; the keys are enqueue\'s: type, payload'),
        (["t"], r" must be a dict with enqueue's keywords$"),
    ],
    ids=["priority", "payload-object", "payload-nan", "delay", "max_attempts", "naive-run_after", "empty-type",
         "no-type", "unknown-key", "not-a-dict"],
)
@pytest.mark.parametrize("position", [0, 1, 3])
def test_enqueue_many_with_one_bad_item_writes_none_of_the_good_ones(q, bad, message, position):
    items = [dict(GOOD, idempotency_key=f"good-{i}") for i in range(3)]
    items.insert(position, bad)
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            q.enqueue_many(items)
    assert re.search(message, str(e.value)), str(e.value)
    assert re.match(rf"^item {position}\b", str(e.value)), str(e.value)
    # the good items' keys were not taken: enqueueing them now creates new tasks
    assert all(q.find(f"good-{i}") is None for i in range(3))
    assert len(q.enqueue_many([dict(GOOD, idempotency_key=f"good-{i}") for i in range(3)])) == 3


def test_enqueue_many_of_something_that_is_not_a_list(q):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=r"^items must be an iterable of dicts"):
            q.enqueue_many(5)


# -- claim ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "random"}, r"""^unknown strategy "random": use 'fifo', 'lifo', 'priority' or 'weighted_random'"""),
        ({"strategy": "FIFO "}, r"""^unknown strategy "FIFO ": use 'fifo'"""),
        ({"strategy": 3}, r"^strategy must be 'fifo', 'lifo', 'priority' or 'weighted_random'$"),
        ({"lease": 0}, r"^lease must be a positive number of seconds, got 0$"),
        ({"lease": -1}, r"^lease must be a positive number of seconds, got -1$"),
        ({"lease": -0.5}, r"^lease must be a positive number of seconds, got -0.5$"),
        ({"lease": timedelta(0)}, r"^lease must be a positive number of seconds, got 0:00:00$"),
        ({"lease": "60"}, r"^lease must be a number of seconds or a timedelta, got str$"),
        ({"limit": 0}, r"^limit must be at least 1, got 0$"),
        ({"limit": -3}, r"^limit must be at least 1, got -3$"),
        ({"queues": []}, r"^queues must not be empty: pass None for no restriction$"),
        ({"capabilities": ["gpu"]}, r"^capabilities must be a dict, got list$"),
    ],
    ids=lambda v: f"{next(iter(v))}={next(iter(v.values()))!r}" if isinstance(v, dict) else None,
)
def test_bad_claim(q, kwargs, message):
    assert q.stats()["queued"] >= 1  # a wrongly accepted claim would have had a task to take
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.claim("w", **kwargs)


def test_bad_worker_id(q):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=r"^worker_id must be a non-empty string$"):
            q.claim("")


# -- opening a file ------------------------------------------------------------------------------


def test_path_in_a_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "q.db"
    with pytest.raises(InvalidArgument) as e:
        Queue(str(path))
    assert isinstance(e.value, QueueError)
    assert f'directory "{path.parent}" does not exist; create it first' in str(e.value)
    assert not (tmp_path / "no").exists()


def test_path_that_is_a_directory(tmp_path):
    with pytest.raises(InvalidArgument, match=r"is a directory: give a file path inside it"):
        Queue(str(tmp_path))


def test_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        try:
            (ro / "probe").touch()
        except PermissionError:
            pass
        else:
            pytest.skip("a read-only directory still takes new files here (root on Linux; Windows ignores the attribute on directories)")
        with pytest.raises(DatabaseError) as e:
            Queue(str(ro / "q.db"))
        assert str(ro / "q.db") in str(e.value)
        assert "writable" in str(e.value)
        assert os.listdir(ro) == []
    finally:
        ro.chmod(stat.S_IRWXU)


def test_path_whose_parent_is_a_regular_file(tmp_path):
    # Fails for every user, root included.
    parent = tmp_path / "notes.txt"
    parent.write_text("not a directory")
    with pytest.raises(InvalidArgument) as e:
        Queue(str(parent / "q.db"))
    assert isinstance(e.value, QueueError)
    assert "is a file, not a directory" in str(e.value) and str(parent) in str(e.value)
    assert parent.read_text() == "not a directory"


def test_a_file_that_is_not_a_sqlite_database(tmp_path):
    path = tmp_path / "data.db"
    content = b"this is a text file, not a database\n" * 100
    path.write_bytes(content)
    with pytest.raises(DatabaseError) as e:
        Queue(str(path))
    assert "is not a SQLite database" in str(e.value) and str(path) in str(e.value)
    assert "point the queue at a new path" in str(e.value)
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["data.db"]  # no -wal or -shm left behind


def test_unknown_synchronous_mode(tmp_path):
    with pytest.raises(InvalidArgument, match=r"""^synchronous must be 'normal', 'full' or 'off', not "always"$"""):
        Queue(str(tmp_path / "q.db"), synchronous="always")


def test_a_closed_queue(db_path):
    q = Queue(db_path)
    q.close()
    with pytest.raises(QueueError, match=r"is closed: open a new one"):
        q.enqueue("t")


# -- fencing: only the claim that holds a task may settle it -------------------------------------


def test_completing_twice(q):
    tid = q.enqueue("t")
    [c] = q.claim("w", types="t")
    q.complete(c, {"first": True})
    with writes_nothing(q):
        with pytest.raises(LeaseLost, match=rf"^task {tid} is no longer held by this claim: it is already completed"):
            q.complete(c, {"second": True})
        with pytest.raises(LeaseLost, match="already completed"):
            q.fail(c, "late failure")
        assert q.complete_many([(c, "third")]) == [False]
    t = q.get(tid)
    assert (t.status, t.result) == ("completed", {"first": True})


def _expire_and_reclaim(q):
    tid = q.enqueue("t", max_attempts=5)
    [old] = q.claim("slow-worker", types="t", lease=0.05)
    # The point of the test is that time passes: wait until the lease has really expired.
    while datetime.now(timezone.utc) <= old.lease_until + timedelta(milliseconds=5):
        time.sleep(0.01)
    [new] = q.claim("fast-worker", types="t", lease=60)
    assert (new.id, new.attempts, new.locked_by) == (tid, 2, "fast-worker")
    assert new.lease_token != old.lease_token
    return tid, old, new


@pytest.mark.parametrize(
    "call",
    [
        lambda q, t: q.complete(t, {"stale": True}),
        lambda q, t: q.fail(t, RuntimeError("stale")),
        lambda q, t: q.fail(t, "stale", retry=False),
        lambda q, t: q.renew(t, 600),
        lambda q, t: q.progress(t, 50, step="stale", message="from the old claim"),
    ],
    ids=["complete", "fail", "fail-no-retry", "renew", "progress"],
)
def test_a_lease_token_from_an_earlier_claim_changes_nothing(q, call):
    tid, old, new = _expire_and_reclaim(q)
    with writes_nothing(q):
        with pytest.raises(LeaseLost) as e:
            call(q, old)
    assert str(e.value).startswith(f"task {tid} is no longer held by this claim: its lease expired")
    assert "claimed again by fast-worker" in str(e.value)
    t = q.get(tid)
    assert (t.status, t.attempts, t.locked_by, t.progress, t.step) == ("running", 2, "fast-worker", None, None)
    assert t.lease_until == new.lease_until
    # the current holder is unaffected
    q.complete(new, {"by": "fast-worker"})
    assert q.get(tid).result == {"by": "fast-worker"}


def test_stale_batch_forms_report_false_and_change_nothing(q):
    tid, old, new = _expire_and_reclaim(q)
    with writes_nothing(q):
        assert q.complete_many([(old, "stale")]) == [False]
        assert q.fail_many([(old, "stale", False)]) == [False]
        assert q.release(old) is False
    assert q.get(tid).status == "running"


@pytest.mark.parametrize(
    "call",
    [
        lambda q, t: q.complete(t, "x"),
        lambda q, t: q.fail(t, "x"),
        lambda q, t: q.renew(t),
        lambda q, t: q.progress(t, 10),
        lambda q, t: q.release(t),
        lambda q, t: q.complete_many([t]),
    ],
    ids=["complete", "fail", "renew", "progress", "release", "complete_many"],
)
@pytest.mark.parametrize("read_with", ["get", "list", "find"])
def test_a_task_read_with_get_list_or_find_has_no_lease(q, call, read_with):
    # Even while the task is running: reading it must not hand out the claim's lease.
    tid = q.enqueue("t", idempotency_key="read-me")
    [claimed] = q.claim("w", types="t")
    read = {
        "get": lambda: q.get(tid),
        "list": lambda: [t for t in q.list(status="running") if t.id == tid][0],
        "find": lambda: q.find("read-me"),
    }[read_with]()
    assert read.status == "running" and read.lease_token is None
    with writes_nothing(q):
        with pytest.raises(LeaseLost) as e:
            call(q, read)
    assert str(e.value) == (
        f"task {tid} carries no lease token: only a Task returned by claim() can be completed, "
        "failed, renewed or reported on"
    )
    q.complete(claimed, "done")
    assert q.get(tid).result == "done"


def test_something_that_is_not_a_task(q):
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=r"^task must be a Task returned by claim\(\), got int$"):
            q.complete(1)


def test_result_that_is_not_json_leaves_the_task_running(q):
    tid = q.enqueue("t")
    [c] = q.claim("w", types="t")
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=r"^result\['when'\] is not JSON-serialisable: type datetime"):
            q.complete(c, {"when": datetime.now(timezone.utc)})
    assert q.get(tid).status == "running"
    q.complete(c, {"when": "now"})
    assert q.get(tid).result == {"when": "now"}


@pytest.mark.parametrize(
    "percent, message",
    cases(
        (101, r"^percent must be between 0 and 100, got 101$"),
        (-1, r"^percent must be between 0 and 100, got -1$"),
        (math.nan, r"^percent must be between 0 and 100, got NaN$"),
    ),
)
def test_bad_progress(q, percent, message):
    q.enqueue("t")
    [c] = q.claim("w", types="t")
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=message):
            q.progress(c, percent)


def test_renew_with_a_bad_lease(q):
    q.enqueue("t")
    [c] = q.claim("w", types="t")
    until = c.lease_until
    with writes_nothing(q):
        with pytest.raises(InvalidArgument, match=r"^lease must be a positive number of seconds, got 0$"):
            q.renew(c, 0)
    assert c.lease_until == until


# -- missing ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.get(MISSING_ID),
        lambda q: q.cancel(MISSING_ID),
        lambda q: q.retry(MISSING_ID),
        lambda q: q.set_priority(MISSING_ID, 5),
        lambda q: q.logs(MISSING_ID),
        lambda q: q.log(MISSING_ID, "info", "hello"),
    ],
    ids=["get", "cancel", "retry", "set_priority", "logs", "log"],
)
def test_a_missing_id(q, call):
    with writes_nothing(q):
        with pytest.raises(TaskNotFound) as e:
            call(q)
    assert isinstance(e.value, KeyError) and isinstance(e.value, QueueError)
    assert e.value.task_id == MISSING_ID
    # unlike a plain KeyError, the message is not quoted
    assert str(e.value) == f"task {MISSING_ID} does not exist (it may have been purged)"


def test_a_missing_id_is_caught_as_key_error(q):
    with pytest.raises(KeyError):
        q.get(MISSING_ID)


ID_CALLS = {
    "get": lambda q, i: q.get(i),
    "cancel": lambda q, i: q.cancel(i),
    "retry": lambda q, i: q.retry(i),
    "set_priority": lambda q, i: q.set_priority(i, 5),
    "logs": lambda q, i: q.logs(i),
    "log": lambda q, i: q.log(i, "info", "hello"),
    "position": lambda q, i: q.position(i, strategy="fifo"),
}


@pytest.mark.parametrize("call", list(ID_CALLS.values()), ids=list(ID_CALLS))
@pytest.mark.parametrize(
    "bad, message",
    cases(
        ("1", "task_id must be an integer, got str"),
        (True, "task_id must be an integer, got bool"),
        (1.0, "task_id must be an integer, got float"),
        (None, "task_id must be an integer, got NoneType"),
        (2**70, f"task_id is out of range: {2**70}"),
    ),
)
def test_a_task_id_that_is_not_an_integer(q, call, bad, message):
    """Like every other argument: InvalidArgument naming it, not a bare TypeError, nothing written."""
    q.enqueue("t")
    with writes_nothing(q):
        with pytest.raises(InvalidArgument) as e:
            call(q, bad)
    assert str(e.value) == message  # (pyo3 adds a note naming the argument, as for any argument)
