"""Who holds a run row: ``host-pid-runs-token``, and whether that holder is known to be gone
(a crashed process of this host), so a manager may take its runs over."""

from __future__ import annotations

import os
import socket
import sys
from typing import Optional

HOST = socket.gethostname()
# Tokens of the managers alive in this process: a holder id of this host and this pid whose token
# is not here belongs to an earlier process that had the same pid (a restarted container).
LIVE_TOKENS: set[str] = set()


def holder_id(token: str) -> str:
    """The lease holder of a manager's run rows."""
    return f"{HOST}-{os.getpid()}-runs-{token}"


def _parse_holder(holder: str) -> Optional[tuple[str, int, str]]:
    try:
        host, pid, kind, token = holder.rsplit("-", 3)
    except ValueError:
        return None
    if kind != "runs" or not pid.isdigit():
        return None
    return host, int(pid), token


def _pid_alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate it there
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    if sys.platform != "win32":  # called there alone; mypy checks what follows as Windows code
        raise NotImplementedError("Windows only")
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    synchronize, query_limited_information = 0x00100000, 0x1000
    handle = kernel32.OpenProcess(synchronize | query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
    try:
        return kernel32.WaitForSingleObject(handle, 0) == 0x102  # WAIT_TIMEOUT: not exited
    finally:
        kernel32.CloseHandle(handle)


def holder_is_dead(holder: Optional[str]) -> bool:
    """True when ``holder`` is a manager of this host whose process is known to be gone."""
    if not holder:
        return False
    parsed = _parse_holder(holder)
    if parsed is None:
        return False
    host, pid, token = parsed
    if host != HOST:
        return False
    if pid == os.getpid():
        return token not in LIVE_TOKENS
    return not _pid_alive(pid)
