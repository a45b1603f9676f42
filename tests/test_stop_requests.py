"""How serve and workers are asked to stop, on every platform: serve's request to an embedded
worker, Ctrl-Break on Windows, and the console close / logoff / shutdown events (a Windows
service's stop) that Python's signal module does not deliver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from serve_helpers import CTRL_BREAK_UNDER_WINE, TESTS, wait_until

from prismq_queue import Queue
from prismq_queue._console import CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, CTRL_SHUTDOWN_EVENT, ConsoleStop


def worker_argv(db, worker_id):
    # -v: its log lines (signal received, draining, stopped) end up in the test's report.
    return [sys.executable, "-m", "prismq_queue", "-v", "worker", "--db", str(db), "--worker-id", worker_id,
            "--handlers", "worker_handlers:REGISTRY", "--queues", "slow", "--shutdown-grace", "0.5",
            "--stop-on-stdin-eof"]


@pytest.fixture
def handlers_importable(monkeypatch):
    # serve's WorkerProcess starts the worker with this process's environment.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a worker that hangs shows its threads (below)


def wait_or_dump_stacks(proc, timeout):
    """The exit code; a process still running after ``timeout`` prints every thread's stack
    (POSIX: SIGABRT to its faulthandler) before the test fails."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if sys.platform != "win32":
            proc.send_signal(signal.SIGABRT)
            proc.wait(10)
        raise


def test_a_worker_that_serve_asks_to_stop_hands_its_task_back_and_exits_cleanly(tmp_path, handlers_importable):
    # On Windows serve sends Ctrl-Break and closes the worker's stdin; where Ctrl-Break cannot be
    # delivered the closed stdin must still make it drain, never a TerminateProcess mid-task.
    from prismq_queue.serve import WorkerProcess

    db = tmp_path / "q.db"
    with Queue(db) as q:
        slow = q.enqueue("slow_sync", {"seconds": 120}, queue="slow")
        w = WorkerProcess(0, "asked-1", worker_argv(db, "asked-1"))
        w.start()
        try:
            wait_until(lambda: q.get(slow).status == "running", timeout=90, what="the slow task running")
            w.ask_to_stop()
            assert wait_or_dump_stacks(w.proc, 60) == 0
            t = q.get(slow)
            assert (t.status, t.attempts) == ("queued", 0)  # handed back at the end of the grace
            assert q.workers() == []
        finally:
            w.kill()


def test_a_console_close_stops_and_holds_the_process_until_the_stop_is_done():
    stops = []
    handler = ConsoleStop(stops.append, hold=30)
    returned = threading.Event()
    for event in (CTRL_C_EVENT, CTRL_BREAK_EVENT):
        assert handler.handle(event) is False  # left to Python's SIGINT / SIGBREAK handler
    assert stops == []

    def windows_calls_it():
        assert handler.handle(CTRL_CLOSE_EVENT) is True
        returned.set()

    t = threading.Thread(target=windows_calls_it, daemon=True)
    t.start()
    wait_until(lambda: stops == [CTRL_CLOSE_EVENT], timeout=10, what="the stop to begin")
    time.sleep(0.2)
    assert not returned.is_set(), "returning lets Windows end the process before the stop is done"
    handler.finished()
    assert returned.wait(10)
    assert handler.handle(CTRL_SHUTDOWN_EVENT) is True and stops == [CTRL_CLOSE_EVENT]  # asked once only


@pytest.mark.skipif(sys.platform != "win32", reason="SetConsoleCtrlHandler is Windows'")
def test_the_console_handler_is_installed_and_called_by_windows_for_a_shutdown():
    from prismq_queue._console import on_console_end

    stops = []
    handler = on_console_end(stops.append, hold=30)
    assert handler is not None, "SetConsoleCtrlHandler refused the handler"
    callback = handler._callback  # what Windows calls, on a thread of its own
    threading.Timer(0.3, handler.finished).start()
    started = time.monotonic()
    assert callback(CTRL_SHUTDOWN_EVENT) == 1 and stops == [CTRL_SHUTDOWN_EVENT]
    assert time.monotonic() - started >= 0.25  # held until the stop was done
    assert callback(CTRL_C_EVENT) == 0 and stops == [CTRL_SHUTDOWN_EVENT]
    assert handler._callback is None  # finished() took it off Windows' list


@pytest.mark.skipif(sys.platform != "win32", reason="Ctrl-Break is Windows'; POSIX: test_cli's SIGTERM test")
@CTRL_BREAK_UNDER_WINE
def test_the_worker_command_drains_on_ctrl_break(tmp_path):
    db = tmp_path / "w.db"
    with Queue(db) as q:
        slow = q.enqueue("slow_sync", {"seconds": 120}, queue="slow")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(worker_argv(db, "brk-1")[:-1], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            creationflags=subprocess.CREATE_NEW_PROCESS_GROUP)
    try:
        with Queue(db) as q:
            wait_until(lambda: q.get(slow).status == "running", timeout=90, what="the slow task running")
            os.kill(proc.pid, signal.CTRL_BREAK_EVENT)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            t = q.get(slow)
            assert (t.status, t.attempts) == ("queued", 0)
            assert q.workers() == []
    finally:
        if proc.poll() is None:
            proc.kill()
