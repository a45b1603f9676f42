"""Running ``prismq-queue worker`` as a real process in tests: start it, read its stderr, stop it
portably (Ctrl-Break on Windows, SIGINT elsewhere), and count what its handlers ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

from serve_helpers import Lines, env
from wine import UNDER_WINE

TESTS = Path(__file__).resolve().parent


def console_script() -> list[str]:
    """The installed ``prismq-queue`` command: unlike ``python -m``, it does not put the current
    directory on the import path by itself."""
    name = "prismq-queue.exe" if sys.platform == "win32" else "prismq-queue"
    return [os.path.join(sysconfig.get_path("scripts"), name)]


class WorkerCLI:
    """``prismq-queue worker ARGS`` (by default through ``python -m prismq_queue``; ``command`` may
    be the console script or a wrapper) in ``cwd``, with the tests' handlers importable."""

    def __init__(self, *args, cwd=None, command=None, environ=None):
        kwargs = {}
        if sys.platform == "win32":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        self.proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "prismq_queue"]), "worker", *map(str, args)],
            cwd=cwd, env=env() if environ is None else environ, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,
        )
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def alive(self):
        return self.proc.poll() is None

    def interrupt(self):
        """Ctrl-C, portably (Ctrl-Break on Windows, where the child has its own process group)."""
        if sys.platform == "win32":
            self.proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def stop(self, timeout=60.0):
        """Clean-up for a test that checks nothing about the stop: Ctrl-C and wait for the exit
        (under wine, where Ctrl-Break cannot be delivered, the process is ended instead)."""
        if self.alive() and UNDER_WINE:
            self.proc.kill()
        elif self.alive():
            self.interrupt()
        return self.wait(timeout)

    def wait(self, timeout=60.0):
        code = self.proc.wait(timeout)
        self.out.join()
        self.err.join()
        return code

    def output(self):
        return f"--- stdout\n{self.out.text()}\n--- stderr\n{self.err.text()}"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def runs(path) -> Counter:
    """How often each task's handler ran to the end (fault_handlers' side file)."""
    p = Path(path)
    return Counter(int(line) for line in p.read_text(encoding="utf-8").split()) if p.exists() else Counter()
