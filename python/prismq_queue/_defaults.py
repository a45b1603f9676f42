"""The core's defaults and bounds that the CLI and the web models show and check, taken from the
native module so that they cannot drift from what the core does."""

from __future__ import annotations

from . import _prismq_queue as _native

MIN_PRIORITY: int = _native.MIN_PRIORITY
MAX_PRIORITY: int = _native.MAX_PRIORITY
DEFAULT_PRIORITY: int = _native.DEFAULT_PRIORITY
DEFAULT_MAX_ATTEMPTS: int = _native.DEFAULT_MAX_ATTEMPTS
