"""The web layer's 503 for a ``DatabaseError`` of kind ``io_error`` says what it means on the
queue's backend (issue 19): a disk on SQLite, the connection to the server on PostgreSQL, where a
write whose COMMIT was lost may have been committed. The body never shows the URL's password."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import DatabaseError, Queue, web  # noqa: E402
from web_helpers import QueueProxy  # noqa: E402

SECRET = "s3cret-Pw-in-url"
AUTH = web.Auth(tokens={"all": web.Token(scopes={"read", "write", "admin"})})
ALL = {"Authorization": "Bearer all"}


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "q.db")
    # The throwaway server trusts local connections: a password in the URL is carried, not asked.
    url = request.getfixturevalue("postgres_url")
    return url.replace("://postgres@", f"://postgres:{SECRET}@", 1)


def test_an_io_error_is_503_worded_for_the_queues_backend(location):
    with Queue(location) as queue:

        def lost(*a, **k):
            raise DatabaseError(f"I/O failure on {location}", "io_error")

        with TestClient(web.create_app(QueueProxy(queue, stats=lost), auth=AUTH)) as c:
            r = c.get("/api/queue/stats", headers=ALL)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    detail = r.json()["detail"]
    if location.startswith("postgresql://"):
        assert "PostgreSQL server" in detail and "connection" in detail and "disk" not in detail
        assert "may have been committed" in detail
    else:
        assert detail == "the queue database's disk reported an I/O error; nothing was written"
    assert SECRET not in r.text and "I/O failure on" not in r.text
