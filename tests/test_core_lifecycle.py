"""Every state transition of a task, leases and fencing, retries and the dead letter."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from prismq_queue import LeaseLost, Queue, Status, TaskNotFound


def test_queued_running_completed(queue):
    tid = queue.enqueue("t", {"a": [1, 2]}, priority=7)
    t = queue.get(tid)
    assert (t.status, t.attempts, t.priority, t.payload) == ("queued", 0, 7, {"a": [1, 2]})
    assert t.created_at.tzinfo is not None and t.created_at.utcoffset() == timedelta(0)
    assert t.status == Status.QUEUED

    [c] = queue.claim("w1", lease=30)
    assert (c.id, c.status, c.attempts, c.locked_by) == (tid, "running", 1, "w1")
    assert c.lease_token is not None
    assert timedelta(seconds=29) < c.lease_until - c.started_at <= timedelta(seconds=30.01)

    queue.complete(c, {"ok": True})
    t = queue.get(tid)
    assert (t.status, t.result, t.progress) == ("completed", {"ok": True}, 100.0)
    assert t.finished_at >= t.started_at and t.lease_until is None


def test_failed_attempt_goes_back_with_backoff_then_dead_letter_then_retry(queue):
    tid = queue.enqueue("t", max_attempts=2, retry={"base": 0.2, "factor": 2.0, "jitter": 0.0})
    [c] = queue.claim("w")
    before = datetime.now(timezone.utc)
    nxt = queue.fail(c, ValueError("nope"))
    t = queue.get(tid)
    assert t.status == "queued" and t.error == "ValueError: nope"
    assert timedelta(seconds=0.15) <= nxt - before <= timedelta(seconds=0.5)
    assert queue.claim("w") == []  # not due yet
    time.sleep(0.25)
    [c] = queue.claim("w")
    assert c.attempts == 2
    assert queue.fail(c, "again") is None  # attempts spent: dead letter
    t = queue.get(tid)
    assert t.status == "failed" and t.error == "again" and t.finished_at is not None
    assert queue.retry(tid) is True
    t = queue.get(tid)
    assert (t.status, t.attempts) == ("queued", 0)
    assert queue.retry(tid) is False  # only failed or cancelled tasks


def test_fail_without_retry_dead_letters_at_once(queue):
    tid = queue.enqueue("t", max_attempts=5)
    [c] = queue.claim("w")
    queue.fail(c, "fatal", retry=False)
    assert queue.get(tid).status == "failed"


def test_queue_retry_policy_applies_and_task_policy_overrides_it(queue):
    queue.set_retry_policy("slow", base=10, factor=3, cap=50, jitter=0)
    a = queue.enqueue("t", queue="slow")
    b = queue.enqueue("t", queue="slow", retry={"base": 20})
    delays = {}
    for c in queue.claim("w", queues=["slow"], limit=2):
        before = datetime.now(timezone.utc)
        delays[c.id] = (queue.fail(c, "x") - before).total_seconds()
    assert 9.9 <= delays[a] <= 10.1 and 19.9 <= delays[b] <= 20.1, delays


def test_backoff_sequence_by_attempt(queue):
    tid = queue.enqueue("t", max_attempts=10, retry={"base": 0.05, "factor": 2, "cap": 0.15, "jitter": 0})
    seen = []
    for _ in range(4):
        deadline = time.monotonic() + 2
        while True:
            got = queue.claim("w")
            if got:
                break
            assert time.monotonic() < deadline
            time.sleep(0.005)
        before = datetime.now(timezone.utc)
        seen.append(round((queue.fail(got[0], "x") - before).total_seconds(), 2))
    assert seen == [0.05, 0.1, 0.15, 0.15]
    assert queue.get(tid).attempts == 4


def test_cancel_queued_and_running(queue):
    a = queue.enqueue("t")
    b = queue.enqueue("t")
    assert queue.cancel(a) is True
    [c] = queue.claim("w")
    assert c.id == b
    assert queue.cancel(b) is True
    with pytest.raises(LeaseLost, match="cancelled"):
        queue.complete(c)
    assert queue.get(b).status == "cancelled"
    assert queue.cancel(b) is False  # already terminal
    with pytest.raises(TaskNotFound):
        queue.cancel(9999)


def test_expired_lease_is_taken_over_and_the_old_holder_is_fenced(queue):
    tid = queue.enqueue("t")
    [old] = queue.claim("slow-worker", lease=0.1)
    time.sleep(0.15)
    [new] = queue.claim("fast-worker", lease=30)
    assert new.id == tid and new.attempts == 2 and new.lease_token != old.lease_token
    for call in (lambda: queue.complete(old, 1), lambda: queue.fail(old, "x"),
                 lambda: queue.renew(old), lambda: queue.progress(old, 10)):
        with pytest.raises(LeaseLost, match="fast-worker"):
            call()
    queue.complete(new, 2)
    assert queue.get(tid).result == 2


def test_sweep_requeues_expired_and_dead_letters_the_last_attempt(queue):
    a = queue.enqueue("t", max_attempts=3)
    b = queue.enqueue("t", max_attempts=1)
    queue.claim("w", lease=0.05, limit=2)
    time.sleep(0.1)
    assert queue.sweep() == 2
    assert queue.get(a).status == "queued" and queue.get(a).attempts == 1
    assert queue.get(b).status == "failed" and "lease expired" in queue.get(b).error
    assert queue.sweep() == 0


def test_renew_extends_the_lease(queue):
    queue.enqueue("t")
    [c] = queue.claim("w", lease=0.2)
    new_until = queue.renew(c, lease=60)
    assert c.lease_until == new_until
    time.sleep(0.3)
    assert queue.claim("other") == []  # still held
    queue.complete(c)


def test_completing_twice_is_refused(queue):
    tid = queue.enqueue("t")
    [c] = queue.claim("w")
    queue.complete(c, "first")
    with pytest.raises(LeaseLost, match="already completed"):
        queue.complete(c, "second")
    assert queue.get(tid).result == "first"


def test_a_task_not_from_claim_has_no_lease(queue):
    tid = queue.enqueue("t")
    with pytest.raises(LeaseLost, match="no lease token"):
        queue.complete(queue.get(tid))


def test_progress_release_and_priority(queue):
    tid = queue.enqueue("t", priority=500)
    assert queue.set_priority(tid, 3) is True
    assert queue.get(tid).priority == 3
    [c] = queue.claim("w")
    queue.progress(c, 40, step="download", message="40 of 100 files")
    t = queue.get(tid)
    assert (t.progress, t.step, t.message) == (40.0, "download", "40 of 100 files")
    assert queue.release(c) is True
    t = queue.get(tid)
    assert (t.status, t.attempts) == ("queued", 0)
    assert queue.release(c) is False


def test_batch_forms(queue):
    ids = queue.enqueue_many([{"type": "t", "payload": i} for i in range(4)])
    ts = queue.claim("w", limit=10)
    assert sorted(t.id for t in ts) == ids
    assert queue.complete_many([(ts[0], "r0"), ts[1]]) == [True, True]
    assert queue.fail_many([(ts[2], "e2"), (ts[3], "e3", False)]) == [True, True]
    assert queue.complete_many([ts[0]]) == [False]
    assert [queue.get(i).status for i in ids] == ["completed", "completed", "queued", "failed"]


def test_settle_acknowledges_and_claims_in_one_call(queue):
    queue.enqueue_many([{"type": "t"} for _ in range(3)])
    _, _, first = queue.settle(worker_id="w", limit=2)
    done, failed, nxt = queue.settle([first[0]], [(first[1], "x", False)], worker_id="w", limit=5)
    assert done == [True] and failed == [True] and len(nxt) == 1


def test_delayed_and_scheduled_tasks(queue):
    later = queue.enqueue("t", delay=timedelta(seconds=0.2))
    at = queue.enqueue("t", run_after=datetime.now(timezone.utc) + timedelta(seconds=60))
    assert queue.claim("w") == []
    assert queue.stats()["scheduled"] == 2
    time.sleep(0.25)
    assert [t.id for t in queue.claim("w", limit=5)] == [later]
    assert queue.get(at).status == "queued"


def test_idempotency_key_returns_existing_id(queue):
    a = queue.enqueue("t", {"v": 1}, idempotency_key="k-1")
    assert queue.enqueue("t", {"v": 2}, idempotency_key="k-1") == a
    assert queue.enqueue_many([{"type": "t", "idempotency_key": "k-1"}, {"type": "t", "idempotency_key": "k-2"},
                               {"type": "t", "idempotency_key": "k-2"}])[0] == a
    assert queue.stats()["total"] == 2
    assert queue.find("k-1").payload == {"v": 1}
    assert queue.find("missing") is None


def test_list_filters_and_keyset_paging(queue):
    ids = [queue.enqueue("a" if i % 2 else "b", i, queue="q1" if i < 6 else "q2") for i in range(10)]
    assert [t.id for t in queue.list(type="a")] == ids[1::2]
    assert [t.id for t in queue.list(queue="q2")] == ids[6:]
    page1 = queue.list(limit=4)
    page2 = queue.list(limit=4, after_id=page1[-1].id)
    assert [t.id for t in page1 + page2] == ids[:8]
    assert [t.id for t in queue.list(limit=3, order="desc")] == ids[::-1][:3]
    queue.cancel(ids[0])
    assert [t.id for t in queue.list(status="cancelled")] == [ids[0]]


def test_stats_counts_and_oldest_age(queue):
    queue.enqueue("t")
    time.sleep(0.05)
    queue.enqueue("t", queue="other")
    [c] = queue.claim("w", strategy="fifo")
    queue.complete(c)
    s = queue.stats()
    assert (s["queued"], s["running"], s["completed"], s["total"]) == (1, 0, 1, 2)
    assert s["oldest_queued_age_seconds"] is not None and s["oldest_queued_age_seconds"] >= 0
    assert queue.stats(queue="other")["queued"] == 1 and queue.stats(queue="default")["queued"] == 0


def test_logs_and_heartbeats(queue):
    tid = queue.enqueue("t")
    queue.log(tid, "info", "hello", {"k": 1})
    [entry] = queue.logs(tid)
    assert (entry.level, entry.message, entry.details, entry.task_id) == ("info", "hello", {"k": 1}, tid)
    queue.heartbeat("w-1", {"gpu": True}, queues=["default"])
    [w] = queue.workers()
    assert (w.id, w.capabilities, w.queues, w.stale) == ("w-1", {"gpu": True}, ["default"], False)


def test_closed_queue_says_so(db_path):
    from prismq_queue import QueueError

    q = Queue(db_path)
    q.close()
    with pytest.raises(QueueError, match="closed"):
        q.enqueue("t")


def test_metrics_reflect_the_workload(queue):
    queue.enqueue_many([{"type": "a"}, {"type": "a"}, {"type": "b", "queue": "x"}])
    [c] = queue.claim("w", types=["b"])
    m = queue.metrics()
    assert m["depth"]["queued"] == 2 and m["depth"]["running"] == 1
    assert m["by_type"]["a"]["queued"] == 2 and m["by_queue"]["x"]["running"] == 1
    assert "busy_retries" in m["lock_contention"]


def test_a_long_read_does_not_hold_up_reads_in_other_threads(tmp_path):
    # A backup holds a read snapshot for its whole copy; here it sits in its progress callback.
    # A dashboard's or API's reads on other threads of the same handle must go on meanwhile
    # (each read takes its own connection), not wait for the backup to finish.
    with Queue(str(tmp_path / "q.db")) as q:
        ids = q.enqueue_many([{"type": "t", "payload": {"blob": "x" * 2000, "i": i}} for i in range(2000)])
        in_backup, release = threading.Event(), threading.Event()

        def progress(done, total):
            in_backup.set()
            release.wait(60)

        backup = threading.Thread(target=q.backup, args=(str(tmp_path / "b.db"),), kwargs={"progress": progress})
        backup.start()
        try:
            assert in_backup.wait(30), "the backup never reported progress"
            got = []
            reader = threading.Thread(target=lambda: got.append((q.get(ids[7]).id, q.stats()["queued"])))
            reader.start()
            reader.join(15)
            finished_while_backup_held_its_snapshot = not reader.is_alive()
        finally:
            release.set()
            backup.join(60)
        reader.join(60)
        assert finished_while_backup_held_its_snapshot
        assert got == [(ids[7], 2000)]
        with Queue(str(tmp_path / "b.db")) as b:
            assert b.stats()["queued"] == 2000


def test_task_ids_are_never_handed_out_again_after_a_purge(queue):
    first = queue.enqueue_many([{"type": "t"} for _ in range(5)])
    for t in queue.claim("w", limit=5):
        queue.complete(t)
    cursor = queue.change_cursor()
    time.sleep(0.01)  # finished strictly before the purge's cutoff
    # The newest tasks are purged too: without care SQLite would reuse their ids.
    assert queue.purge(older_than=0, statuses=["completed"]) == 5
    fresh = queue.enqueue("t")
    assert fresh > max(first)
    more = queue.enqueue_many([{"type": "t"}, {"type": "t"}])
    assert more == [fresh + 1, fresh + 2]
    with pytest.raises(TaskNotFound):
        queue.get(first[-1])  # an old id names nothing, not a new task
    # A change feed opened before the purge still reports the new tasks as new.
    changes, _more = queue.changes_since(cursor)
    created = {c[1] for c in changes if c[0] == "task.created"}
    assert {fresh, *more} <= created


@pytest.mark.parametrize("purged_first", [False, True])
def test_enqueue_many_returns_each_items_id_in_order(queue, purged_first):
    """Large batches go in runs of rows per INSERT statement, with keyed items (and a pending id
    floor after a purge of the newest tasks) taking the one-row path: every returned id must
    still name its own item, in the order given."""
    if purged_first:
        old = queue.enqueue_many([{"type": "t"} for _ in range(3)])
        for t in queue.claim("w", limit=3):
            queue.complete(t)
        time.sleep(0.01)
        assert queue.purge(older_than=0, statuses=["completed"]) == 3
    items = [{"type": "t", "payload": {"n": n}, "priority": 1 + n % 7} for n in range(250)]
    for n in (40, 41, 200):  # runs of unkeyed items of several lengths between keyed ones
        items[n]["idempotency_key"] = f"k{n}"
    items.append({"type": "t", "payload": {"n": "again"}, "idempotency_key": "k40"})
    ids = queue.enqueue_many(items)
    assert len(ids) == len(items) and ids[-1] == ids[40]
    assert len(set(ids)) == len(items) - 1 and ids[:-1] == sorted(ids[:-1])
    if purged_first:
        assert min(ids) > max(old)
    for item, tid in zip(items[:-1], ids):
        t = queue.get(tid)
        assert (t.payload, t.priority, t.idempotency_key) == (
            item["payload"], item["priority"], item.get("idempotency_key")
        )
    assert queue.stats()["queued"] == len(items) - 1


def test_the_bundled_sqlite_says_what_it_is_and_how_it_was_built():
    # The extension carries its own SQLite; the build options in .cargo/config.toml must reach
    # it through maturin's build as they reach `cargo test`'s.
    import prismq_queue

    major, minor, *_ = (int(p) for p in prismq_queue.SQLITE_VERSION.split("."))
    assert (major, minor) >= (3, 45)
    options = set(prismq_queue.SQLITE_COMPILE_OPTIONS)
    assert {"DEFAULT_MEMSTATUS=0", "OMIT_SHARED_CACHE", "USE_ALLOCA"} <= options, options
    assert "THREADSAFE=1" in options
