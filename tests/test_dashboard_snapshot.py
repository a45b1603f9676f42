"""``GET /queue/dashboard``: every panel of the page from one state of the database, so that the
page, which renders each update from one of these, never shows the same thing two ways (issue 16,
point 8). Another process keeps moving tasks through every state while the snapshots are read."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import Queue, web  # noqa: E402
from prismq_queue.web import _dashboard  # noqa: E402

pytestmark = pytest.mark.timeout(180)
AUTH = web.Auth(tokens={"t": web.Token(scopes={"read", "write"})})
HEADERS = {"Authorization": "Bearer t"}

# Enqueues, claims, reports progress, completes, fails (retried or dead), some fifty rounds a
# second, with a heartbeat for its worker id, until its stdin closes.
CHURN = textwrap.dedent("""
    import random, sys, threading
    from prismq_queue import Queue
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    q = Queue(sys.argv[1])
    rng = random.Random(7)
    held = []
    print("churning", flush=True)
    while not stop.is_set():
        q.heartbeat("churn", pid=0)
        q.enqueue_many([{"type": rng.choice(["a", "b"]), "queue": rng.choice(["q1", "q2"]),
                         "max_attempts": rng.choice([1, 2]), "retry": {"base": 0.05, "jitter": 0}}
                        for _ in range(3)])
        held += q.claim("churn", limit=3, lease=30)
        for t in held[:-2]:
            q.progress(t, rng.randrange(100))
        done, held = held[:-2], held[-2:]
        for t in done:
            if rng.random() < 0.5:
                q.complete(t)
            else:
                q.fail(t, "churn failure")
        stop.wait(0.02)  # busy, yet leaves gaps the length of a snapshot's read on a loaded machine
""")


@pytest.fixture
def churning(tmp_path):
    db = tmp_path / "snap.db"
    Queue(db).close()
    proc = subprocess.Popen([sys.executable, "-c", CHURN, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "churning"
    try:
        yield db
    finally:
        proc.stdin.close()
        proc.wait(30)


def disagreements(s):
    """What one snapshot says two ways: empty when its panels agree."""
    problems = []
    totals, queues, types = s["totals"], s["queues"], s["types"]
    running_ids = [t["id"] for t in s["running"]["items"]]
    held = [c for w in s["workers"]["workers"] for c in w["current_tasks"]]
    # Dead letters per queue are counted up to finished_scan_limit: then only a lower bound.
    exact = ["queued", "retrying", "running"] + ([] if s["finished_scan_capped"] else ["failed"])
    for key in exact:
        in_queues, in_types = sum(r[key] for r in queues), sum(r[key] for r in types)
        if not totals[key] == in_queues == in_types:
            problems.append(f"{key}: tile {totals[key]}, queues {in_queues}, types {in_types}")
    if not totals["running"] == s["running"]["count"] == len(running_ids) == len(held):
        problems.append(f"running: tile {totals['running']}, table {len(running_ids)}, workers {len(held)}")
    progress = {t["id"]: t["progress"] for t in s["running"]["items"]}
    for c in held:
        if progress.get(c["id"], "missing") != c["progress"]:
            problems.append(f"task {c['id']}: {c['progress']} in workers, {progress.get(c['id'], 'missing')} running")
    dead = [t["id"] for t in s["dead_letters"]["items"]]
    if len(dead) != min(totals["failed"], _dashboard.SNAPSHOT_ROWS):
        problems.append(f"dead letters: tile {totals['failed']}, table {len(dead)}")
    if set(dead) & set(running_ids):
        problems.append(f"both running and dead: {set(dead) & set(running_ids)}")
    for f in s["failures"]["items"]:
        t = f["task"]
        if (t["status"] == "running") != (t["id"] in running_ids):
            problems.append(f"failure of task {t['id']} says {t['status']}, running table disagrees")
    return problems


def test_every_snapshot_read_in_one_state_agrees_with_itself_while_another_process_churns(churning):
    app = web.create_app(Queue(churning), auth=AUTH, events_interval=0.1)
    consistent = 0
    with TestClient(app) as client:
        deadline = time.monotonic() + 90
        while consistent < 50 and time.monotonic() < deadline:
            r = client.get("/api/queue/dashboard", headers=HEADERS)
            assert r.status_code == 200, r.text
            s = r.json()
            if s["consistent"]:
                consistent += 1
                assert disagreements(s) == [], s
    # 50 checked snapshots are the aim; on a loaded machine (wine, or CI's two cores shared) 90 s may
    # give fewer, and 10 still check the consistency the test is about (46 seen once under wine).
    assert consistent >= 10, f"only {consistent} snapshots of one state in 90 s"
    app.state.queue.close()


class CommitsDuringTheFirstRead:
    """The app's queue handle; another handle commits once while a dashboard read is under way
    (after the running tasks were read, before the workers and dead letters)."""

    def __init__(self, queue, commit):
        self._queue, self._commit = queue, [commit]

    def __getattr__(self, name):
        return getattr(self._queue, name)

    def workers(self):
        if self._commit:
            self._commit.pop()()
        return self._queue.workers()


def test_a_commit_in_the_middle_of_a_read_makes_it_read_again(tmp_path):
    db = tmp_path / "q.db"
    with Queue(db) as app_queue, Queue(db) as other:
        tid = other.enqueue("t", queue="emails", max_attempts=1)
        other.heartbeat("w")
        [task] = other.claim("w")
        app = web.create_app(CommitsDuringTheFirstRead(app_queue, lambda: other.fail(task, "boom")), auth=AUTH)
        with TestClient(app) as client:
            s = client.get("/api/queue/dashboard", headers=HEADERS).json()
    # The first read saw the task running, then dead: it was read again, after the commit.
    assert s["consistent"] and disagreements(s) == [], s
    assert s["running"]["items"] == [] and [t["id"] for t in s["dead_letters"]["items"]] == [tid]
    assert s["totals"]["running"] == 0 and s["totals"]["failed"] == 1


def test_a_snapshot_is_read_again_only_after_a_commit(tmp_path):
    with Queue(tmp_path / "q.db") as q:
        app = web.create_app(q, auth=AUTH)
        with TestClient(app) as client:
            first = client.get("/api/queue/dashboard", headers=HEADERS).json()
            assert first["consistent"] and first["totals"]["queued"] == 0
            assert client.get("/api/queue/dashboard", headers=HEADERS).json()["at"] == first["at"]
            q.enqueue("t", queue="emails")
            after = client.get("/api/queue/dashboard", headers=HEADERS).json()
            assert after["at"] != first["at"] and after["totals"]["queued"] == 1
            assert [r["queue"] for r in after["queues"]] == ["emails"]


def test_the_snapshot_needs_a_read_token(tmp_path):
    with Queue(tmp_path / "q.db") as q:
        app = web.create_app(q, auth=web.Auth(tokens={"w": web.Token(scopes={"write"})}))
        with TestClient(app) as client:
            assert client.get("/api/queue/dashboard").status_code == 401
            assert client.get("/api/queue/dashboard", headers={"Authorization": "Bearer w"}).status_code == 403
