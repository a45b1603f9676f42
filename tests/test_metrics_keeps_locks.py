"""``metrics()`` reads the WAL index in the ``-shm`` file. Closing a descriptor of a file drops
every POSIX lock the process holds on it, so a read of ``-shm`` through a descriptor of its own,
then closed, silently released the WAL read locks of the process's other connections: another
process could then restart the WAL under a reader, and a dashboard calling metrics() beside busy
workers corrupted the database. Found while testing the dashboard's snapshot (issue 16, point 8)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prismq_queue import Queue

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Windows locks belong to a handle, not to a process")

CHECKPOINT = "import sys; from prismq_queue import Queue; q = Queue(sys.argv[1]); print(q.checkpoint('restart')['busy'])"


def test_a_read_lock_of_this_process_survives_metrics(tmp_path):
    db = str(tmp_path / "q.db")
    with Queue(db) as q:
        q.enqueue_many([{"type": "t", "payload": "x" * 3000} for _ in range(1000)])  # several backup steps
        seen = []

        def between_steps(done, total):
            # The backup holds a read transaction (one snapshot) until it is done.
            if not seen:
                q.enqueue("after")  # a frame past the backup's snapshot
                q.metrics(window=1)
                # A RESTART checkpoint must wait for every reader: busy while the read lock is held.
                r = subprocess.run([sys.executable, "-c", CHECKPOINT, db], capture_output=True, text=True, timeout=60)
                seen.append(r.stdout.strip() or r.stderr)

        q.backup(str(tmp_path / "copy.db"), progress=between_steps)
        assert seen == ["True"], "another process restarted the WAL under this process's reader"
        assert q.integrity_check() == []
    with Queue(str(tmp_path / "copy.db")) as copy:
        assert copy.stats()["queued"] == 1000 and copy.integrity_check() == []
