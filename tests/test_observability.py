"""Observability: metrics against a known workload, position in line, live events from other
processes, the Prometheus exposition and the core's log records."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from prismq_queue import InvalidArgument, Queue

# ---------------------------------------------------------------------------------------- metrics


def _known_workload(q: Queue) -> dict[str, list[float]]:
    """10 completed (6 of type "resize", 4 of type "email", one of them after a retry), 3 failed
    (dead letters), 2 waiting to retry, 1 running, 4 queued. Returns the processing durations the
    completed tasks were given, by type (each task is completed a known time after its claim)."""
    no_backoff = {"base": 0, "jitter": 0}
    for i in range(10):
        q.enqueue("resize" if i < 6 else "email", {"i": i}, queue="media" if i < 6 else "mail", retry=no_backoff)
    # The first email fails once, is retried at once and will complete on its second attempt.
    [first] = q.claim("w0", types=["email"])
    q.fail(first, RuntimeError("flaky"))
    tasks = q.claim("w1", limit=10)
    assert len(tasks) == 10
    durations: dict[str, list[float]] = {"resize": [], "email": []}
    started = time.monotonic()
    for n, t in enumerate(tasks, start=1):
        # Complete the n-th task about n * 60 ms after the claim.
        time.sleep(max(0.0, started + n * 0.06 - time.monotonic()))
        q.complete(t, {"n": n})
        durations[t.type].append(n * 0.06)
    for i in range(3):
        q.enqueue("email", {"dead": i}, queue="mail")
    for t in q.claim("w2", limit=3):
        q.fail(t, "no such mailbox", retry=False)
    for i in range(2):
        q.enqueue("resize", {"retry": i}, queue="media", retry={"base": 3600, "jitter": 0})
    for t in q.claim("w3", limit=2):
        q.fail(t, "try later")  # back to queued, an hour from now
    q.enqueue("resize", {"running": True}, queue="media")
    q.claim("w4")
    for i in range(4):
        q.enqueue("email", {"waiting": i}, queue="mail")
    return durations


def test_metrics_against_a_known_workload(db_path):
    with Queue(db_path, stale_worker_after=0.3) as q:
        durations = _known_workload(q)
        q.heartbeat("gone-quiet")
        time.sleep(0.4)
        q.heartbeat("alive")
        m = q.metrics(window=60)

    assert m["depth"] == {"queued": 6, "running": 1, "completed": 10, "failed": 3, "cancelled": 0}
    assert m["scheduled"] == 2  # the two retries wait an hour
    assert m["retrying"] == 2
    assert m["by_queue"]["media"] == {"queued": 2, "running": 1, "retrying": 2}
    assert m["by_queue"]["mail"] == {"queued": 4, "running": 0, "retrying": 0}
    assert m["by_type"]["resize"]["retrying"] == 2 and m["by_type"]["email"]["queued"] == 4
    assert m["by_queue_and_type"]["media"]["resize"] == {"queued": 2, "running": 1, "retrying": 2}

    w = m["window"]
    assert w["seconds"] == 60.0
    assert (w["completed"], w["failed"], w["cancelled"]) == (10, 3, 0)
    assert w["success_ratio"] == pytest.approx(10 / 13)
    assert w["failure_ratio"] == pytest.approx(3 / 13)
    assert w["throughput_per_second"] == pytest.approx(10 / 60)
    assert w["completed_per_second"] == pytest.approx(10 / 60)
    assert w["failed_per_second"] == pytest.approx(3 / 60)
    assert w["retried"] == {"completed": 1, "failed": 0}
    assert w["sample"] == {"size": 13, "limit": 10000, "complete": True}

    # Nearest-rank percentiles of the durations we gave, within timing slack.
    def expect(values, p):
        values = sorted(values)
        return values[max(1, -(-len(values) * p // 100)) - 1]

    slack = 0.05
    for name, values in [("all", durations["resize"] + durations["email"])] + list(durations.items()):
        got = w["processing_seconds"] if name == "all" else w["processing_seconds_by_type"][name]
        assert got["count"] == len(values)
        for p in (50, 95, 99):
            assert got[f"p{p}"] == pytest.approx(expect(values, p), abs=slack), (name, p, got)
        assert got["max"] == pytest.approx(max(values), abs=slack)

    assert m["workers"] == {"active": 1, "stale": 1}
    assert set(m["lock_contention"]) == {"busy_retries", "busy_wait_seconds"}
    db = m["database"]
    assert db["size_bytes"] > 0 and db["wal_bytes"] > 0 and db["page_size"] > 0
    assert db["wal_frames"] >= db["wal_frames_pending"] >= 0


def test_metrics_window_bounds_what_counts(db_path):
    with Queue(db_path) as q:
        q.enqueue("x")
        [t] = q.claim("w")
        q.complete(t)
        time.sleep(0.25)
        assert q.metrics(window=0.1)["window"]["completed"] == 0
        assert q.metrics(window=timedelta(seconds=10))["window"]["completed"] == 1
        assert q.metrics()["window"]["seconds"] == 300.0
        empty = q.metrics(window=0.1)["window"]
        assert empty["success_ratio"] is None and empty["processing_seconds"]["p50"] is None
        with pytest.raises(InvalidArgument):
            q.metrics(window=0)


def test_metrics_reports_the_background_checkpoint(db_path):
    with Queue(db_path) as q:
        q.enqueue("x")
        deadline = time.monotonic() + 15
        while (cp := q.metrics()["checkpoint"]) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cp is not None, "the background checkpointer never ran"
        assert cp["wal_frames"] >= cp["checkpointed_frames"] >= 0
        assert 0 <= cp["seconds_ago"] < 15
        m = q.metrics()
        # Everything written so far was copied back: no frame is pending.
        assert m["database"]["wal_frames_pending"] == 0 or m["database"]["wal_frames_pending"] is None


def test_metrics_on_memory_queue():
    with Queue(":memory:") as q:
        q.enqueue("x")
        m = q.metrics()
        assert m["depth"]["queued"] == 1 and m["by_type"]["x"]["queued"] == 1
        assert m["database"]["wal_frames"] is None


# ------------------------------------------------------------------------------- position in line


def test_position_counts_what_its_worker_pool_runs_first(queue):
    q = queue
    low = q.enqueue("render", {"n": 0}, priority=500)
    urgent = q.enqueue("render", {"n": 1}, priority=1)
    normal = [q.enqueue("render", {"n": 2 + i}, priority=100) for i in range(3)]
    gpu = q.enqueue("render", {"n": 9}, priority=50, requires={"gpu": True})  # another lane, same pool
    q.enqueue("email", {}, priority=1)  # another type: another pool
    q.enqueue("render", {}, queue="other", priority=1)  # another queue: another pool
    later = q.enqueue("render", {}, priority=1, delay=3600)  # not due: ahead of nobody

    assert q.position(urgent) == 0
    assert q.position(gpu) == 1
    assert [q.position(t) for t in normal] == [2, 3, 4]
    assert q.position(low) == 5
    assert q.position(later) == 1  # only the due task with a smaller (priority, run_after, id)
    assert q.position(normal[0], strategy="fifo") == 2  # low and urgent were enqueued first
    assert q.position(low, strategy="fifo") == 0
    assert q.position(low, strategy="lifo") == 5
    assert q.position(later, strategy="fifo") == 6  # every due task of its pool
    assert 0 <= q.position(low, strategy="weighted_random") <= 5

    [head] = q.claim("w", types=["render"], queues=["default"], capabilities={"gpu": True})
    assert head.id == urgent and q.position(urgent) is None
    assert q.position(gpu) == 0 and q.position(low) == 4
    with pytest.raises(KeyError):
        q.position(10**9)
    with pytest.raises(InvalidArgument):
        q.position(low, strategy="random")


def test_position_is_the_number_of_claims_before_the_task(queue):
    q = queue
    ids = [q.enqueue("job", {"i": i}, priority=(i * 37) % 11 + 1) for i in range(40)]
    for strategy in ("priority", "fifo", "lifo", "weighted_random"):
        positions = {i: q.position(i, strategy=strategy) for i in ids}
        order = []
        while True:
            got = q.claim("w", strategy=strategy)
            if not got:
                break
            order.append(got[0].id)
            q.release(got[0])
            q.cancel(got[0].id)  # out of the line, so the next claim takes the next one
        assert [positions[i] for i in order] == list(range(len(ids))), strategy
        for i in ids:
            q.retry(i)  # back in line for the next strategy (fresh keys for the race)
