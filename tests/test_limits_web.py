"""Limits over the REST API (issue 20), through the router with TestClient, on both backends:
``GET /queue/limits`` [read], ``PUT /queue/limits`` and ``DELETE /queue/limits`` [admin], what the
queue refuses as 400 with its message and nothing written, the OpenAPI schema, the dashboard's
snapshot and the Prometheus gauges."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import Queue, web  # noqa: E402
from prismq_queue.web._limit_models import PER_PATTERN, RATE_PATTERN  # noqa: E402

AUTH = web.Auth(
    tokens={
        "reader": web.Token(scopes={"read"}),
        "writer": web.Token(scopes={"read", "write"}),
        "admin": web.Token(scopes={"read", "admin"}),
        "p1": web.Token(scopes={"read", "write", "admin"}, projects={"p1"}),
    }
)
READ, WRITE, ADMIN = ({"Authorization": f"Bearer {t}"} for t in ("reader", "writer", "admin"))


@pytest.fixture(params=["sqlite", "postgres"])
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "limits.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def q(queue_url):
    with Queue(queue_url) as queue:
        yield queue


@pytest.fixture
def client(q):
    with TestClient(web.create_app(q, auth=AUTH, cache_ttl=0)) as c:
        yield c


def test_set_list_replace_and_remove(client, q):
    assert client.get("/api/queue/limits", headers=READ).json() == []
    r = client.put("/api/queue/limits", json={"queue": "tests", "concurrency": 2}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"queue": "tests", "type": None, "concurrency": 2, "per": None, "rate": None,
                        "running": 0, "waiting": 0, "tokens": None}
    body = {"queue": "tests", "type": "browser.run", "concurrency": 1, "per": "project", "rate": "100/minutes"}
    r = client.put("/api/queue/limits", json=body, headers=ADMIN)
    assert r.status_code == 200 and r.json()["rate"] == "100/min" and r.json()["tokens"] == 100
    assert client.get("/api/queue/limits", headers=READ).json() == q.limits()
    assert len(q.limits()) == 2

    # Replacing keeps nothing of the old limit.
    r = client.put("/api/queue/limits", json={"queue": "tests", "type": "browser.run", "rate": "5/s"}, headers=ADMIN)
    assert (r.json()["concurrency"], r.json()["per"], r.json()["rate"]) == (None, None, "5/s")

    r = client.delete("/api/queue/limits", params={"queue": "tests", "type": "browser.run"}, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"queue": "tests", "type": "browser.run", "removed": True}
    r = client.delete("/api/queue/limits", params={"queue": "tests", "type": "browser.run"}, headers=ADMIN)
    assert r.status_code == 404 and r.json()["detail"] == "there is no limit on queue 'tests', type 'browser.run'"
    assert client.delete("/api/queue/limits?queue=tests", headers=ADMIN).status_code == 200
    assert q.limits() == []


def test_the_figures_follow_the_claims_of_workers(client, q):
    client.put("/api/queue/limits", json={"queue": "tests", "concurrency": 1, "per": "project"}, headers=ADMIN)
    for project in ("a", "a", "b"):
        q.enqueue("run", {"project": project}, queue="tests")
    claimed = q.claim("w", queues=["tests"], limit=10)
    assert len(claimed) == 2
    [row] = client.get("/api/queue/limits", headers=READ).json()
    assert (row["running"], row["waiting"]) == (2, 1)
    [shown] = client.get("/api/queue/dashboard", headers=READ).json()["limits"]
    assert (shown["queue"], shown["running"], shown["waiting"], shown["per"]) == ("tests", 2, 1, "project")
    assert client.get("/api/queue/statistics", headers=READ).json()["limits"] == [row]
    metrics = client.get("/api/metrics", headers=READ).text
    assert 'prismq_limit_running{queue="tests",type="*"} 2.0' in metrics
    assert 'prismq_limit_waiting{queue="tests",type="*"} 1.0' in metrics
    assert 'prismq_limit_concurrency{queue="tests",type="*"} 1.0' in metrics


@pytest.mark.parametrize(
    "body, says",
    [
        ({"queue": "tests", "concurrency": 0}, "concurrency must be an integer >= 1, not 0"),
        ({"queue": "tests", "concurrency": -1}, "concurrency must be an integer >= 1, not -1"),
        ({"queue": "tests", "rate": "5 per fortnight"}, 'rate "5 per fortnight" is not valid'),
        ({"queue": "tests", "rate": "0/min"}, "the count must be between 1 and 1,000,000,000"),
        ({"queue": "tests", "rate": "5/fortnight"}, "unknown unit"),
        ({"queue": "tests", "per": "project", "rate": "5/s"}, "per needs concurrency"),
        ({"queue": "tests"}, "a limit needs concurrency, rate or both"),
        ({"queue": "tests", "concurrency": 1, "per": "a\nb"}, "per must be a top-level payload key"),
    ],
)
def test_what_the_queue_refuses_is_400_with_its_message_and_nothing_written(client, q, body, says):
    r = client.put("/api/queue/limits", json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert says in r.json()["detail"] and r.json()["request_id"]
    assert q.limits() == []


@pytest.mark.parametrize(
    "body",
    [
        {"queue": "tests", "concurrency": "5"},  # no lax coercion
        {"queue": "tests", "concurrency": 2**63},  # past 64 bits
        {"queue": "tests", "concurrency": None, "rate": "5/s"},  # omit a field, not null
        {"queue": " ", "concurrency": 1},
        {"concurrency": 1},
        {"queue": "tests", "concurrency": 1, "burst": 3},
    ],
)
def test_a_body_of_the_wrong_shape_is_422(client, q, body):
    assert client.put("/api/queue/limits", json=body, headers=ADMIN).status_code == 422
    assert q.limits() == []


def test_reading_needs_read_and_changing_needs_admin(client, q):
    body = {"queue": "tests", "concurrency": 1}
    assert client.get("/api/queue/limits").status_code == 401
    assert client.put("/api/queue/limits", json=body, headers=WRITE).status_code == 403
    assert client.put("/api/queue/limits", json=body, headers=READ).status_code == 403
    # A project's token may not see or change every queue's limits.
    p1 = {"Authorization": "Bearer p1"}
    assert client.get("/api/queue/limits", headers=p1).status_code == 403
    assert client.put("/api/queue/limits", json=body, headers=p1).status_code == 403
    assert q.limits() == []
    assert client.put("/api/queue/limits", json=body, headers=ADMIN).status_code == 200
    assert client.delete("/api/queue/limits?queue=tests", headers=WRITE).status_code == 403
    assert len(q.limits()) == 1


def test_the_openapi_schema_describes_the_limits(client):
    spec = client.get("/openapi.json").json()
    ops = spec["paths"]["/api/queue/limits"]
    assert set(ops) == {"get", "put", "delete"}
    assert ops["get"]["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/LimitModel"
    }
    assert {"400", "413", "422"} <= set(ops["put"]["responses"]) and "404" in ops["delete"]["responses"]
    request = spec["components"]["schemas"]["LimitRequest"]
    assert request["anyOf"] == [{"required": ["concurrency"]}, {"required": ["rate"]}]
    assert request["properties"]["concurrency"]["minimum"] == 1
    assert set(spec["components"]["schemas"]["LimitModel"]["properties"]) == {
        "queue", "type", "concurrency", "per", "rate", "running", "waiting", "tokens",
    }


@pytest.mark.parametrize(
    "rate, core_accepts",
    [("100/min", True), (" 7 / Seconds ", True), ("0005/h", True), ("1000000000/day", True), ("5/MIN", True),
     ("1000000001/s", False), ("0/s", False), ("5/ms", False), ("5/hs", False), ("5/min/s", False), ("5", False),
     ("five/min", False), ("5/fortnight", False), ("\u30005/s\u2003", True), ("\ufeff5/s", False)],
)
def test_the_schemas_rate_pattern_is_the_cores_grammar(q, rate, core_accepts):
    assert bool(re.search(RATE_PATTERN, rate)) is core_accepts
    if core_accepts:
        q.set_limit("tests", rate=rate)
    else:
        with pytest.raises(ValueError):
            q.set_limit("tests", rate=rate)
    assert re.search(PER_PATTERN, "project") and not re.search(PER_PATTERN, "a\x85b")
