"""Windows console control events that Python's ``signal`` module does not cover.

Ctrl-C and Ctrl-Break arrive as SIGINT and SIGBREAK. Closing the console window, logging off and
shutting the machine down (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT; the last is
what a console program run as a service gets) have no signal: Windows ends the process as soon as
its handlers return. So the handler here starts the same clean stop as Ctrl-C, then holds the
process until that stop has finished (Windows allows a few seconds for a close, more for a
shutdown, then ends it anyway).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Optional

CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 0, 1, 2, 5, 6
ENDING_EVENTS = (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT)


class ConsoleStop:
    """Installed by :func:`on_console_end`: ``finished()`` lets a held handler return."""

    def __init__(self, stop: Callable[[int], None], hold: float) -> None:
        self._stop = stop
        self._hold = hold
        self._done = threading.Event()
        self._asked = threading.Event()
        self._callback: Any = None
        self._retired: Any = None

    def handle(self, event: int) -> bool:
        """The handler: True when the event was taken care of (Windows then ends the process)."""
        if event not in ENDING_EVENTS:
            return False  # Ctrl-C, Ctrl-Break: Python's own handler turns them into signals
        if not self._asked.is_set():  # once: to serve, a second request means "stop at once"
            self._asked.set()
            self._stop(event)
        self._done.wait(self._hold)
        return True

    def finished(self) -> None:
        # Off Windows' list before a held handler is let go, so that whoever waited on it sees it
        # removed; the callback object stays referenced (_retired), as Windows may still be inside it.
        if self._callback is not None:
            _set_handler(self._callback, False)
            self._retired, self._callback = self._callback, None
        self._done.set()


def on_console_end(stop: Callable[[int], None], hold: float) -> Optional[ConsoleStop]:
    """On Windows, call ``stop(event)`` on a console close, logoff or shutdown, then hold the
    process up to ``hold`` seconds until ``finished()`` is called. None elsewhere, or when no
    handler could be installed."""
    if sys.platform != "win32":
        return None
    import ctypes
    from ctypes import wintypes

    handler = ConsoleStop(stop, hold)
    callback = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)(lambda event: bool(handler.handle(event)))
    if not _set_handler(callback, True):
        return None
    handler._callback = callback  # kept alive: Windows calls it until it is removed
    return handler


def _set_handler(callback: Any, add: bool) -> bool:
    if sys.platform != "win32":  # called there alone; mypy checks what follows as Windows code
        raise NotImplementedError("Windows only")
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    return bool(kernel32.SetConsoleCtrlHandler(callback, add))


def send_ctrl_break(pid: int) -> bool:
    """Ctrl-Break to the process group ``pid`` (a child started with CREATE_NEW_PROCESS_GROUP).
    False when it cannot be delivered (no console shared with it). Unlike ``os.kill``, never
    falls back to TerminateProcess (CPython 3.12 does, which kills the child mid-task)."""
    if sys.platform != "win32":  # called there alone; mypy checks what follows as Windows code
        raise NotImplementedError("Windows only")
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    return bool(kernel32.GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid))
