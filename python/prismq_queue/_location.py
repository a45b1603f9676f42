"""Where a queue lives: a file path (SQLite) or a ``postgresql://`` URL (issue 19).

A URL is not a path: it is never made absolute, checked for existence or given a directory, and
it may hold a password, which :func:`shown` removes before anything prints or logs it.
"""

from __future__ import annotations

import os
import re
from typing import Union

Location = Union[str, "os.PathLike[str]"]

_SCHEMES = ("postgresql://", "postgres://")
# user:password@ in the authority (everything up to the first "/" or "?").
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z]+://)(?P<user>[^/?@:]*):[^/?]*@")
_PASSWORD_PARAM = re.compile(r"(?i)(^|&)password=[^&]*")


def is_url(location: Location) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (any case), as the core decides."""
    return isinstance(location, str) and location[:13].lower().startswith(_SCHEMES)


def shown(location: Location, *, absolute: bool = False) -> str:
    """The location as people may see it: a path as given (made absolute if ``absolute``), a URL
    without its password (``user:secret@host`` becomes ``user@host``; ``password=`` is dropped)."""
    if not is_url(location):
        return os.path.abspath(location) if absolute else os.fspath(location)
    text = str(location)
    text = _USERINFO.sub(lambda m: m["scheme"] + m["user"] + "@", text, count=1)
    base, sep, query = text.partition("?")
    if not sep:
        return base
    query = _PASSWORD_PARAM.sub("", query).lstrip("&")
    return f"{base}?{query}" if query else base


def for_opening(location: Location) -> str:
    """What to hand to ``Queue()`` from another directory or process: a path made absolute, a
    URL unchanged (password included: it is needed to connect)."""
    return str(location) if is_url(location) else os.path.abspath(location)
