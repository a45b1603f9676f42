"""Periodic tasks' surfaces, on both backends: the CLI (`prismq-queue schedules`), the REST API
(`/api/queue/schedules`, admin scope for writes) and the dashboard's Schedules panel."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from conftest import cli_runner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from prismq_queue import Queue, web  # noqa: E402
from prismq_queue.cli import main  # noqa: E402

# The browser test's fixtures and helpers (a module-scoped server, worker and chromium).
import test_dashboard_browser as browser  # noqa: E402
from dashboard_helpers import FULL  # noqa: E402

browser_paths, stack, driver = browser.browser_paths, browser.stack, browser.driver

STATIC = Path(web.__file__).resolve().parent / "static"
AUTH = web.Auth(
    tokens={
        "all": web.Token(scopes={"read", "write", "admin"}),
        "reader": web.Token(scopes={"read"}),
        "writer": web.Token(scopes={"read", "write"}),
    }
)


def h(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def queue(queue_url):
    with Queue(queue_url) as q:
        q.schedule("report.daily", "report", cron="0 6 * * *", tz="Europe/Prague", payload={"to": "ops"})
        q.schedule("refresh", "refresh", every=300, missed="catch_up", priority=3)
        yield q


# ---------------------------------------------------------------------- CLI
def test_cli_lists_schedules_as_a_table_and_as_json(queue, queue_url):
    runner = cli_runner()
    r = runner.invoke(main, ["schedules", "--db", queue_url])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "TYPE", "QUEUE", "WHEN"]
    assert "cron 0 6 * * * (Europe/Prague)" in r.stdout and "every 300s" in r.stdout
    assert "catch_up" in r.stdout and "active" in r.stdout
    r = runner.invoke(main, ["schedules", "--db", queue_url, "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [s["name"] for s in rows] == ["refresh", "report.daily"]
    assert rows[0]["options"] == {"priority": 3} and rows[0]["every"] == 300.0
    assert rows[1]["next_run"].endswith("+00:00")


def test_cli_pauses_resumes_and_removes_and_an_unknown_name_exits_3(queue, queue_url):
    runner = cli_runner()
    r = runner.invoke(main, ["schedules", "pause", "refresh", "--db", queue_url])
    assert r.exit_code == 0 and "schedule refresh paused" in r.stdout, r.output
    assert {s["name"]: s["paused"] for s in queue.schedules()} == {"refresh": True, "report.daily": False}
    assert "paused" in runner.invoke(main, ["schedules", "--db", queue_url]).stdout
    r = runner.invoke(main, ["schedules", "resume", "refresh", "--db", queue_url])
    assert r.exit_code == 0 and "resumed; next run" in r.stdout, r.output
    r = runner.invoke(main, ["schedules", "remove", "refresh", "--db", queue_url])
    assert r.exit_code == 0 and "removed" in r.stdout, r.output
    assert [s["name"] for s in queue.schedules()] == ["report.daily"]
    for action in ("pause", "resume", "remove"):
        r = runner.invoke(main, ["schedules", action, "refresh", "--db", queue_url])
        assert r.exit_code == 3, r.output
        assert "no schedule is named 'refresh'" in r.stderr


def test_cli_says_when_there_is_no_schedule(tmp_path):
    r = cli_runner().invoke(main, ["schedules", "--db", str(tmp_path / "empty.db")])
    assert r.exit_code == 0 and "no schedules" in r.stdout


# ---------------------------------------------------------------------- REST
@pytest.fixture
def client(queue):
    with TestClient(web.create_app(queue, auth=AUTH)) as c:
        yield c


def test_rest_lists_schedules_with_a_read_token(client):
    r = client.get("/api/queue/schedules", headers=h("reader"))
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [s["name"] for s in items] == ["refresh", "report.daily"]
    daily = items[1]
    assert (daily["cron"], daily["tz"], daily["every"], daily["paused"]) == ("0 6 * * *", "Europe/Prague", None, False)
    assert daily["payload"] == {"to": "ops"} and re.match(r"\d{4}-\d\d-\d\dT", daily["next_run"])
    assert client.get("/api/queue/schedules").status_code == 401


def test_rest_pause_resume_and_delete_need_the_admin_scope(client, queue):
    for token in ("reader", "writer"):
        assert client.post("/api/queue/schedules/refresh/pause", headers=h(token)).status_code == 403
        assert client.delete("/api/queue/schedules/refresh", headers=h(token)).status_code == 403
    r = client.post("/api/queue/schedules/refresh/pause", headers=h("all"))
    assert r.status_code == 200 and r.json()["paused"] is True, r.text
    r = client.post("/api/queue/schedules/refresh/resume", headers=h("all"))
    assert r.status_code == 200 and r.json()["paused"] is False, r.text
    r = client.delete("/api/queue/schedules/refresh", headers=h("all"))
    assert r.status_code == 200 and r.json() == {"name": "refresh", "removed": True}
    assert [s["name"] for s in queue.schedules()] == ["report.daily"]
    for method, path in (("post", "refresh/pause"), ("post", "refresh/resume"), ("delete", "refresh")):
        r = getattr(client, method)(f"/api/queue/schedules/{path}", headers=h("all"))
        assert r.status_code == 404 and "no schedule is named 'refresh'" in r.json()["detail"], r.text
    # A name no schedule could have (blank) is not found either, not a server error.
    assert client.post("/api/queue/schedules/%20/pause", headers=h("all")).status_code == 404


# ---------------------------------------------------------------------- dashboard
def test_the_dashboard_has_a_schedules_panel_fed_by_the_api(client):
    page = client.get("/")
    assert page.status_code == 200
    assert 'id="schedules-table"' in page.text
    headers = re.search(r'id="schedules-table">\s*<thead><tr>(.*?)</tr>', page.text).group(1)
    assert re.findall(r"<th[^>]*>([^<]+)</th>", headers) == ["Schedule", "When", "Next run", "State"]
    js = client.get("/static/js/schedules.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    # The panel reads /queue/schedules and shows each one's name, cron or interval, next run and pause.
    main_js = (STATIC / "js" / "main.js").read_text(encoding="utf-8")
    assert 'api("queue/schedules")' in main_js and "renderSchedules" in main_js
    for field in ("s.name", "s.cron", "s.every", "s.next_run", "s.paused"):
        assert field in js.text


@pytest.mark.skipif(sys.platform == "win32", reason="drives Debian's chromium, a Linux program")
def test_the_schedules_panel_in_a_browser(driver, stack):
    """The panel as a user sees it (tests/test_dashboard_browser.py's browser and server)."""
    stack.queue.schedule("nightly.report", "report", cron="0 3 * * *", tz="Europe/Prague")
    stack.queue.schedule("hourly", "refresh", every=3600)
    stack.queue.pause_schedule("hourly")
    browser.open_with_token(driver, stack, FULL)
    rows_of = lambda: browser.css(driver, "#schedules-table tbody tr")  # noqa: E731
    browser.wait_for(lambda: len(rows_of()) == 2, "both schedules in the panel")
    rows = {r.get_attribute("data-schedule"): r.text for r in rows_of()}
    assert "0 3 * * * (Europe/Prague)" in rows["nightly.report"] and "active" in rows["nightly.report"]
    assert "every 3600 s" in rows["hourly"] and "paused" in rows["hourly"]
    assert browser.text(driver, "#schedules-count") == "2"
