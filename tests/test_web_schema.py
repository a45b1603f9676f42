"""The REST API's OpenAPI schema says what the API does (issue 15, point 14): the documented
statuses and media types, bounds that are the core's, strict types, 405 for wrong methods,
errors located where the bad value is. test_web_fuzz.py runs Schemathesis over the same schema."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import web  # noqa: E402

AUTH = web.Auth(tokens={"all": web.Token(scopes={"read", "write", "admin"})})
ALL = {"Authorization": "Bearer all"}


@pytest.fixture
def client(queue):
    with TestClient(web.create_app(queue, auth=AUTH)) as c:
        yield c


@pytest.fixture
def spec(client):
    return client.get("/openapi.json").json()


def op(spec, path, method):
    return spec["paths"][f"/api{path}"][method]


# ============================================================ what the schema documents
BODY_ROUTES = [
    ("/queue/enqueue", "post"),
    ("/projects/{project_id}/queue/add", "post"),
    ("/projects/{project_id}/queue/{item_id}/priority", "put"),
    ("/queue/clear", "post"),
]


@pytest.mark.parametrize("path, method", BODY_ROUTES)
def test_routes_with_a_body_document_400_and_413_as_json_errors(spec, path, method):
    responses = op(spec, path, method)["responses"]
    for code in ("400", "413", "422"):
        assert code in responses, (path, code)
    assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}


def test_metrics_documents_its_text_and_its_json_errors(spec):
    responses = op(spec, "/metrics", "get")["responses"]
    assert list(responses["200"]["content"]) == ["text/plain"]
    for code in ("401", "403", "500", "503"):
        assert list(responses[code]["content"]) == ["application/json"], code


def test_event_streams_document_one_event_with_json_data(spec):
    for path in ("/queue/events", "/projects/{project_id}/queue/events"):
        event = op(spec, path, "get")["responses"]["200"]["content"]["text/event-stream"]["schema"]
        assert event["properties"]["data"]["type"] == "string"
        assert event["properties"]["data"]["contentMediaType"] == "application/json"


def test_bounds_in_the_schema_are_the_cores(spec):
    params = {p["name"]: p["schema"] for p in op(spec, "/queue/statistics", "get")["parameters"]}
    assert params["window"]["minimum"] == 0.001  # the core counts milliseconds: less is zero
    for path, method, name in [("/queue/tasks/{task_id}", "get", "task_id"),
                               ("/projects/{project_id}/queue/{item_id}", "delete", "item_id")]:
        [p] = [p for p in op(spec, path, method)["parameters"] if p["name"] == name]
        assert p["in"] == "path" and p["schema"]["minimum"] == 1 and p["schema"]["maximum"] == 2**63 - 1
    add = spec["components"]["schemas"]["ProjectAddRequest"]
    [timeout] = [s for s in add["properties"]["timeout_seconds"]["anyOf"] if s.get("type") == "number"]
    assert timeout["minimum"] == 0.001
    assert add["not"]["required"] == ["run_after_utc", "delay_seconds"]  # the 422 when both are given
    clear = spec["components"]["schemas"]["ClearRequest"]
    assert clear["properties"]["include_running"]["type"] == "boolean"


# ============================================================ what the API does
def test_both_run_after_utc_and_delay_seconds_is_422(client, queue):
    r = client.post("/api/projects/p1/queue/add", json={"type": "a", "run_after_utc": "2030-01-01T00:00:00Z",
                                                         "delay_seconds": 5}, headers=ALL)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "delay_seconds"]
    both_null = client.post("/api/projects/p1/queue/add", json={"type": "a", "run_after_utc": None, "delay_seconds": None},
                            headers=ALL)
    assert both_null.status_code == 201  # the schema's "not" forbids only two values, not two nulls
    assert queue.stats()["total"] == 1


@pytest.mark.parametrize(
    "url, body, loc",
    [
        ("/api/queue/clear", {"include_running": 0}, ["body", "include_running"]),
        ("/api/queue/clear", {"include_running": "true"}, ["body", "include_running"]),
        ("/api/queue/enqueue", {"type": "a", "run_after_utc": 0}, ["body", "run_after_utc"]),
        ("/api/queue/enqueue", {"type": "a", "priority": "10"}, ["body", "priority"]),
        ("/api/queue/enqueue", {"type": 5}, ["body", "type"]),
        ("/api/projects/p1/queue/add", {"type": "a", "delay_seconds": "5"}, ["body", "delay_seconds"]),
        ("/api/projects/p1/queue/add", {"type": "a", "delay_seconds": True}, ["body", "delay_seconds"]),
    ],
)
def test_no_lax_coercion(client, queue, url, body, loc):
    queue.enqueue("keep")
    r = client.post(url, json=body, headers=ALL)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    assert queue.stats()["queued"] == 1


@pytest.mark.parametrize(
    "method, url, allow",
    [
        ("DELETE", "/api/projects/p1/queue/status", "GET"),
        ("PUT", "/api/projects/p1/queue/add", "POST"),
        ("POST", "/api/queue/stats", "GET"),
        ("PATCH", "/api/queue/tasks/1", "GET"),
    ],
)
def test_a_wrong_method_is_405_with_allow(client, method, url, allow):
    r = client.request(method, url, headers=ALL)
    assert r.status_code == 405 and r.headers["allow"] == allow
    assert r.json()["detail"] == "Method Not Allowed" and r.json()["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    "url, loc",
    [
        ("/api/queue/tasks/abc", ["path", "task_id"]),
        ("/api/queue/tasks/-1", ["path", "task_id"]),
        ("/api/projects/bad%20id/queue/status", ["path", "project_id"]),
        ("/api/projects/p1/queue/status?limit=0", ["query", "limit"]),
        ("/api/queue/tasks?type=a&type=b", ["query", "type"]),  # one value, as the schema says
    ],
)
def test_errors_are_located_where_the_bad_value_is(client, url, loc):
    r = client.get(url, headers=ALL)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text


@pytest.mark.parametrize("body", [b'{"type": ', b"\xff\xfe{}", b"[1, 2"])
def test_a_body_that_is_not_json_is_400(client, queue, body):
    r = client.post("/api/queue/enqueue", content=body, headers={**ALL, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["request_id"], r.text
    assert queue.stats()["total"] == 0
