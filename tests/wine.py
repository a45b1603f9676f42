"""Whether the tests run in a Windows build of Python under wine (.ci/windows), not on Windows."""

from __future__ import annotations

import sys


def _under_wine() -> bool:
    if sys.platform != "win32":
        return False
    import ctypes

    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


UNDER_WINE = _under_wine()
