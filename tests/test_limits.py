"""Limits: set_limit / limits / remove_limit, their figures in stats() and metrics(), and their
enforcement inside the claim, on both backends (``queue_url``: a file, or a PostgreSQL URL with a
schema of the test's own). Enforcement runs in real worker processes; every check reads the
database (running counts, and each claim's started_at on the database's clock), never the wall
clock of the test."""

from __future__ import annotations

import multiprocessing

import pytest
from limits_helpers import claim_loop, hold_and_hang

from prismq_queue import InvalidArgument, Queue


@pytest.fixture
def queue(queue_url):
    with Queue(queue_url) as q:
        yield q


def limit(queue="q", type=None, concurrency=None, per=None, rate=None, running=0, waiting=0, tokens=None):
    return {
        "queue": queue,
        "type": type,
        "concurrency": concurrency,
        "per": per,
        "rate": rate,
        "running": running,
        "waiting": waiting,
        "tokens": tokens,
    }


# --- the API -------------------------------------------------------------------------------------


def test_limits_are_stored_listed_replaced_and_removed(queue):
    assert queue.limits() == []
    queue.set_limit("q", concurrency=5)
    queue.set_limit("q", type="render", concurrency=2, per="project")
    queue.set_limit("a", rate="100/minutes")
    queue.set_limit("q", type="mail", rate="3/s", concurrency=1)
    got = queue.limits()
    assert got == [
        limit("a", rate="100/min", tokens=pytest.approx(100.0)),
        limit("q", concurrency=5),
        limit("q", type="mail", concurrency=1, rate="3/s", tokens=pytest.approx(3.0)),
        limit("q", type="render", concurrency=2, per="project"),
    ]
    # Replacing keeps one row per (queue, type).
    queue.set_limit("q", concurrency=7)
    assert [x["concurrency"] for x in queue.limits() if x["type"] is None and x["queue"] == "q"] == [7]
    assert queue.remove_limit("q", type="render") is True
    assert queue.remove_limit("q", type="render") is False
    assert queue.remove_limit("nope") is False
    assert queue.remove_limit("q") is True
    assert [(x["queue"], x["type"]) for x in queue.limits()] == [("a", None), ("q", "mail")]


def test_limits_survive_reopening(queue_url):
    with Queue(queue_url) as q:
        q.set_limit("q", concurrency=2, per="project", rate="10/h")
    with Queue(queue_url) as q:
        assert q.limits() == [limit(concurrency=2, per="project", rate="10/h", tokens=pytest.approx(10.0, abs=0.01))]


@pytest.mark.parametrize(
    "args, kwargs, says",
    [
        (("",), {"concurrency": 1}, "queue"),
        (("q",), {"type": "", "concurrency": 1}, "type"),
        (("q",), {}, "concurrency, rate"),
        (("q",), {"concurrency": 0}, "concurrency"),
        (("q",), {"concurrency": -3}, "concurrency"),
        (("q",), {"concurrency": 1.5}, "concurrency"),
        (("q",), {"concurrency": True}, "concurrency"),
        (("q",), {"concurrency": "2"}, "concurrency"),
        (("q",), {"per": "project"}, "per needs concurrency"),
        (("q",), {"per": "project", "rate": "1/s"}, "per needs concurrency"),
        (("q",), {"concurrency": 1, "per": ""}, "per"),
        (("q",), {"concurrency": 1, "per": 3}, "per"),
        (("q",), {"rate": "5 per fortnight"}, "rate"),
        (("q",), {"rate": "0/min"}, "rate"),
        (("q",), {"rate": "-1/s"}, "rate"),
        (("q",), {"rate": "1.5/s"}, "rate"),
        (("q",), {"rate": "5/fortnight"}, "rate"),
        (("q",), {"rate": "5"}, "rate"),
        (("q",), {"rate": 5}, "rate"),
        ((3,), {"concurrency": 1}, "queue"),
    ],
)
def test_bad_limits_are_refused_and_nothing_is_written(queue, args, kwargs, says):
    queue.set_limit("kept", concurrency=1)
    before = queue.limits()
    with pytest.raises(InvalidArgument, match=says):
        queue.set_limit(*args, **kwargs)
    assert queue.limits() == before


def test_remove_limit_checks_its_arguments(queue):
    for args, kwargs in [(("",), {}), (("q",), {"type": ""}), ((None,), {})]:
        with pytest.raises(InvalidArgument):
            queue.remove_limit(*args, **kwargs)


# --- figures ---------------------------------------------------------------------------------------


def test_figures_of_a_concurrency_limit(queue):
    for i in range(5):
        queue.enqueue("t", i, queue="q")
    queue.enqueue("t", queue="other")
    queue.set_limit("q", concurrency=2)
    got = queue.claim("w", queues=["q"], limit=10)
    assert len(got) == 2
    want = [limit(concurrency=2, running=2, waiting=3)]
    assert queue.limits() == want
    assert queue.stats(queue="q")["limits"] == want
    assert queue.stats()["limits"] == want
    assert queue.stats(queue="other")["limits"] == []
    assert queue.metrics()["limits"] == want
    queue.complete(got[0])
    assert queue.limits() == [limit(concurrency=2, running=1, waiting=2)]


def test_figures_of_a_rate_limit(queue):
    for i in range(5):
        queue.enqueue("t", i, queue="q")
    queue.set_limit("q", rate="3/h")
    assert len(queue.claim("w", queues=["q"], limit=10)) == 3
    [got] = queue.limits()
    assert (got["running"], got["waiting"], got["rate"]) == (3, 2, "3/h")
    # Refilled by 3 an hour: a few ms give far less than one token.
    assert 0 <= got["tokens"] < 0.1
    assert queue.claim("w", queues=["q"], limit=10) == []


def test_figures_of_a_per_key_limit(queue):
    for p in ["a", "a", "a", "b", None]:
        queue.enqueue("t", {"project": p} if p else {"other": 1}, queue="q")
    queue.set_limit("q", concurrency=1, per="project")
    got = queue.claim("w", queues=["q"], limit=10)
    # One of project a, one of b, and the task without the key.
    assert sorted(str(t.payload.get("project")) for t in got) == ["None", "a", "b"]
    assert queue.limits() == [limit(concurrency=1, per="project", running=3, waiting=2)]


def test_a_queue_limit_and_a_type_limit_both_apply(queue):
    for i in range(4):
        queue.enqueue("render", i, queue="q")
        queue.enqueue("mail", i, queue="q")
    queue.set_limit("q", concurrency=3)
    queue.set_limit("q", type="render", concurrency=1)
    got = queue.claim("w", queues=["q"], limit=10, strategy="fifo")
    assert sorted(t.type for t in got) == ["mail", "mail", "render"]
    figures = {(x["type"], x["running"], x["waiting"]) for x in queue.limits()}
    assert figures == {(None, 3, 5), ("render", 1, 3)}


@pytest.mark.parametrize("strategy", ["fifo", "lifo", "priority", "weighted_random"])
def test_single_claims_skip_full_keys_in_every_strategy(queue, strategy):
    # The lane's first tasks all belong to a full key: a single claim steps over them.
    for _ in range(20):
        queue.enqueue("t", {"project": "a"}, queue="q", priority=1)
    b = queue.enqueue("t", {"project": "b"}, queue="q", priority=500)
    queue.set_limit("q", concurrency=1, per="project")
    first = queue.claim("w", queues=["q"], strategy=strategy)
    second = queue.claim("w", queues=["q"], strategy=strategy)
    third = queue.claim("w", queues=["q"], strategy=strategy)
    ids = [t.id for t in first + second + third]
    assert len(ids) == 2 and b in ids


def test_a_limit_frees_its_slot_on_fail_and_cancel(queue):
    for i in range(3):
        queue.enqueue("t", i, queue="q", max_attempts=1)
    queue.set_limit("q", concurrency=1)
    [t] = queue.claim("w", queues=["q"], limit=5)
    queue.fail(t, "boom")
    [t] = queue.claim("w", queues=["q"], limit=5)
    assert queue.cancel(t.id)
    assert len(queue.claim("w", queues=["q"], limit=5)) == 1


# --- enforcement across processes ----------------------------------------------------------------


def run_workers(url, queue, n, batch, hold):
    ctx = multiprocessing.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=claim_loop, args=(url, f"w{i}", queue, batch, hold, out, ready, go), daemon=True)
        for i in range(n)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    go.set()
    return procs, out


def sample_running(q, queue, procs):
    """Read the running count of `queue` from the database until every worker has exited."""
    seen = []
    while any(p.is_alive() for p in procs):
        seen.append(q.stats(queue=queue)["running"])
        seen.append(q.limits()[0]["running"])
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return seen


def max_overlap(tasks):
    """The most tasks running at once, from their started_at/finished_at (database clock)."""
    best = 0
    for t in tasks:
        at = t.started_at
        best = max(best, sum(1 for u in tasks if u.started_at <= at < u.finished_at))
    return best


def test_a_concurrency_limit_holds_across_worker_processes(queue_url, queue):
    ids = [queue.enqueue("t", i, queue="q") for i in range(60)]
    queue.set_limit("q", concurrency=5)
    procs, out = run_workers(queue_url, "q", 4, 3, 0.1)
    seen = sample_running(queue, "q", procs)
    ran = sorted(i for _ in procs for i in out.get(timeout=30)[2])
    assert ran == ids
    assert max(seen) <= 5
    tasks = [queue.get(i) for i in ids]
    assert max_overlap(tasks) == 5
    assert queue.limits() == [limit(concurrency=5)]


def test_a_per_key_limit_holds_across_processes_and_starves_no_key(queue_url, queue):
    # Every task of project a comes first in line: b must still run alongside them.
    a = [queue.enqueue("t", {"project": "a", "i": i}, queue="q") for i in range(12)]
    b = [queue.enqueue("t", {"project": "b", "i": i}, queue="q") for i in range(12)]
    queue.set_limit("q", concurrency=1, per="project")
    procs, out = run_workers(queue_url, "q", 3, 2, 0.02)
    sample_running(queue, "q", procs)
    for _ in procs:
        out.get(timeout=30)
    ta, tb = [queue.get(i) for i in a], [queue.get(i) for i in b]
    assert all(t.status == "completed" for t in ta + tb)
    assert max_overlap(ta) == 1 and max_overlap(tb) == 1
    # b's first task started before a's last one finished: b was not made to wait for all of a.
    assert min(t.started_at for t in tb) < max(t.finished_at for t in ta)
    assert max_overlap(ta + tb) == 2


def test_a_killed_worker_leaks_no_slot(queue_url, queue):
    ids = [queue.enqueue("t", i, queue="q") for i in range(6)]
    queue.set_limit("q", concurrency=3)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    p = ctx.Process(target=hold_and_hang, args=(queue_url, "q", 5, ready), daemon=True)
    p.start()
    held = ready.get(timeout=60)
    assert len(held) == 3
    p.kill()  # SIGKILL; TerminateProcess on Windows
    p.join(30)
    assert queue.limits()[0]["running"] == 3
    assert queue.claim("w", queues=["q"], limit=5) == []
    # Once the leases end, the rescuer puts the tasks back, and the slots are free again.
    while queue.sweep() == 0:
        queue.wait_for_change(0.1)
    assert queue.limits()[0]["running"] == 0
    got = queue.claim("w", queues=["q"], limit=5)
    assert len(got) == 3
    for t in got:
        queue.complete(t)
    assert queue.limits()[0]["running"] == 0
    assert {t.id for t in got} <= set(ids)


def test_a_rate_limit_never_exceeds_its_quota(queue_url, queue):
    n, per_ms = 8, 1000
    ids = [queue.enqueue("t", i, queue="q") for i in range(20)]
    queue.set_limit("q", rate=f"{n}/s")
    procs, out = run_workers(queue_url, "q", 3, 4, 0)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
        out.get(timeout=30)
    starts = sorted(queue.get(i).started_at.timestamp() * 1000 for i in ids)
    # A full bucket gives n at once, then n per second: claims i..j (by started_at, the
    # database's clock) are never more than n plus what refilled between them.
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            assert j - i + 1 <= n + n * (starts[j] - starts[i]) / per_ms + 1e-6, (i, j)


def test_worker_runtimes_settle_and_batch_claims_respect_the_limit(queue_url, queue):
    # The worker runtime claims in batches and settles (completes and claims the next in one
    # transaction): both go through the limited claim.
    from backend_helpers import drain_with_worker

    ids = [queue.enqueue("drain", i) for i in range(40)]
    queue.set_limit("default", concurrency=3)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=drain_with_worker, args=(queue_url, f"w{i}", out), daemon=True) for i in range(2)]
    for p in procs:
        p.start()
    seen = sample_running(queue, "default", procs)
    ran = sorted(i for _ in procs for i in out.get(timeout=30)[2])
    assert ran == ids
    assert max(seen) <= 3
    assert max_overlap([queue.get(i) for i in ids]) <= 3
