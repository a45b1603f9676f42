"""Queue.integrity_check on each backend: SQLite checks its file's structure and lists no problem
(an empty list) for a sound one; PostgreSQL has no such check of its own and refuses with
Unsupported, naming the backend, the operation and what to use instead."""

from __future__ import annotations

import pytest

from prismq_queue import Queue, QueueError, Unsupported


def test_integrity_check_answers_on_sqlite_and_refuses_on_postgresql(queue_url):
    with Queue(queue_url) as q:
        q.enqueue("t", {"n": 1})
        if not queue_url.startswith("postgresql://"):
            assert q.integrity_check() == [], "a sound file: no problem listed"
            return
        with pytest.raises(Unsupported) as info:
            q.integrity_check()
        e = info.value
        assert isinstance(e, QueueError)
        assert (e.backend, e.operation) == ("postgresql", "integrity_check")
        assert "the database's own consistency checks" in str(e), str(e)
        assert q.stats()["queued"] == 1, "the handle goes on working"
