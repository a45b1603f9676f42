"""The dashboard shows a failed task's attempts, each traceback on demand, in a real browser
(headless chromium; skipped without it unless PRISMQ_REQUIRE_BROWSER=1, see
test_dashboard_browser)."""

from __future__ import annotations

import sys

import pytest

import dashboard_helpers as helpers
from test_dashboard_browser import Stack, browser_paths, css, driver, open_with_token, text, wait_for  # noqa: F401

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="drives Debian's chromium, a Linux program")

NO_WAIT = {"base": 0.0, "jitter": 0.0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, browser_paths):  # noqa: F811 - the imported fixture
    s = Stack(tmp_path_factory.mktemp("attempts-dashboard"))
    try:
        s.start_server()  # no worker: the test fails its task itself, through the public API
        yield s
    finally:
        s.close()


def load_rows(payload):
    def parse_row():
        raise KeyError(f"column {payload['column']} is missing <b>not markup</b>")

    parse_row()


def fail_twice(q):
    tid = q.enqueue("attempts.browser", {"column": "total"}, max_attempts=2, retry=NO_WAIT)
    for _ in range(2):
        [task] = q.claim("browser-test", types=["attempts.browser"])
        try:
            load_rows(task.payload)
        except KeyError as e:
            q.fail(task, e)
    assert q.get(tid).status == "failed"
    return tid


def test_a_failed_tasks_tracebacks_open_on_demand_from_the_failures_panel(driver, stack):  # noqa: F811
    tid = fail_twice(stack.queue)
    open_with_token(driver, stack, helpers.FULL)
    failure = f'#failures-table tbody tr[data-task-id="{tid}"]'
    wait_for(lambda: css(driver, failure), "the task in recent failures")
    css(driver, failure + " button.task-link")[0].click()
    article = f'#search-body article[data-task-id="{tid}"]'
    wait_for(lambda: css(driver, article + " details.attempt"), "the task's detail with its attempts")
    attempts = css(driver, article + " details.attempt")
    assert [a.get_attribute("data-seq") for a in attempts] == ["1", "2"]
    assert "FAILED ATTEMPTS (2)" in text(driver, article).upper()  # headings are styled in capitals
    summary = text(driver, article + ' details.attempt[data-seq="2"] summary')
    assert "attempt 2/2" in summary and "failed" in summary and "browser-test" in summary
    assert "KeyError" in summary and "column total is missing" in summary
    # Closed until asked for: the traceback is not shown yet.
    last_tb = article + ' details.attempt[data-seq="2"] pre.traceback'
    assert attempts[1].get_attribute("open") is None and not css(driver, last_tb)[0].is_displayed()
    css(driver, article + ' details.attempt[data-seq="2"] summary')[0].click()
    wait_for(lambda: css(driver, last_tb)[0].is_displayed(), "the traceback shown after a click")
    shown = css(driver, last_tb)[0].text
    assert "in parse_row" in shown and "in load_rows" in shown and "Traceback (most recent call last):" in shown
    assert "<b>not markup</b>" in shown and css(driver, "#search-body b") == []  # text, never markup
    # The first attempt stays closed.
    assert not css(driver, article + ' details.attempt[data-seq="1"] pre.traceback')[0].is_displayed()
