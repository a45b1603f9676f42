"""Dependencies (``enqueue(..., after=[...])``), chains and groups, on SQLite and PostgreSQL:
holds and releases with real workers, the dead letter's and cancel's propagation with the reason,
the run-anyway flag, bad inputs that write nothing, and a worker in another process running a
task released by a completion in this one."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import time

import pytest
from backend_helpers import drain_with_worker
from worker_handlers import Registry

from prismq_queue import InvalidArgument, Queue, chain, group
from prismq_queue.dependencies import is_held
from prismq_queue.worker import Worker

sys.path.insert(0, os.path.dirname(__file__))  # spawned processes import the helpers


@pytest.fixture
def q(queue_url):
    with Queue(queue_url) as q:
        yield q


def wait_until(cond, timeout=60.0):
    """A deadline for a condition to come true, never a speed assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def running(q, handlers, **kw):
    w = Worker(q, Registry(handlers), poll_interval=0.1, heartbeat_interval=0.2, **kw)
    t = threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}, daemon=True)
    t.start()
    try:
        yield w
    finally:
        w.stop()
        t.join(timeout=30)
        assert not t.is_alive(), "worker did not stop"


def claim_ids(q, **kw):
    return [t.id for t in q.claim("w", limit=100, **kw)]


def test_a_held_task_waits_for_every_dependency_and_shows_on_what(q):
    a = q.enqueue("x", 1)
    b = q.enqueue("x", 2)
    c = q.enqueue("x", 3, after=[a, q.get(b)])  # ids or Tasks
    held = q.get(c)
    assert (held.status, held.after, held.waiting_on) == ("queued", [a, b], [a, b])
    assert is_held(held) and q.position(c) is None
    assert q.stats()["oldest_queued_age_seconds"] is not None  # a and b are due
    [ta, tb] = q.claim("w", limit=10)
    assert q.stats()["oldest_queued_age_seconds"] is None  # only the held task is queued
    q.complete(ta, "A")
    assert q.get(c).waiting_on == [b] and claim_ids(q) == []
    q.complete_many([(tb, "B")])
    released = q.get(c)
    assert (released.waiting_on, released.after, is_held(released)) == ([], [a, b], False)
    assert q.position(c) == 0
    assert claim_ids(q) == [c]


def test_workers_run_a_chain_in_order_each_step_getting_the_previous_result(q):
    order = []

    def step(ctx):
        order.append(ctx.task.id)
        previous = list(ctx.dependency_results.values())
        return (previous[0] if previous else 0) + ctx.payload

    ids = chain(q, [{"type": "add", "payload": n} for n in (1, 10, 100)])
    with running(q, {"add": step}, concurrency=4):
        assert wait_until(lambda: q.get(ids[-1]).status == "completed")
    assert order == ids
    assert [q.get(i).result for i in ids] == [1, 11, 111]
    assert q.get(ids[2]).after == [ids[1]]


def test_a_group_hands_every_result_to_its_final_task(q):
    seen = {}

    def part(ctx):
        return ctx.payload * 2

    def total(ctx):
        seen.update(ctx.dependency_results)
        return sum(ctx.dependency_results.values())

    g = group(q, [{"type": "part", "payload": n} for n in (1, 2, 3)], then={"type": "total"})
    with running(q, {"part": part, "total": total}, concurrency=3):
        assert wait_until(lambda: q.get(g.then).status == "completed")
    assert seen == dict(zip(g.tasks, [2, 4, 6]))
    assert q.get(g.then).result == 12


def test_a_dead_letter_cancels_the_chain_with_the_reason(q):
    a = q.enqueue("x", max_attempts=1)
    b = q.enqueue("x", after=[a])
    c = q.enqueue("x", after=[b])
    [ta] = q.claim("w")
    q.fail(ta, "disk full")
    rb, rc = q.get(b), q.get(c)
    assert (rb.status, rb.error) == ("cancelled", f"dependency {a} failed: disk full")
    assert (rc.status, rc.error) == ("cancelled", f"dependency {b} was cancelled: dependency {a} failed: disk full")
    # A dependency already failed dooms a new dependent at once.
    late = q.get(q.enqueue("x", after=[a]))
    assert (late.status, late.error) == ("cancelled", f"dependency {a} failed: disk full")
    # A failure that will be retried is not for good: the dependent keeps waiting.
    d = q.enqueue("x", max_attempts=3)
    e = q.enqueue("x", after=[d])
    [td] = q.claim("w")
    q.fail(td, "flaky", retry=True)
    assert q.get(e).waiting_on == [d]


def test_cancel_propagates_down_the_chain(q):
    a = q.enqueue("x")
    b = q.enqueue("x", after=[a])
    c = q.enqueue("x", after=[b])
    assert q.cancel(a)
    assert [(q.get(i).status, q.get(i).error) for i in (b, c)] == [
        ("cancelled", f"dependency {a} was cancelled"),
        ("cancelled", f"dependency {b} was cancelled: dependency {a} was cancelled"),
    ]
    # Cancelling a held task frees nothing else and leaves its dependency alone.
    d = q.enqueue("x")
    e = q.enqueue("x", after=[d])
    assert q.cancel(e) and q.get(d).status == "queued"


def test_the_run_anyway_flag_runs_the_dependent_after_a_failure(q):
    a = q.enqueue("x", max_attempts=1)
    ok = q.enqueue("x")
    b = q.enqueue("x", after=[a, ok], on_dependency_failure="run")
    [ta, tok] = q.claim("w", limit=2)
    q.fail(ta, "boom")
    assert q.get(b).waiting_on == [ok]
    q.complete(tok)
    assert claim_ids(q) == [b]
    items = q.enqueue_many([{"type": "x", "after": [a], "on_dependency_failure": "run"}])
    assert claim_ids(q) == items


def test_bad_dependencies_are_refused_with_nothing_written(q):
    a = q.enqueue("x")
    k = q.enqueue("x", idempotency_key="k")
    bad = [
        ({"after": [a, a]}, f"after lists task {a} twice"),
        ({"after": [a, 10**9]}, "which does not exist"),
        ({"after": [0]}, "positive"),
        ({"after": "12"}, "list of task ids"),
        ({"after": [1.5]}, "must be an integer"),
        ({"after": [a], "on_dependency_failure": "maybe"}, '"cancel" or "run"'),
        ({"after": [k], "idempotency_key": "k"}, "cannot wait on itself"),
    ]
    for kw, words in bad:
        with pytest.raises(InvalidArgument, match=words):
            q.enqueue("x", **kw)
        with pytest.raises(InvalidArgument, match=words):
            q.enqueue_many([{"type": "x"}, {"type": "x", **kw}])
    assert q.stats()["total"] == 2
    assert q.get(a).status == "queued" and q.get(k).after == []


def test_a_worker_in_another_process_runs_a_task_released_here(q, queue_url):
    first = q.enqueue("first")
    then = q.enqueue("drain", after=[first])
    out = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(
        target=drain_with_worker, args=(queue_url, "other", out), daemon=True
    )
    proc.start()
    try:
        # The other worker is up and idle: the only task of its type is held.
        assert wait_until(lambda: any(w.id == "other" for w in q.workers()))
        [t] = q.claim("here", types=["first"])
        q.complete(t, {"from": os.getpid()})
        worker_id, pid, ran = out.get(timeout=120)
        assert (worker_id, ran) == ("other", [then])
        assert q.get(then).result["pid"] == pid != os.getpid()
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()


def test_a_project_status_shows_a_held_item_waiting_on_its_dependencies(q):
    from fastapi.testclient import TestClient

    from prismq_queue import web

    first = q.enqueue("build", queue="project:p1")
    held = q.enqueue("report", queue="project:p1", after=[first])
    with TestClient(web.create_app(q, auth=web.Auth.disabled())) as client:
        status = client.get("/api/projects/p1/queue/status").json()
    items = {i["item_id"]: i for i in status["items"]}
    assert (items[first]["position"], items[first]["waiting_on"]) == (0, None)
    assert (items[held]["status"], items[held]["position"], items[held]["waiting_on"]) == ("queued", None, [first])
