"""Running ``prismq-queue serve`` as a real process in tests: start it, read the URL it prints,
talk to it, interrupt it portably, and collect its output."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from wine import UNDER_WINE

TESTS = Path(__file__).resolve().parent
# For tests that stop a process with Ctrl-Break (Serve.interrupt on Windows).
CTRL_BREAK_UNDER_WINE = pytest.mark.wine_only_failure(
    reason="sends Ctrl-Break, which wine 8 cannot deliver to another process group (GenerateConsoleCtrlEvent "
           "fails in a headless wine; CPython 3.12's os.kill then terminates the process instead)"
)
URL = re.compile(r"dashboard: (http://[^/\s]+)/(?:#token=(\S+))?")


def env():
    e = dict(os.environ)
    # Spawned processes (serve and its workers) import the test handlers by module name.
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")])
    e.pop("PRISMQ_TOKEN", None)
    e.pop("PRISMQ_DB", None)
    return e


class Lines:
    """Drains a pipe in a thread (a full pipe would block the child) and keeps its lines."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe):
        for line in iter(pipe.readline, ""):
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, pattern, timeout=60.0):
        """The first match of ``pattern`` (a regex) in any line, waiting up to ``timeout``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + self.text())
                self._cond.wait(min(left, 0.5))

    def text(self):
        with self._cond:
            return "\n".join(self.lines)

    def join(self, timeout=30.0):
        self._thread.join(timeout)


class Serve:
    """``python -m prismq_queue serve ARGS`` in ``cwd``; ``start()`` waits for its banner."""

    def __init__(self, cwd, *args):
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prismq_queue", "serve", *map(str, args)],
            cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
        )
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)
        self.base = self.token = None

    def start(self, timeout=90.0):
        m = self.out.wait_for(URL.pattern, timeout)
        self.base = m.group(1)
        self.token = None if m.group(2) is None else unquote(m.group(2))  # the URL carries it encoded
        self.out.wait_for("Press Ctrl-C", timeout)
        return self

    @property
    def headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def interrupt(self):
        """Ctrl-C, portably (Ctrl-Break on Windows, where the child has its own process group)."""
        if sys.platform == "win32":
            self.proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout=90.0):
        code = self.proc.wait(timeout)
        self.out.join()
        self.err.join()
        return code

    def output(self):
        return f"--- stdout\n{self.out.text()}\n--- stderr\n{self.err.text()}"

    def close(self):
        if self.proc.poll() is None:
            if UNDER_WINE:  # Ctrl-Break cannot be delivered there (CTRL_BREAK_UNDER_WINE): end it
                self.proc.kill()
            else:
                self.interrupt()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def run_serve(cwd, *args, timeout=90.0):
    """Run serve expecting it to refuse to start: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "prismq_queue", "serve", *map(str, args)], cwd=cwd, env=env(),
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def wait_until(predicate, timeout=60.0, interval=0.1, what="the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(interval)
