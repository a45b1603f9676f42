"""The dashboard's Limits panel in a real browser (issue 20): a limit set on the queue shows its
slots in use against its concurrency, the tasks waiting on it and its rate, while a worker in
another process runs the limited tasks. Same stack and fixtures as tests/test_dashboard_browser.py
(chromium, chromedriver and selenium; skipped without them unless PRISMQ_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import sys

import dashboard_helpers as helpers
import pytest
from test_dashboard_browser import (  # noqa: F401 - fixtures
    browser_paths,
    css,
    driver,
    open_with_token,
    stack,
    text,
    wait_for,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="drives Debian's chromium, a Linux program")


def test_the_limits_panel_shows_slots_in_use_waiting_tasks_and_the_rate(driver, stack):  # noqa: F811
    q = stack.queue
    open_with_token(driver, stack, helpers.FULL)
    wait_for(lambda: text(driver, "#limits-empty") == "No limit is set.", "the empty Limits panel")

    q.set_limit("limited", concurrency=1)
    q.set_limit("limited", type="dash.steps", rate="30/min")
    gate = stack.gates / "limited"
    gate.mkdir()
    ids = [q.enqueue("dash.steps", {"steps": 1, "gate": str(gate)}, queue="limited") for _ in range(2)]
    row = '#limits-table tbody tr[data-queue="limited"][data-type=""]'
    typed = '#limits-table tbody tr[data-queue="limited"][data-type="dash.steps"]'

    # The worker (concurrency 4) runs one of the two: the limit holds the other back.
    wait_for(lambda: "1 / 1 (full)" in text(driver, row), "one slot of one in use, on the page")
    cells = [c.text for c in css(driver, row + " td")]
    assert cells[:2] == ["limited", "all types"] and cells[3] == "1", cells
    assert css(driver, row + " .bar")[0].get_attribute("aria-valuenow") == "100"
    assert "30/min" in text(driver, typed) and "left now" in text(driver, typed)
    assert text(driver, "#limits-count") == "2"
    assert sum(q.get(i).status == "running" for i in ids) == 1

    for _ in ids:  # each run passes its gate; the second starts once the first freed the slot
        (gate / "1").touch()
    wait_for(lambda: all(q.get(i).status == "completed" for i in ids), "both limited tasks done")
    wait_for(lambda: "0 / 1" in text(driver, row), "the slot free again, on the page")
    q.remove_limit("limited")
    q.remove_limit("limited", type="dash.steps")
    wait_for(lambda: text(driver, "#limits-empty") == "No limit is set.", "the panel empty again")
