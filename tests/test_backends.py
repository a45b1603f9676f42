"""One conformance suite through the public Python API, run on SQLite and on PostgreSQL (issue 19).

``queue_url`` is a temporary file path or a PostgreSQL URL with a schema of the test's own (the
server: PRISMQ_TEST_POSTGRES_URL or a throwaway cluster, see conftest.postgres_server). What only
SQLite has must raise ``Unsupported`` on PostgreSQL, saying what to use instead.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time

import pytest
from backend_helpers import drain_with_worker
from worker_handlers import Registry

from prismq_queue import LeaseLost, Queue, QueuedTaskManager, RunRegistry, Unsupported, events
from prismq_queue.worker import Worker

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "conformance.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def q(queue_url):
    with Queue(queue_url) as queue:
        yield queue


def is_pg(url: str) -> bool:
    return url.startswith("postgresql://")


# ---------------------------------------------------------------------- enqueue
def test_enqueue_single_batch_delayed_and_options(q):
    a = q.enqueue("t", {"n": 1}, queue="mail", priority=7, max_attempts=2, timeout=30, retry={"base": 2.0})
    t = q.get(a)
    assert (t.type, t.queue, t.priority, t.max_attempts, t.status, t.attempts) == ("t", "mail", 7, 2, "queued", 0)
    assert t.timeout == 30
    ids = q.enqueue_many([{"type": "b", "payload": i} for i in range(5)])
    assert len(ids) == 5 and ids == sorted(ids) and ids[0] > a
    assert [q.get(i).payload for i in ids] == list(range(5))
    late = q.enqueue("later", delay=3600)
    assert q.stats()["scheduled"] == 1
    assert all(t.id != late for t in q.claim("w", limit=100))


def test_idempotency_keys_single_and_within_a_batch(q):
    a = q.enqueue("t", {"v": 1}, idempotency_key="k1")
    assert q.enqueue("t", {"v": 2}, idempotency_key="k1") == a
    assert q.find("k1").payload == {"v": 1} and q.find("nope") is None
    ids = q.enqueue_many([{"type": "t", "idempotency_key": "k2"}, {"type": "t", "idempotency_key": "k2"},
                          {"type": "t", "idempotency_key": "k1"}])
    assert ids[0] == ids[1] and ids[2] == a
    assert q.stats()["total"] == 2


def test_payload_and_result_keep_what_json_dumps_wrote(q):
    payload = {"z": 1, "a": [2**63 - 1, -(2**63), 2**64 - 1], "f": [0.1, 1e-300, 1.5e300, -0.0, 3.0],
               "s": "é\u2028\"", "m": {"b": None, "a": True}}
    tid = q.enqueue("t", payload)
    assert json.dumps(q.get(tid).payload) == json.dumps(payload)
    [t] = q.claim("w")
    assert json.dumps(t.payload) == json.dumps(payload)
    result = {"y": 12345678901234567890, "x": 2.5e-10, "k": [{"b": 1, "a": 2}]}
    q.complete(t, result)
    assert json.dumps(q.get(tid).result) == json.dumps(result)


# ---------------------------------------------------------------------- claims and routing
def test_strategies_fifo_lifo_priority(q):
    ids = [q.enqueue("t", i, priority=p) for i, p in enumerate([5, 2, 9])]
    assert [t.id for t in q.claim("w", strategy="fifo", limit=1)] == [ids[0]]
    assert [t.id for t in q.claim("w", strategy="lifo", limit=1)] == [ids[2]]
    q.enqueue("t", "hi", priority=1)  # priority: 1 is the most urgent
    assert q.claim("w", strategy="priority", limit=1)[0].payload == "hi"


def test_weighted_random_claims_in_race_order_and_position_counts_it(q):
    ids = q.enqueue_many([{"type": "t", "priority": p} for p in (1, 5, 50, 2, 9, 1)])
    ahead = {i: q.position(i, strategy="weighted_random") for i in ids}
    assert sorted(ahead.values()) == list(range(6))  # a strict order: the race keys'
    order = [q.claim("w", strategy="weighted_random")[0].id for _ in ids]
    assert [ahead[i] for i in order] == list(range(6))
    assert q.position(ids[0], strategy="weighted_random") is None
    assert q.claim("w", strategy="weighted_random") == []


def test_routing_by_queue_type_and_capabilities(q):
    a = q.enqueue("a", queue="q1")
    b = q.enqueue("b", queue="q2")
    gpu = q.enqueue("c", queue="q3", requires={"gpu": True})
    assert [t.id for t in q.claim("w", queues=["q2"], limit=10)] == [b]
    assert [t.id for t in q.claim("w", types=["a"], limit=10)] == [a]
    assert q.claim("w", queues=["q3"], limit=10) == []
    assert [t.id for t in q.claim("w", queues=["q3"], capabilities={"gpu": True}, limit=10)] == [gpu]


# ---------------------------------------------------------------------- outcomes
def test_complete_fail_retry_backoff_dead_letter_and_retry(q):
    q.set_retry_policy("default", base=1, factor=2, cap=600, jitter=0)
    tid = q.enqueue("t", max_attempts=2)
    [t] = q.claim("w")
    next_at = q.fail(t, "boom")
    assert next_at is not None
    row = q.get(tid)
    assert (row.status, row.attempts, row.error) == ("queued", 1, "boom")
    assert 0.8 <= (row.run_after - row.updated_at).total_seconds() <= 1.5
    assert q.claim("w") == []  # backing off
    assert not q.retry(tid)  # queued already: nothing to retry
    time.sleep(1.3)
    [t] = q.claim("w2")
    assert q.fail(t, ValueError("again")) is None  # the dead letter
    row = q.get(tid)
    assert (row.status, row.attempts) == ("failed", 2) and "again" in row.error
    assert [a.outcome for a in q.attempts(tid)] == ["failed", "failed"]
    assert q.retry(tid) and q.get(tid).status == "queued"
    [t] = q.claim("w")
    q.complete(t, {"ok": True})
    assert (q.get(tid).status, q.get(tid).result) == ("completed", {"ok": True})
    with pytest.raises(LeaseLost):
        q.fail(t, "late")
    assert q.get(tid).status == "completed"


def test_renew_and_fencing(q):
    tid = q.enqueue("t")
    [t] = q.claim("w1", lease=0.2)
    before = t.lease_until
    assert q.renew(t, lease=30) > before and t.lease_until > before
    q.renew(t, lease=0.1)
    time.sleep(0.3)
    assert q.sweep() == 1
    [t2] = q.claim("w2", lease=30)
    assert t2.id == tid and t2.lease_token != t.lease_token
    with pytest.raises(LeaseLost):
        q.complete(t, "stale")
    with pytest.raises(LeaseLost):
        q.renew(t)
    q.complete(t2, "fresh")
    assert q.get(tid).result == "fresh"
    assert [a.outcome for a in q.attempts(tid)] == ["lease_expired"]


def test_progress_and_logs(q):
    tid = q.enqueue("t")
    [t] = q.claim("w")
    q.progress(t, 40, step="s1", message="working")
    row = q.get(tid)
    assert (row.progress, row.step, row.message) == (40, "s1", "working")
    q.log(tid, "info", "hello", {"k": [1, 2]})
    q.log(tid, "warning", "careful")
    logs = q.logs(tid)
    assert [(e.level, e.message, e.details) for e in logs][-2:] == [("info", "hello", {"k": [1, 2]}),
                                                                   ("warning", "careful", None)]


def test_cancel_queued_and_running_set_priority_position(q):
    a, b, c = (q.enqueue("t", priority=p) for p in (10, 20, 30))
    assert q.position(c, strategy="priority") == 2  # how many run before it
    assert q.set_priority(c, 1) and q.get(c).priority == 1
    assert q.position(c, strategy="priority") == 0
    assert q.position(a, strategy="fifo") == 0 and q.position(a, strategy="lifo") == 2
    assert q.cancel(b) and q.get(b).status == "cancelled"
    [t] = q.claim("w")
    assert t.id == c
    assert q.cancel(c) and q.get(c).status == "cancelled"
    with pytest.raises(LeaseLost):
        q.complete(t)
    assert not q.cancel(c)
    assert q.position(c) is None


def test_stats_metrics_list_paging(q):
    ids = q.enqueue_many([{"type": "t", "queue": "a" if i % 2 else "b"} for i in range(25)])
    [t] = q.claim("w", strategy="fifo")
    q.complete(t)
    s = q.stats()
    assert (s["queued"], s["running"], s["completed"], s["total"]) == (24, 0, 1, 25)
    assert q.stats(queue="a")["total"] == 12
    m = q.metrics()
    for key in ("at", "by_queue", "by_type", "depth", "lock_contention", "retrying", "scheduled", "total",
                "window", "workers"):
        assert key in m, sorted(m)
    seen, after = [], None
    while page := q.list(limit=10, after_id=after):
        seen += [t.id for t in page]
        after = page[-1].id
    assert seen == ids
    assert [t.id for t in q.list(limit=3, order="desc")] == ids[::-1][:3]
    assert {t.queue for t in q.list(queue="a", limit=100)} == {"a"}
    assert len(q.list(status="completed")) == 1


def test_workers_and_heartbeats(q):
    q.heartbeat("w-1", {"gpu": True}, queues=["default"], host="h", pid=42, tasks_done=3)
    [w] = q.workers()
    assert (w.id, w.capabilities, w.queues, w.host, w.pid, w.tasks_done, w.stale) == (
        "w-1", {"gpu": True}, ["default"], "h", 42, 3, False)
    assert q.remove_worker("w-1") and q.workers() == []


def test_wait_for_change_is_woken_by_another_handles_enqueue(queue_url):
    with Queue(queue_url) as waiter, Queue(queue_url) as other:
        token = waiter.change_token()
        woke = []
        t = threading.Thread(target=lambda: woke.append(waiter.wait_for_change(10, since=token)))
        t.start()
        time.sleep(0.2)
        started = time.monotonic()
        other.enqueue("t")
        t.join(10)
        assert woke == [True] and time.monotonic() - started < 5


async def test_queued_task_manager_schedule_is_run_by_a_worker(queue_url):
    q = Queue(queue_url)
    mgr = QueuedTaskManager(q, RunRegistry(q), check_interval=0.05)
    w = Worker(Queue(queue_url), Registry({"echo": lambda ctx: {"echo": ctx.payload}}), poll_interval=0.1,
               heartbeat_interval=0.5)
    runner = threading.Thread(target=lambda: w.run(install_signal_handlers=False), daemon=True)
    runner.start()
    try:
        task_id = await mgr.schedule_task("echo", {"to": "ada"}, priority=10)
        deadline = time.monotonic() + 20
        while q.get(int(task_id)).status != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert q.get(int(task_id)).result == {"echo": {"to": "ada"}}
        assert (await mgr.get_task_status(task_id))["status"] == "completed"
    finally:
        w.stop()
        runner.join(30)
        await mgr.close()
        q.close()


# ---------------------------------------------------------------------- what PostgreSQL refuses
def test_postgres_refuses_what_only_sqlite_has_with_unsupported(q, queue_url, tmp_path):
    q.enqueue("t")
    if not is_pg(queue_url):
        # SQLite has every one of them: the same calls answer there.
        assert q.backup(str(tmp_path / "b.db"))["pages"] > 0
        q.checkpoint()
        q.vacuum()
        return
    refusals = {
        "backup": lambda: q.backup(str(tmp_path / "b.db")),
        "checkpoint": lambda: q.checkpoint(),
        "vacuum": lambda: q.vacuum(),
    }
    for name, call in refusals.items():
        with pytest.raises(Unsupported) as e:
            call()
        assert e.value.backend == "postgresql", name
        assert "instead" in str(e.value) or "use" in str(e.value), (name, str(e.value))
    with pytest.raises(Unsupported, match="pg_dump"):
        q.backup(str(tmp_path / "b.db"))
    with pytest.raises(Unsupported, match="autovacuum"):
        q.vacuum()


# ---------------------------------------------------------------------- processes
def test_two_worker_processes_drain_2000_tasks_each_once(postgres_url):
    with Queue(postgres_url) as q:
        ids = q.enqueue_many([{"type": "drain", "payload": i} for i in range(2000)])
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=drain_with_worker, args=(postgres_url, f"w{i}", out), daemon=True) for i in range(2)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(30)
    ran = [tid for _, _, r in reports for tid in r]
    assert sorted(ran) == ids, "a task ran twice or never"
    assert all(r for _, _, r in reports), "one worker took nothing: no contention was tested"
    with Queue(postgres_url) as q:
        assert q.stats()["completed"] == 2000
        pids = {pid for _, pid, _ in reports}
        assert {q.get(i).result["pid"] for i in ids} <= pids
        assert all(q.get(i).attempts == 1 for i in ids[::50])
