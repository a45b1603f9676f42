"""Issue 15, point 4: leases end on a clock that steps of the wall clock never move.

A real clock step cannot be made in a test, so a process is started with the core's documented
debug hook ``PRISMQ_DEBUG_WALL_CLOCK_OFFSET_MS``, which shifts that process's wall clock: to it,
the system clock stepped by that much. ``PRISMQ_DEBUG_BOOT_ID`` makes a process claim to run in
another boot of the machine. Every claim and sweep below runs in a real separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from prismq_queue import Queue

HOUR_MS = 3_600_000
STEP = 2 * HOUR_MS

# What the other process does: claim once, then sweep, and report both.
CLAIM_AND_SWEEP = """
import json, sys
from prismq_queue import Queue
with Queue(sys.argv[1]) as q:
    got = q.claim(sys.argv[2], lease=float(sys.argv[3]))
    swept = q.sweep()
    print(json.dumps({"claimed": [[t.id, t.attempts] for t in got], "swept": swept,
                      "clock": q.lease_clock()}))
"""

CLAIM_AND_HOLD = """
import json, sys
from prismq_queue import Queue
with Queue(sys.argv[1]) as q:
    tid = q.enqueue("t")
    [t] = q.claim("earlier-boot-worker", lease=3600)
    print(json.dumps({"id": tid, "clock": q.lease_clock()}))
"""


def run(code, *args, offset_ms=0, boot_id=None):
    env = dict(os.environ)
    env.pop("PRISMQ_DEBUG_WALL_CLOCK_OFFSET_MS", None)
    env.pop("PRISMQ_DEBUG_BOOT_ID", None)
    if offset_ms:
        env["PRISMQ_DEBUG_WALL_CLOCK_OFFSET_MS"] = str(offset_ms)
    if boot_id:
        env["PRISMQ_DEBUG_BOOT_ID"] = boot_id
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def monotonic_here(q):
    clock = q.lease_clock()
    if clock["clock"] != "monotonic":
        pytest.skip(f"no boot identity readable on this system: leases follow the wall clock here ({clock})")
    return clock


def test_a_step_forward_does_not_rescue_a_live_lease(db_path):
    with Queue(db_path) as q:
        monotonic_here(q)
        tid = q.enqueue("t")
        [held] = q.claim("holder", lease=30)
        # To this process the clock jumped two hours ahead: far past the lease's wall-clock end.
        seen = run(CLAIM_AND_SWEEP, db_path, "stepped", 30, offset_ms=STEP)
        assert seen["clock"]["clock"] == "monotonic"
        assert seen == {**seen, "claimed": [], "swept": 0}, seen
        t = q.get(tid)
        assert (t.status, t.locked_by, t.attempts) == ("running", "holder", 1)
        q.renew(held, 30)
        q.complete(held, {"ran": "once"})
        assert q.get(tid).result == {"ran": "once"}


def test_a_step_back_does_not_stall_the_rescue_of_an_expired_lease(db_path):
    with Queue(db_path) as q:
        monotonic_here(q)
        tid = q.enqueue("t")
        [dead] = q.claim("dead-worker", lease=0.2)
        # The worker died: wait (on this process's clock) until its lease has ended.
        while datetime.now(timezone.utc) <= dead.lease_until + timedelta(milliseconds=50):
            time.sleep(0.02)
        # To this process the clock jumped two hours back: before the lease's wall-clock end.
        seen = run(CLAIM_AND_SWEEP, db_path, "stepped-back", 30, offset_ms=-STEP)
        assert seen["claimed"] == [[tid, 2]], seen
        t = q.get(tid)
        assert (t.status, t.locked_by) == ("running", "stepped-back")


def test_a_lease_of_an_earlier_boot_counts_as_expired(db_path):
    # A process of an "earlier boot" takes an hour-long lease and is gone (the machine rebooted).
    held = run(CLAIM_AND_HOLD, db_path, boot_id="test-earlier-boot")
    assert held["clock"]["boot_id"] == "test-earlier-boot"
    with Queue(db_path) as q:
        here = q.lease_clock()
        assert here["boot_seq"] > held["clock"]["boot_seq"]
        [t] = q.claim("after-reboot", lease=30)
        assert (t.id, t.attempts) == (held["id"], 2)
        log = [entry.message for entry in q.logs(t.id)]
        assert any("earlier-boot-worker stopped renewing it" in m for m in log), log


def test_every_process_of_one_boot_shares_the_boot_number(db_path):
    with Queue(db_path) as q:
        mine = q.lease_clock()
    other = run(CLAIM_AND_SWEEP, db_path, "w", 1)["clock"]
    assert other == mine
    with Queue(db_path) as q:
        assert q.lease_clock() == mine
