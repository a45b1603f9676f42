"""TLS to PostgreSQL (issue 19): ``sslmode=verify-full`` with ``sslrootcert=`` through
``Queue(url)``, against a throwaway cluster of this module's own with ``ssl=on`` and a certificate
for ``localhost`` signed by a CA the test makes. A server whose certificate the URL's CA did not
sign is refused with a DatabaseError that says what to fix and never shows the password. Skipped
where the throwaway cluster cannot run (win32: it needs initdb), unless PRISMQ_REQUIRE_POSTGRES=1."""

from __future__ import annotations

import uuid

import pg_cluster
import pytest

from prismq_queue import DatabaseError, InvalidArgument, Queue

# The cluster trusts local connections; the password is there to check no message shows it.
PASSWORD = "Tls-secr3t-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def cluster():
    yield from pg_cluster.running(pg_cluster.TlsCluster)


def url(cluster, host: str, params: str) -> str:
    base = f"postgresql://postgres:{PASSWORD}@{host}:{cluster.port}/postgres?connect_timeout=10&{params}"
    return pg_cluster.with_schema(base)


def test_verify_full_with_the_ca_connects_and_works(cluster):
    with Queue(url(cluster, "localhost", f"sslmode=verify-full&sslrootcert={cluster.ca_file}")) as q:
        assert PASSWORD not in q.path
        task_id = q.enqueue("tls.ping", {"n": 1})
        [task] = q.claim("w1", limit=1)
        assert task.id == task_id and task.payload == {"n": 1}
        q.complete(task, {"ok": True})
        assert q.get(task_id).status == "completed"


def test_a_server_signed_by_another_ca_is_refused_saying_what_to_fix(cluster):
    bad = url(cluster, "localhost", f"sslmode=verify-full&sslrootcert={cluster.other_ca_file}")
    with pytest.raises(DatabaseError) as info:
        Queue(bad).close()
    text = str(info.value)
    assert PASSWORD not in text, text
    assert "TLS" in text and "signed by the CA whose certificate sslrootcert names" in text, text


def test_a_host_the_certificate_does_not_name_is_refused(cluster):
    bad = url(cluster, "127.0.0.1", f"sslmode=verify-full&sslrootcert={cluster.ca_file}")
    with pytest.raises(DatabaseError) as info:
        Queue(bad).close()
    text = str(info.value)
    assert PASSWORD not in text and "does not name the URL's host" in text, text


def test_a_missing_root_certificate_file_names_the_parameter(cluster):
    with pytest.raises(InvalidArgument) as info:
        Queue(url(cluster, "localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")).close()
    text = str(info.value)
    assert "sslrootcert=/nonexistent/ca.pem" in text and PASSWORD not in text, text
