"""Limits of the HTTP server ``prismq-queue serve`` runs (uvicorn), against clients that hold
connections without using them.

uvicorn bounds how long an idle keep-alive connection stays open, but not how long a client may
take to send a request's headers or its body, nor how many connections are open at once (its
``limit_concurrency`` answers 503 to every new request once the count is reached, idle
connections included, so a few hundred idle sockets would lock out every real client). Here:

- ``header_timeout``: a connection must send a request's complete headers within this many
  seconds of opening (or of the previous response); otherwise it gets ``408`` and is closed.
- ``body_timeout``: the body must have arrived within this many seconds after the headers;
  otherwise the connection is closed (the handler sees the client gone, nothing is written).
- ``max_connections``: open connections (HTTP and WebSocket). One more closes the connection that
  has waited longest without sending a request (a real client sends its request at once, so a
  flood of idle sockets pushes out only its own); when none is idle, the new one gets ``503``.
- ``keep_alive``: seconds an idle keep-alive connection stays open (uvicorn's own timer).
- ``ws_max_message``: the largest WebSocket message accepted (the API's clients send a token or
  a ping).

and the router's own limits, passed to ``create_app``: ``max_body_bytes`` (413 above it),
``ws_auth_timeout`` and ``ws_max_unauthenticated`` (WebSockets waiting for their first-message
token, see ``web._live.AuthGate``).

Behind a reverse proxy, the proxy enforces its own limits first; see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any, Optional

from ._live import AUTH_TIMEOUT, MAX_UNAUTHENTICATED
from ._router import DEFAULT_MAX_BODY_BYTES

log = logging.getLogger("prismq_queue.web")

_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_503 = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\nretry-after: 1\r\n\r\n"


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    ws_max_message: int = 64 * 1024
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ws_auth_timeout: float = AUTH_TIMEOUT
    ws_max_unauthenticated: int = MAX_UNAUTHENTICATED

    def __post_init__(self) -> None:
        for name in ("max_connections", "ws_max_message", "max_body_bytes", "ws_max_unauthenticated"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("header_timeout", "body_timeout", "keep_alive", "ws_auth_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

    def router_options(self) -> dict[str, Any]:
        """The ``create_app`` / ``create_router`` arguments that apply the router's limits."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "ws_auth_timeout": self.ws_auth_timeout,
            "ws_max_unauthenticated": self.ws_max_unauthenticated,
        }


def protocol_class(limits: HttpLimits) -> type:
    """uvicorn's HTTP protocol (httptools when installed, else h11) with the limits above."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class LimitedHTTPProtocol(base):  # type: ignore[misc]
        # "request": waiting for a request's headers (evictable); "body": reading its body;
        # "app": the app has the whole request.
        _phase = "request"
        _since = 0.0
        _timer: Optional[asyncio.TimerHandle] = None
        _cycle_seen: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._waiting_for("request", limits.header_timeout)
            self._make_room()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or self.transport is None or self.transport.is_closing():
                return
            if cycle is not self._cycle_seen:  # a new request's headers are complete
                self._cycle_seen = cycle
                if cycle.more_body:
                    self._waiting_for("body", limits.body_timeout)
                else:
                    self._serving()
            elif self._phase == "body" and not cycle.more_body:
                self._serving()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is self._cycle_seen):
                self._waiting_for("request", limits.header_timeout)

        def handle_websocket_upgrade(self, *args: Any) -> None:
            self._disarm()  # the WebSocket protocol takes over the connection
            self._phase = "websocket"
            super().handle_websocket_upgrade(*args)

        # -- bookkeeping
        def _waiting_for(self, phase: str, seconds: float) -> None:
            self._disarm()
            self._phase = phase
            self._since = self.loop.time()
            self._timer = self.loop.call_later(seconds, self._too_slow, phase)

        def _serving(self) -> None:
            self._disarm()
            self._phase = "app"

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self, phase: str) -> None:
            self._timer = None
            if self._phase != phase or self.transport.is_closing():
                return
            what, limit = ("headers", limits.header_timeout) if phase == "request" else ("body", limits.body_timeout)
            log.info(
                "closing a connection from %s: the request's %s did not arrive within %gs", _peer(self), what, limit
            )
            if phase == "request":
                self.transport.write(_408)
            self.transport.close()

        def _make_room(self) -> None:
            connections = self.server_state.connections
            if len(connections) <= limits.max_connections:
                return
            idle = [
                c
                for c in connections
                if c is not self and getattr(c, "_phase", None) == "request" and not c.transport.is_closing()
            ]
            if idle:
                oldest = min(idle, key=lambda c: c._since)
                oldest._disarm()
                oldest.transport.close()
                return
            log.warning(
                "refusing a connection from %s: %d connections are open (max_connections)",
                _peer(self),
                len(connections) - 1,
            )
            self._disarm()
            self.transport.write(_503)
            self.transport.close()

    return LimitedHTTPProtocol


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return f"{client[0]}:{client[1]}" if client else "?"


# Files the process needs besides its connections: the database (each connection holds the file,
# its WAL and shared memory), the workers' pipes, logs, the listening socket.
RESERVED_FILES = 64


def fit_to_open_files(limits: HttpLimits) -> HttpLimits:
    """Keep ``max_connections`` below the process's limit on open files (each connection is one),
    so that a flood meets serve's limit, not a failing ``accept()``. POSIX: the soft limit is
    raised toward the hard one first. Windows has no such per-process limit."""
    try:
        import resource
    except ImportError:
        return limits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limits.max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(1, soft - RESERVED_FILES)
        log.warning(
            "max_connections lowered from %d to %d: this process may open %d files at most (ulimit -n)",
            limits.max_connections,
            fitted,
            soft,
        )
        return replace(limits, max_connections=fitted)
    return limits


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` arguments that apply ``limits``."""
    return {
        "http": protocol_class(limits),
        "timeout_keep_alive": limits.keep_alive,
        "ws_max_size": limits.ws_max_message,
    }
