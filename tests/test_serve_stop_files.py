"""A normal stop of ``serve`` leaves the database as one file: no -wal, no -shm (issue 16, point 9).

Only the last connection to close on a file removes them. The event waiter thread of a queue
handle (``events.watch``, which the dashboard's monitor uses) went on waiting on the handle for up
to 0.5 s after its last stream closed, so a handle closed then kept its connections until that
wait returned, and serve had often exited by then. With no workers to wait for, serve's stop is
quick, and about one stop in four left both files behind."""

from __future__ import annotations

import random
import time

import pytest

from prismq_queue import Queue
from prismq_queue.events import watch
from serve_helpers import CTRL_BREAK_UNDER_WINE, Serve, wait_until

pytestmark = pytest.mark.timeout(400)


def sidecars(db):
    return [p.name for p in db.parent.iterdir() if p.name in (f"{db.name}-wal", f"{db.name}-shm")]


@pytest.mark.parametrize("workers, starts", [(0, 8), (4, 2)])
@CTRL_BREAK_UNDER_WINE
def test_a_normal_stop_leaves_no_wal_or_shm(tmp_path, workers, starts):
    db = tmp_path / "q.db"
    rng = random.Random(16)
    for n in range(starts):
        s = Serve(tmp_path, "--db", db, "--port", 0, "--workers", workers).start()
        try:
            if workers:
                with Queue(db) as q:  # (closed again before the stop)
                    wait_until(lambda: len(q.workers()) == workers, what=f"{workers} worker heartbeats")
            time.sleep(rng.uniform(0.2, 1.5))  # stop at varied moments of the event waiter's wait
            s.interrupt()
            assert s.wait() == 0, s.output()
        finally:
            s.close()
        assert sidecars(db) == [], f"start {n + 1} of {starts}: {sidecars(db)} left\n{s.output()}"


def test_a_handle_closed_after_its_last_event_stream_closes_at_once(tmp_path):
    db = tmp_path / "q.db"
    q = Queue(db)
    with watch(q, interval=0.1) as stream:
        q.enqueue("t")
        next(iter(stream))  # the waiter thread is in its next wait now
    q.close()
    assert sidecars(db) == []  # at once: no connection of the handle outlived close()
