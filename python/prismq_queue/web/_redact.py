"""Secrets never reach a log line: bearer tokens in ``?token=`` (EventSource and WebSocket URLs,
which uvicorn's access log and its WebSocket lines print whole), ``Authorization`` values and
``{"token": ...}`` first messages (the websockets library's frame log under ``-vv``).

:func:`install` adds :class:`RedactSecrets` to the loggers that print request lines (uvicorn's,
this package's web logger) and, when asked, to the handlers of the root logger, which every
propagating logger ends in (``serve`` sets those up, so there it covers every library too).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

_PATTERNS = [
    # ?token=..., &token=..., #token=... (not access_token: a word character before it)
    (re.compile(r"(?i)(\btoken=)[^&\s\"'<>#]+"), r"\1" + REDACTED),
    # {"token": "..."} and {'token': '...'}
    (re.compile(r"""(?i)(["']token["']\s*:\s*["'])[^"']*"""), r"\1" + REDACTED),
    # Authorization: Bearer ..., authorization=..., (b'authorization', b'...')
    (re.compile(r"""(?i)(\bauthorization\b["']?\s*[:=,]\s*(?:b?["'])?)[^"'\r\n]*"""), r"\1" + REDACTED),
    # any other "Bearer <credentials>"
    (re.compile(r"(?i)(\bbearer\s+)(?!\[redacted\])[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
]

# Loggers whose own records carry request lines: filters on a logger see only the records made
# there, so each is named (uvicorn.error prints WebSocket paths with their query).
REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "prismq_queue.web", "prismq_queue.serve")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record whose message holds a secret; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the handler's to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # Tracebacks are formatted later, by the handler: format them here, redacted.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactSecrets()


def _add_filter(target: Any) -> None:
    if not any(isinstance(f, RedactSecrets) for f in target.filters):
        target.addFilter(_FILTER)


def install(*, root_handlers: bool = False, loggers: Iterable[str] = REQUEST_LOGGERS) -> None:
    """Idempotent. ``root_handlers``: also every handler of the root logger (serve's logging)."""
    for name in loggers:
        _add_filter(logging.getLogger(name))
    if root_handlers:
        for handler in logging.getLogger().handlers:
            _add_filter(handler)
