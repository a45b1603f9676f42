"""A PostgreSQL server that stops letting an open queue handle in (issue 21): the password of the
URL's role changed on the server and its sessions ended. Every call then fails with a
DatabaseError ``io_error`` that says why the server refused (not only that it could not be
reached), never showing the password; once the password is the URL's again, the next call
connects and nothing was lost. Against a throwaway cluster of this module's own with password
authentication."""

from __future__ import annotations

import uuid

import pg_cluster
import pytest

from prismq_queue import DatabaseError, Queue

ADMIN_PASSWORD = "Adm-secr3t-" + uuid.uuid4().hex[:8]
PASSWORD = "App-secr3t-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def cluster():
    yield from pg_cluster.running(pg_cluster.PasswordCluster, ADMIN_PASSWORD)


def test_a_password_changed_under_an_open_handle_says_why_then_recovers(cluster):
    role = "app_" + uuid.uuid4().hex[:8]
    cluster.sql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    url = pg_cluster.with_schema(
        f"postgresql://{role}:{PASSWORD}@127.0.0.1:{cluster.port}/postgres?pool_size=1&pool_timeout=0.5")
    with Queue(url) as q:
        task_id = q.enqueue("t", {"n": 1})
        rotated = "Rotated-" + uuid.uuid4().hex[:8]
        cluster.sql(f"ALTER ROLE {role} PASSWORD '{rotated}'")
        cluster.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        with pytest.raises(DatabaseError) as info:
            q.get(task_id)
        text = str(info.value)
        assert info.value.kind == "io_error", text
        assert "cannot reach the PostgreSQL server (tried for 0.5s)" in text, text
        assert "28P01" in text and "password authentication failed" in text, text
        assert "check the user and password" in text, text
        assert PASSWORD not in text and rotated not in text, text
        cluster.sql(f"ALTER ROLE {role} PASSWORD '{PASSWORD}'")
        assert q.get(task_id).payload == {"n": 1}
        assert q.stats()["queued"] == 1
