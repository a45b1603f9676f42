"""Observability: metrics against a known workload, position in line, live events from other
processes, the Prometheus exposition and the core's log records."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

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
        durations[t.type].append(time.monotonic() - started)  # later than planned on a busy machine
        q.complete(t, {"n": n})
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
    # Every lane of the task's queue is in its line: other types and `requires` variants too
    # (issue 20: a worker taking the whole queue claims across types in one order).
    q = queue
    low = q.enqueue("render", {"n": 0}, priority=500)
    urgent = q.enqueue("render", {"n": 1}, priority=1)
    normal = [q.enqueue("render", {"n": 2 + i}, priority=100) for i in range(3)]
    gpu = q.enqueue("render", {"n": 9}, priority=50, requires={"gpu": True})  # another lane, same line
    email = q.enqueue("email", {}, priority=1)  # another type of the same queue: same line
    q.enqueue("render", {}, queue="other", priority=1)  # another queue: another line
    later = q.enqueue("render", {}, priority=1, delay=3600)  # not due: ahead of nobody

    assert q.position(urgent) == 0
    assert q.position(email) == 1
    assert q.position(gpu) == 2
    assert [q.position(t) for t in normal] == [3, 4, 5]
    assert q.position(low) == 6
    assert q.position(later) == 2  # only the due tasks with a smaller (priority, run_after, id)
    assert q.position(normal[0], strategy="fifo") == 2  # low and urgent were enqueued first
    assert q.position(low, strategy="fifo") == 0
    assert q.position(low, strategy="lifo") == 6
    assert q.position(later, strategy="fifo") == 7  # every due task of its queue
    assert 0 <= q.position(low, strategy="weighted_random") <= 6

    [head] = q.claim("w", types=["render"], queues=["default"], capabilities={"gpu": True})
    assert head.id == urgent and q.position(urgent) is None
    assert q.position(email) == 0 and q.position(gpu) == 1 and q.position(low) == 5
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


# ------------------------------------------------------------------ events from another process

import asyncio  # noqa: E402
import multiprocessing as mp  # noqa: E402
import threading  # noqa: E402
from datetime import timezone  # noqa: E402

import obs_helpers  # noqa: E402

from prismq_queue.events import Event, watch  # noqa: E402

CTX = mp.get_context("spawn")


def _task_events(events, task_id):
    return [(e.kind, e.status, e.progress, e.step) for e in events if e.task_id == task_id]


def _expected_lifecycle(events):
    """What a stream must have seen of obs_helpers.produce_lifecycle, in order."""
    created = [e for e in events if e.kind == "task.created"]
    assert len(created) == 2, events
    ok, bad = created[0].task_id, created[1].task_id
    assert _task_events(events, ok) == [
        ("task.created", "queued", None, None),
        ("task.status", "running", None, None),
        ("task.progress", "running", 30.0, "download"),
        ("task.progress", "running", 60.0, "resize"),
        ("task.status", "completed", 100.0, "resize"),
    ], events
    assert _task_events(events, bad) == [
        ("task.created", "queued", None, None),
        ("task.status", "running", None, None),
        ("task.status", "failed", None, None),
    ], events
    progress = next(e for e in events if e.kind == "task.progress")
    assert progress.message == "fetching" and progress.type == "resize" and progress.queue == "media"
    failed = next(e for e in events if e.task_id == bad and e.status == "failed")
    assert failed.data["error"] == "ValueError: not an image" and failed.data["attempts"] == 1
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in events)
    updates = [e for e in events if e.kind == "queue.updated"]
    assert updates and all(e.queue == "media" and e.task_id is None for e in updates)
    assert sum(e.data["changes"] for e in updates) <= len(events) - len(updates)


def _start_producer(db_path):
    go, done = CTX.Event(), CTX.Event()
    p = CTX.Process(target=obs_helpers.produce_lifecycle, args=(db_path, go, done), daemon=True)
    p.start()
    return p, go, done


def _collect_sync(stream, done, deadline):
    events = []
    watchdog = threading.Timer(deadline, stream.close)
    watchdog.start()
    try:
        for ev in stream:
            events.append(ev)
            if any(e.status == "failed" for e in events):
                break
    finally:
        watchdog.cancel()
    return events


def test_sync_stream_sees_another_processes_changes(db_path):
    with Queue(db_path) as q:
        q.enqueue("before", {})  # existed before watch(): not reported
        p, go, done = _start_producer(db_path)
        with watch(q, interval=0.3) as stream:
            go.set()
            events = _collect_sync(stream, done, deadline=30)
        p.join(30)
        assert p.exitcode == 0
    _expected_lifecycle(events)
    assert all(e.type != "before" for e in events)


async def test_async_stream_sees_another_processes_changes_without_blocking_the_loop(db_path):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with Queue(db_path) as q:
        p, go, done = _start_producer(db_path)
        tick_task = asyncio.ensure_future(ticker())
        events = []
        started = time.monotonic()
        async with watch(q, interval=0.3) as stream:
            go.set()

            async def collect():
                async for ev in stream:
                    events.append(ev)
                    if any(e.status == "failed" for e in events):
                        return

            await asyncio.wait_for(collect(), 30)
        elapsed = time.monotonic() - started
        tick_task.cancel()
        await asyncio.to_thread(p.join, 30)
        assert p.exitcode == 0
    _expected_lifecycle(events)
    # The loop kept running while the stream waited: ~100 ticks a second (a blocked loop: ~0).
    assert ticks >= elapsed * 100 * 0.5, (ticks, elapsed)


def test_an_idle_stream_sleeps(db_path):
    """No busy polling: a thread blocked in an idle stream costs almost no CPU."""
    with Queue(db_path) as q:
        q.enqueue("x")
        stream = watch(q, interval=5.0)
        consumer = threading.Thread(target=lambda: list(stream), daemon=True)
        consumer.start()
        time.sleep(0.3)  # let it settle into its wait
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(1.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        # The whole process (the waiter thread, the blocked consumer, the checkpointer): < 5% of a core.
        assert cpu / wall < 0.05, f"{cpu / wall:.1%} of a core while idle"
        started = time.monotonic()
        stream.close()
        consumer.join(4)
        # Well under the 5 s interval: close() wakes the waiting iteration instead of letting it time out.
        assert not consumer.is_alive() and time.monotonic() - started < 2.5


async def test_many_async_streams_share_one_waiter_and_hold_no_thread(db_path):
    def waiters():
        return [t for t in threading.enumerate() if t.name == "prismq-events"]

    with Queue(db_path) as q:
        streams = [watch(q, interval=5.0) for _ in range(50)]
        threads_before = threading.active_count()
        got = [[] for _ in streams]

        async def consume(i, stream):
            async for ev in stream:
                got[i].append(ev)
                if ev.kind == "task.created":
                    return

        consumers = [asyncio.ensure_future(consume(i, s)) for i, s in enumerate(streams)]
        await asyncio.sleep(0.5)  # every stream looked once and is waiting now
        assert len(waiters()) == 1
        assert threading.active_count() <= threads_before + 8  # a few executor threads, not 50
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(1.0)
        idle = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        assert idle < 0.05, f"{idle:.1%} of a core for 50 idle streams"
        task_id = await asyncio.to_thread(q.enqueue, "x", {})
        await asyncio.wait_for(asyncio.gather(*consumers), 10)
        assert all([e.task_id for e in g] == [task_id] for g in got)
        for s in streams:
            s.close()
        deadline = time.monotonic() + 5
        while waiters() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not waiters(), "the waiter outlived its last stream"


def test_closing_the_queue_ends_its_streams(db_path):
    from prismq_queue import QueueError

    q = Queue(db_path)
    stream = watch(q, interval=0.2)
    errors = []

    def consume():
        try:
            list(stream)
        except QueueError as e:
            errors.append(e)

    consumer = threading.Thread(target=consume)
    consumer.start()
    time.sleep(0.2)
    q.close()
    consumer.join(5)
    assert not consumer.is_alive() and len(errors) == 1 and "closed" in str(errors[0])


def test_queue_updates_are_coalesced_per_queue_and_filtered(db_path):
    with Queue(db_path) as q:
        with watch(q, queues=["a"], interval=0.5, min_gap=0.0) as stream:

            def produce():
                for i in range(10):
                    q.enqueue("x", {"i": i}, queue="a")
                    q.enqueue("x", {"i": i}, queue="b")  # another queue: not in this stream
                    time.sleep(0.1)

            producer = threading.Thread(target=produce)
            started = time.monotonic()
            producer.start()
            events = []
            while time.monotonic() - started < 2.0:
                events += stream.poll(0.2)
            producer.join()
        updates = [e for e in events if e.kind == "queue.updated"]
        created = [e for e in events if e.kind == "task.created"]
        assert len(created) == 10 and all(e.queue == "a" for e in events)
        # About 1 s of changes with interval=0.5: the first at once, then one per interval.
        assert 2 <= len(updates) <= 4, [(e.at, e.data) for e in updates]
        assert sum(e.data["changes"] for e in updates) == 10
        assert updates[-1].data == {"queued": 10, "running": 0, "changes": updates[-1].data["changes"]}
        gaps = [(b.at - a.at).total_seconds() for a, b in zip(updates, updates[1:])]
        assert all(g >= 0.45 for g in gaps), gaps


def test_event_shape():
    e = Event("task.progress", 7, "resize", "media", "running", 50.0, "half", None,
              datetime.now(timezone.utc))
    d = e.as_dict()
    assert d["kind"] == "task.progress" and d["task_id"] == 7 and d["data"] is None
    assert datetime.fromisoformat(d["at"]) == e.at
    with pytest.raises(Exception):
        e.kind = "x"  # frozen
    with Queue(":memory:") as q:
        with pytest.raises(ValueError):
            watch(q, interval=0)


# ---------------------------------------------------------------------------------- Prometheus


def test_prometheus_text_parses_and_carries_the_values(db_path):
    from prometheus_client.parser import text_string_to_metric_families

    from prismq_queue import prometheus

    with Queue(db_path, stale_worker_after=0.3) as q:
        durations = _known_workload(q)
        q.heartbeat("gone-quiet")
        time.sleep(0.4)
        q.heartbeat("alive")
        text = prometheus.render(q, window=60)
    assert prometheus.CONTENT_TYPE.startswith("text/plain")

    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("prismq_"), family.name
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("prismq_tasks", status="completed") == 10
    assert value("prismq_tasks", status="failed") == 3
    assert value("prismq_tasks", status="queued") == 6
    assert value("prismq_tasks", status="running") == 1
    assert value("prismq_tasks_retrying") == 2
    assert value("prismq_tasks_scheduled") == 2
    assert value("prismq_queue_tasks", queue="media", type="resize", status="retrying") == 2
    assert value("prismq_queue_tasks", queue="media", type="resize", status="running") == 1
    assert value("prismq_queue_tasks", queue="mail", type="email", status="queued") == 4
    assert value("prismq_window_tasks", status="completed") == 10
    assert value("prismq_window_tasks", status="failed") == 3
    assert value("prismq_window_success_ratio") == pytest.approx(10 / 13)
    assert value("prismq_throughput_per_second") == pytest.approx(10 / 60)
    assert value("prismq_window_retried_tasks", status="completed") == 1
    assert value("prismq_processing_samples", type="*") == 10
    assert value("prismq_processing_samples", type="resize") == len(durations["resize"])
    assert value("prismq_processing_seconds", type="email", quantile="1") == pytest.approx(
        max(durations["email"]), abs=0.05
    )
    assert value("prismq_processing_seconds", type="*", quantile="0.5") == pytest.approx(0.3, abs=0.05)
    assert value("prismq_workers", status="stale") == 1 and value("prismq_workers", status="active") == 1
    assert ("prismq_lock_busy_retries_total", ()) in samples
    assert value("prismq_database_size_bytes") > 0
    assert value("prismq_wal_frames") >= value("prismq_wal_frames_pending") >= 0


# ------------------------------------------------------------------------------------- logging

import logging  # noqa: E402


def test_core_events_reach_python_logging(queue, caplog):
    q = queue
    caplog.set_level(logging.INFO, logger="prismq_queue")
    retried = q.enqueue("x", {}, max_attempts=2, retry={"base": 0, "jitter": 0})
    [t] = q.claim("w")
    q.fail(t, RuntimeError("flaky"))
    [t] = q.claim("w")
    q.fail(t, RuntimeError("still broken"))  # second and last attempt: dead letter
    dead_at_once = q.enqueue("x", {})
    [t] = q.claim("w")
    q.fail_many([(t, "bad input", False)])

    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("prismq_queue.core")]
    assert ("prismq_queue.core.ack", logging.INFO) == records[0][:2]
    assert f"task {retried}: attempt failed, retrying in" in records[0][2] and "RuntimeError: flaky" in records[0][2]
    assert records[1][:2] == ("prismq_queue.core.ack", logging.WARNING)
    assert f"task {retried}:" in records[1][2] and "dead letter" in records[1][2]
    assert records[2][:2] == ("prismq_queue.core.ack", logging.WARNING)
    assert f"task {dead_at_once}:" in records[2][2] and "bad input" in records[2][2]
    assert len(records) == 3

    # Below the configured level, nothing reaches the handlers.
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="prismq_queue")
    q.enqueue("x", {}, retry={"base": 0, "jitter": 0})
    [t] = q.claim("w")
    q.fail(t, "quiet")
    assert not [r for r in caplog.records if r.name.startswith("prismq_queue.core")]


def test_rescued_leases_are_logged_while_another_thread_holds_the_gil(queue, caplog):
    """The rescuer logs inside the claim's transaction; a busy Python thread (it holds the GIL most
    of the time) delays the record by a GIL switch at most and never deadlocks the claim."""
    q = queue
    caplog.set_level(logging.INFO, logger="prismq_queue")
    ids = [q.enqueue("x", {}, max_attempts=1 if i == 0 else 3) for i in range(3)]
    q.claim("crashed-worker", lease=0.05, limit=3)
    time.sleep(0.1)
    stop = threading.Event()

    def spin():
        n = 0
        while not stop.is_set():
            n += 1  # pure Python: holds the GIL but for the interpreter's switches

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        result = []
        claimer = threading.Thread(target=lambda: result.append(q.claim("w2", limit=3)))
        claimer.start()
        claimer.join(10)
        assert not claimer.is_alive(), "the claim did not finish"
    finally:
        stop.set()
        spinner.join()
    assert sorted(t.id for t in result[0]) == ids[1:]
    [rec] = [r for r in caplog.records if r.name == "prismq_queue.core.rescuer"]
    assert rec.levelno == logging.WARNING
    msg = rec.getMessage()
    assert "3 expired lease(s) rescued" in msg and "crashed-worker" in msg
    assert f"task {ids[0]} of crashed-worker: dead letter" in msg
    assert q.get(ids[0]).status == "failed"
