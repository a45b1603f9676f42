"""The CLI and the web models take the priority range and the defaults from the core (issue 18):
a task enqueued without them, from the shell or over HTTP, gets what the core itself gives."""

from __future__ import annotations

import json

import pytest

from conftest import cli_runner

import prismq_queue
from prismq_queue import Queue
from prismq_queue.cli import EXIT_USAGE, main


def core_defaults(path):
    with Queue(path) as q:
        task = q.get(q.enqueue("probe"))
    return task.priority, task.max_attempts


def cli(*args):
    return cli_runner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_enqueue_defaults_are_the_cores(tmp_path):
    db = tmp_path / "d.db"
    result = cli("enqueue", "--db", db, "x", "--json")
    assert result.exit_code == 0, result.output
    with Queue(db) as q:
        task = q.get(json.loads(result.stdout)["id"])
    assert (task.priority, task.max_attempts) == core_defaults(tmp_path / "core.db")
    help_text = cli("enqueue", "--help").output
    assert f"{prismq_queue.MIN_PRIORITY}<=x<={prismq_queue.MAX_PRIORITY}" in help_text


def test_cli_priority_range_is_the_cores(tmp_path):
    db = tmp_path / "d.db"
    for priority in (prismq_queue.MIN_PRIORITY, prismq_queue.MAX_PRIORITY):
        assert cli("enqueue", "--db", db, "x", "--priority", priority).exit_code == 0
    for priority in (prismq_queue.MIN_PRIORITY - 1, prismq_queue.MAX_PRIORITY + 1):
        refused = cli("enqueue", "--db", db, "x", "--priority", priority)
        assert refused.exit_code == EXIT_USAGE and "--priority" in refused.output


def test_web_models_use_the_cores_range_and_defaults(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from prismq_queue import web

    default_priority, default_attempts = core_defaults(tmp_path / "core.db")
    with Queue(tmp_path / "w.db") as q, TestClient(web.create_app(q, auth=web.Auth.disabled())) as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        for model in ("EnqueueTaskRequest", "ProjectAddRequest"):
            fields = schemas[model]["properties"]
            assert fields["priority"]["minimum"] == prismq_queue.MIN_PRIORITY, model
            assert fields["priority"]["maximum"] == prismq_queue.MAX_PRIORITY, model
            assert fields["priority"]["default"] == default_priority, model
            assert fields["max_attempts"]["default"] == default_attempts, model
        response = client.post("/api/queue/enqueue", json={"type": "x"})
        assert response.status_code in (200, 201), response.text
        task = q.get(response.json()["task_id"])
        assert (task.priority, task.max_attempts) == (default_priority, default_attempts)
