"""The dashboard in a real browser: Debian's headless chromium, driven by Selenium through
chromedriver, against the app served by uvicorn in a subprocess and a worker in another
(``python -m prismq_queue worker``) running the handlers of ``dashboard_helpers``.

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian: ``apt-get install chromium
chromium-driver``) and the ``selenium`` package (in the ``test`` extra). Without them these tests
are skipped, unless ``PRISMQ_REQUIRE_BROWSER=1`` (CI sets it): then they fail, saying what to
install. ``PRISMQ_UPDATE_SCREENSHOT=1`` writes the screenshot to ``docs/dashboard.png``.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prismq_queue import Queue

import dashboard_helpers as helpers

HERE = Path(__file__).resolve().parent
DOCS_SCREENSHOT = HERE.parent / "docs" / "dashboard.png"
WAIT = 30.0  # seconds: the machine may be slow and loaded; nothing here measures speed

# Debian's chromium and chromedriver are Linux programs (under wine the test would find them at
# Z:\usr\bin and fail to start them); the page under test is the same on every platform.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="drives Debian's chromium, a Linux program")

INSTALL = (
    "install Debian's chromium and its driver (apt-get install chromium chromium-driver) and "
    "selenium (python -m pip install \".[test]\", as in the README)"
)


def _find(name: str, default: str) -> str | None:
    if Path(default).exists():
        return default
    return shutil.which(name)


def _browser_or_skip() -> tuple[str, str]:
    """The chromium and chromedriver paths; skips, or fails when PRISMQ_REQUIRE_BROWSER=1."""
    missing = []
    chromium = _find("chromium", "/usr/bin/chromium")
    driver = _find("chromedriver", "/usr/bin/chromedriver")
    if chromium is None:
        missing.append("chromium")
    if driver is None:
        missing.append("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"the browser test needs {', '.join(missing)}: {INSTALL}"
        if os.environ.get("PRISMQ_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PRISMQ_REQUIRE_BROWSER=1 and {message}", pytrace=False)
        pytest.skip(message)
    return chromium, driver  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, seconds: float = WAIT):
    deadline = time.monotonic() + seconds
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - e.g. an element replaced while being read
            last_error = e
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s" + (f" (last error: {last_error!r})" if last_error else ""))


# ---------------------------------------------------------------------------------- processes
class Stack:
    """The server and the worker, each a real process, on one database file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = str(root / "dash.db")
        self.gates = root / "gates"
        self.gates.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        self.server: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.queue = Queue(self.db)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.root / log_name, "ab")
        try:
            return subprocess.Popen(args, env=self.env, cwd=str(self.root), stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()  # the child has its own handle

    def start_server(self) -> None:
        self.server = self._spawn([sys.executable, str(HERE / "dashboard_helpers.py"), "serve", self.db, str(self.port)], "server.log")
        import urllib.request

        def up() -> bool:
            assert self.server.poll() is None, f"the server exited: {self.log('server.log')}"
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(up, "the server answering")

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(30)
            self.server = None

    def start_worker(self) -> None:
        self.worker = self._spawn(
            [sys.executable, "-m", "prismq_queue", "worker", "--db", self.db, "--handlers", "dashboard_helpers:registry",
             "--concurrency", "4", "--poll-interval", "0.2", "--shutdown-grace", "5", "--worker-id", "browser-test-worker"],
            "worker.log",
        )
        wait_for(lambda: any(w.id == "browser-test-worker" for w in self.queue.workers()), "the worker's first heartbeat")

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        for proc in (self.worker, self.server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.worker, self.server):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.queue.close()


@pytest.fixture(scope="module")
def browser_paths():
    return _browser_or_skip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, browser_paths):
    s = Stack(tmp_path_factory.mktemp("dashboard"))
    try:
        s.start_server()
        s.start_worker()
        yield s
    finally:
        # Let any gated handler finish, then stop both processes.
        for d in s.gates.glob("*"):
            if d.is_dir():
                for i in range(1, 11):
                    (d / str(i)).touch()
        s.close()


@pytest.fixture(scope="module")
def driver(browser_paths, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1440,1000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    d = webdriver.Chrome(service=Service(chromedriver), options=options)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


# ---------------------------------------------------------------------------------- page helpers
def css(d, selector):
    from selenium.webdriver.common.by import By

    return d.find_elements(By.CSS_SELECTOR, selector)


def visible(d, element_id) -> bool:
    from selenium.webdriver.common.by import By

    return d.find_element(By.ID, element_id).is_displayed()


def text(d, selector) -> str:
    found = css(d, selector)
    return found[0].text if found else ""


def open_page(d, stack, fragment=""):
    d.get("about:blank")  # a real page load, even when only the fragment differs
    d.get(stack.url + fragment)


def open_with_token(d, stack, secret):
    open_page(d, stack, f"#token={secret}")
    wait_for(lambda: visible(d, "dashboard") and text(d, "#conn-text") == "live", "the dashboard, live")


# ---------------------------------------------------------------------------------- the tests
def test_without_a_token_the_page_asks_for_one_and_shows_no_data(driver, stack):
    stack.queue.enqueue("dash.quick", {"n": 1}, queue="emails")  # there is data to hide
    open_page(driver, stack)
    driver.execute_script("sessionStorage.clear()")
    open_page(driver, stack)
    wait_for(lambda: visible(driver, "token-prompt"), "the token prompt")
    assert not visible(driver, "dashboard")
    assert "needs a token" in text(driver, "#token-reason")
    assert css(driver, "#queues-table tbody tr") == [] and css(driver, "#running-table tbody tr") == []
    assert driver.execute_script("return document.getElementById('tile-queued').textContent") == "-"

    # a token the server does not know: refused, still no data
    open_page(driver, stack, "#token=not-a-token")
    wait_for(lambda: visible(driver, "token-prompt") and "refused" in text(driver, "#token-reason"), "the refusal")
    assert css(driver, "#queues-table tbody tr") == []


def test_the_token_comes_from_the_fragment_and_leaves_the_address_bar(driver, stack):
    open_with_token(driver, stack, helpers.FULL)
    assert "token" not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('prismq.dashboard.token')") == helpers.FULL
    wait_for(lambda: css(driver, '#queues-table tbody tr[data-queue="emails"]'), "the emails queue in the table")
    wait_for(lambda: css(driver, '#workers-table tbody tr[data-worker-id="browser-test-worker"]'), "the worker")
    # a reload keeps the token (sessionStorage) although the URL no longer has it
    driver.refresh()
    wait_for(lambda: visible(driver, "dashboard") and text(driver, "#conn-text") == "live", "the dashboard after a reload")


def test_live_progress_appears_and_advances(driver, stack):
    open_with_token(driver, stack, helpers.FULL)
    gate = stack.gates / "live"  # the handler takes its next step when the test opens a gate
    gate.mkdir()
    tid = stack.queue.enqueue("dash.steps", {"steps": 4, "gate": str(gate), "message": "encoding video"}, queue="media")
    row = f'#running-table tbody tr[data-task-id="{tid}"]'

    def progress():
        found = css(driver, row)
        return found[0].get_attribute("data-progress") if found else None

    wait_for(lambda: progress() == "20", "the first step (20%) on the page")
    assert "step 1 of 4" in text(driver, row) and "encoding video" in text(driver, row)
    bar = css(driver, row + " .bar")[0]
    assert bar.get_attribute("aria-valuenow") == "20"
    worker_chip = '#workers-table tr[data-worker-id="browser-test-worker"]'
    wait_for(lambda: f"#{tid}" in text(driver, worker_chip), "the task among the worker's current tasks")

    (gate / "1").touch()  # the handler reports its next step only now
    wait_for(lambda: progress() == "40", "the second step (40%) on the page")
    assert "step 2 of 4" in text(driver, row)
    (gate / "2").touch()
    wait_for(lambda: progress() == "60", "the third step (60%) on the page")
    assert text(driver, "#conn-text") == "live"

    for i in (3, 4):
        (gate / str(i)).touch()
    wait_for(lambda: stack.queue.get(tid).status == "completed", "the task completing")
    wait_for(lambda: not css(driver, row), "the finished task leaving the running table")


def test_a_failed_task_shows_its_error_and_retry_runs_it_again(driver, stack):
    marker = stack.root / "fail-once"
    error = "disk full on <b>sda1</b> & more"
    tid = stack.queue.enqueue("dash.fail", {"marker": str(marker), "error": error}, queue="billing", max_attempts=1)
    wait_for(lambda: stack.queue.get(tid).status == "failed", "the task failing")
    open_with_token(driver, stack, helpers.FULL)
    failure = f'#failures-table tbody tr[data-task-id="{tid}"]'
    dead = f'#dead-table tbody tr[data-task-id="{tid}"]'
    wait_for(lambda: css(driver, failure) and css(driver, dead), "the task in recent failures and dead letters")
    # the error is shown as text: its markup is not markup on the page
    assert f"RuntimeError: {error}" in text(driver, failure) and "dead letter" in text(driver, failure)
    assert f"RuntimeError: {error}" in text(driver, dead)
    assert css(driver, "#failures-table b") == [] and css(driver, "#dead-table b") == []

    css(driver, dead + " button.retry")[0].click()
    wait_for(lambda: stack.queue.get(tid).status == "completed", "the retried task running again and completing")
    assert stack.queue.get(tid).result == {"ok": "second run"}
    messages = [lg.message for lg in stack.queue.logs(tid)]
    assert any("retry()" in m for m in messages), messages
    # the page follows: the task leaves the dead letters; the failure stays, recovered
    wait_for(lambda: not css(driver, dead), "the task leaving the dead letters")
    wait_for(lambda: "recovered" in text(driver, failure), "the failure marked recovered")


def test_retry_without_the_write_scope_says_not_allowed(driver, stack):
    tid = stack.queue.enqueue("dash.fail", {"error": "always fails"}, queue="billing", max_attempts=1)
    wait_for(lambda: stack.queue.get(tid).status == "failed", "the task failing")
    open_with_token(driver, stack, helpers.READER)
    dead = f'#dead-table tbody tr[data-task-id="{tid}"]'
    wait_for(lambda: css(driver, dead + " button.retry"), "the dead letter with its Retry button")
    css(driver, dead + " button.retry")[0].click()
    wait_for(lambda: "Not allowed" in text(driver, dead + " .row-note.error"), "the 'not allowed' message")
    assert "write" in text(driver, dead + " .row-note.error")
    assert css(driver, dead + " .row-note.error")[0].is_displayed()
    assert stack.queue.get(tid).status == "failed"  # nothing changed


def test_search_finds_a_task_by_id_and_by_idempotency_key(driver, stack):
    from selenium.webdriver.common.keys import Keys

    tid = stack.queue.enqueue("dash.quick", {"order": 42, "note": "<i>not markup</i>"}, queue="orders", idempotency_key="order-42")
    wait_for(lambda: stack.queue.get(tid).status == "completed", "the task completing")
    open_with_token(driver, stack, helpers.FULL)
    box = css(driver, "#search-input")[0]
    article = f'#search-body article[data-task-id="{tid}"]'
    for query, how in ((str(tid), "found by id"), ("order-42", "found by idempotency key")):
        box.clear()
        box.send_keys(query, Keys.ENTER)
        wait_for(lambda: css(driver, article) and how in text(driver, article), f"the task found by {query!r}")
        shown = text(driver, article)
        assert "completed" in shown and "order-42" in shown and "<i>not markup</i>" in shown and "dash.quick" in shown
        assert css(driver, "#search-body i") == []
    box.clear()
    box.send_keys("no-such-key", Keys.ENTER)
    wait_for(lambda: "No task has" in text(driver, "#search-body"), "the 'not found' message")


def test_the_page_reconnects_when_the_server_comes_back(driver, stack):
    open_with_token(driver, stack, helpers.FULL)
    stack.stop_server()
    wait_for(lambda: "reconnecting" in text(driver, "#conn-text"), "the page noticing the stream dropped")
    tid = stack.queue.enqueue("dash.quick", {"seconds": 0}, queue="after-restart", delay=3600)
    stack.start_server()
    wait_for(lambda: text(driver, "#conn-text") == "live", "the page live again")
    wait_for(lambda: css(driver, '#queues-table tbody tr[data-queue="after-restart"]'), "data made while it was away")
    assert stack.queue.get(tid).queue == "after-restart"


# Read in one script, so in one turn of the page's event loop: between two renders, never inside one.
PANELS_JS = """
const num = (t) => Number(String(t || "0").replace(/[^0-9]/g, "")) || 0;
const rows = (id) => [...document.querySelectorAll(`#${id} tbody tr`)];
const column = (id, i) => rows(id).reduce((sum, tr) => sum + num(tr.children[i].textContent), 0);
const chips = [...document.querySelectorAll("#workers-table .chip")].map((c) => c.textContent);
return {
  tile_running: num(document.getElementById("tile-running").textContent),
  tile_queued: num(document.getElementById("tile-queued").textContent),
  running_rows: rows("running-table").map((tr) => [tr.dataset.taskId, tr.dataset.progress]),
  queues_running: column("queues-table", 3), types_running: column("types-table", 4),
  queues_queued: column("queues-table", 1), types_queued: column("types-table", 2),
  chips,
};
"""


def panel_disagreements(p):
    problems = []
    running = len(p["running_rows"])
    if not p["tile_running"] == running == p["queues_running"] == p["types_running"] == len(p["chips"]):
        problems.append(f"running: tile {p['tile_running']}, table {running}, queues {p['queues_running']}, "
                        f"types {p['types_running']}, workers {len(p['chips'])}")
    if not p["tile_queued"] == p["queues_queued"] == p["types_queued"]:
        problems.append(f"queued: tile {p['tile_queued']}, queues {p['queues_queued']}, types {p['types_queued']}")
    for task_id, progress in p["running_rows"]:
        chip = next((c for c in p["chips"] if c.startswith(f"#{task_id} ")), None)
        shown = f" {progress}%" if progress else ""
        if chip is None or not chip.endswith(shown) or (not progress and chip.endswith("%")):
            problems.append(f"task {task_id}: {progress or 'no'}% running, worker shows {chip!r}")
    return problems


def test_the_panels_agree_with_each_other_while_tasks_flow(driver, stack):
    import threading

    open_with_token(driver, stack, helpers.FULL)
    stop = threading.Event()

    def flow():
        n = 0
        while not stop.is_set():
            n += 1
            stack.queue.enqueue("dash.steps", {"steps": 3, "step_seconds": 0.3}, queue="flow-a")
            stack.queue.enqueue("dash.quick", {"seconds": 0.4}, queue="flow-b")
            if n % 5 == 0:
                stack.queue.enqueue("dash.fail", {"error": "flowing"}, queue="flow-b", max_attempts=2)
            stop.wait(0.3)

    feeder = threading.Thread(target=flow, daemon=True)
    feeder.start()
    samples, busy = 0, 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            p = driver.execute_script(PANELS_JS)
            assert panel_disagreements(p) == [], p
            samples += 1
            busy += bool(p["running_rows"])
            time.sleep(0.1)
    finally:
        stop.set()
        feeder.join(10)
    assert samples >= 30 and busy >= 10, f"{samples} looks, {busy} with running tasks"


def layout_problems(d):
    return d.execute_script("""
        const problems = [];
        const width = window.innerWidth;
        if (document.documentElement.scrollWidth > width) problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
        for (const id of ["failures-table", "dead-table", "running-table", "workers-table", "queues-table", "types-table"]) {
          const card = document.getElementById(id).closest(".card");
          if (card.scrollWidth > card.clientWidth + 1) problems.push(`${id} scrolls sideways: ${card.scrollWidth} > ${card.clientWidth}`);
        }
        for (const b of document.querySelectorAll("#failures-table button.retry, #dead-table button.retry")) {
          const r = b.getBoundingClientRect(), card = b.closest(".card").getBoundingClientRect();
          if (r.width === 0 || r.left < card.left || r.right > card.right || r.right > width) problems.push(`a Retry button is cut: ${r.left}-${r.right} in ${card.left}-${card.right}`);
        }
        return problems;
    """)


def test_the_layout_fits_a_desktop_and_a_phone_with_retry_in_sight(driver, stack, tmp_path):
    q = stack.queue
    for error in ("ConnectionError: the payment gateway at https://payments.example.com/v2/charges did not answer "
                  "within 30 seconds after 3 attempts", "ValueError: " + "invoice-1187-" * 12):
        q.enqueue("dash.fail", {"error": error}, queue="billing-and-invoicing-eu", max_attempts=1)
    gate = stack.gates / "layout"
    gate.mkdir()
    q.enqueue("dash.steps", {"steps": 2, "gate": str(gate), "message": "rendering a very long report " * 4},
              queue="reports-with-a-long-name")
    open_with_token(driver, stack, helpers.FULL)
    wait_for(lambda: len(css(driver, "#failures-table button.retry")) >= 2 and css(driver, "#running-table tbody tr"),
             "failures with Retry and a running task")
    shots = os.environ.get("PRISMQ_SCREENSHOT_DIR")
    try:
        for width, height, mobile in ((1280, 1000, False), (1400, 1000, False), (390, 844, True)):
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
            try:
                wait_for(lambda: layout_problems(driver) == [], f"the layout at {width} px", seconds=5)
            except AssertionError as e:
                raise AssertionError(f"{e}: {layout_problems(driver)}") from None
            if shots:
                full = driver.execute_script("return document.documentElement.scrollHeight")
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                       {"width": width, "height": full, "deviceScaleFactor": 1, "mobile": mobile})
                png = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"]
                Path(shots, f"dashboard-{width}.png").write_bytes(base64.b64decode(png))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        for i in (1, 2):
            (gate / str(i)).touch()


def test_screenshot_with_real_data(driver, stack, tmp_path):
    q = stack.queue
    open_with_token(driver, stack, helpers.FULL)

    def chart_points():
        drawn = css(driver, "#chart canvas") and css(driver, "#chart")[0].get_attribute("data-points")
        return int(drawn) if drawn else 0

    def wave(n, seconds):
        for i in range(n):
            q.enqueue("dash.quick", {"to": f"user{i}@example.com", "seconds": seconds}, queue="emails")

    # Some history for the chart (a sample a second): a backlog drained by the worker, twice.
    start = chart_points()
    wave(24, 0.4)
    for i in range(8):
        q.enqueue("dash.quick", {"report": i}, queue="reports", delay=3600)
    wait_for(lambda: chart_points() >= start + 12, "a dozen samples on the chart", seconds=90)
    wave(16, 0.4)
    gates = []
    for name, steps in (("video", 5), ("thumbs", 4)):
        gate = stack.gates / f"shot-{name}"
        gate.mkdir()
        gates.append(gate)
        q.enqueue("dash.steps", {"steps": steps, "gate": str(gate), "message": f"processing {name}"}, queue="media")
    q.enqueue("dash.fail", {"error": "ConnectionError: the payment gateway did not answer"}, queue="billing", max_attempts=1)
    q.enqueue("dash.fail", {"error": "ValueError: invoice 1187 has no customer"}, queue="billing", max_attempts=1)
    (gates[0] / "1").touch()
    (gates[0] / "2").touch()
    wait_for(lambda: len(css(driver, "#running-table tbody tr")) >= 2, "two running tasks")
    wait_for(lambda: css(driver, '#running-table tbody tr[data-progress="50"]'), "the video task at 50%")
    wait_for(lambda: chart_points() >= start + 24, "two dozen samples on the chart", seconds=90)
    wait_for(lambda: q.stats(queue="emails")["queued"] == 0, "the emails drained")
    dead = q.stats()["failed"]
    wait_for(lambda: len(css(driver, "#dead-table tbody tr")) == dead, "every dead letter listed")
    wait_for(lambda: css(driver, '#types-table tbody tr[data-queue="media"]'), "the media queue in the tables")
    wait_for(lambda: "2" == text(driver, '#queues-table tbody tr[data-queue="media"] td:nth-child(4)'), "2 running in media")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1440, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        time.sleep(0.5)  # one frame for the layout at the new size (not a timing check)
        png = base64.b64decode(driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})["data"])
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        for gate in gates:
            for i in range(1, 6):
                (gate / str(i)).touch()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    target = DOCS_SCREENSHOT if os.environ.get("PRISMQ_UPDATE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
    target.write_bytes(png)
