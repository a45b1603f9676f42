"""Errors as HTTP responses, authentication before anything else, and request ids.

Every route of the router uses the route class made by :func:`route_class`. It wraps FastAPI's
handler (body parsing, validation, the endpoint, serialising the response), so the router behaves
the same in whatever app mounts it, whatever exception handlers that app has:

- the route's security dependency (``_auth.ScopeCheck``) runs first (401, 403), before the body
  is even parsed;
- a body larger than ``max_body_bytes`` is 413, refused by its ``Content-Length`` before any of it
  is read, or as soon as a chunked body passes the limit (the connection is then closed);
- a body that is not JSON is 400; validation errors are 422 with field details (``loc``, ``msg``,
  ``type``);
- ``TaskNotFound`` is 404, ``InvalidArgument`` (the core refused a value) 422;
- a ``DatabaseError`` whose ``kind`` is a condition of the storage rather than a bug (a lock
  held past ``busy_timeout``, a full disk, a read-only file, an I/O error, a file deleted or
  replaced under the server) is 503 with the reason in the message, and ``Retry-After`` where
  retrying can help; any other one 500. ``io_error`` is worded for the queue's backend: a disk
  on SQLite, the connection to the server on PostgreSQL (no URL, so no password, in either);
- anything else is 500 with a generic body. Details and the stack trace go to the
  ``prismq_queue.web`` logger with the request id, which the body and the ``X-Request-ID`` header
  carry; no message of an unexpected exception ever reaches the client.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Callable, Optional

from fastapi import HTTPException as FastAPIHTTPException
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ..errors import DatabaseError, InvalidArgument, TaskNotFound
from ._auth import ScopeCheck
from ._models import valid_project_id

log = logging.getLogger("prismq_queue.web")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class ApiError(Exception):
    """An expected error with a message meant for the client."""

    def __init__(self, status: int, detail: str, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class FieldInvalid(Exception):
    """A 422 for one field, checked by the endpoint itself (nothing was written)."""

    def __init__(self, loc: list[Any], msg: str, type: str = "value_error") -> None:
        super().__init__(msg)
        self.errors = [{"loc": list(loc), "msg": msg, "type": type}]


# Request ids: a random prefix per process and a counter (unique, and cheaper than uuid4 per request).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def request_id(request: Any) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new 32-character id."""
    rid: Optional[str] = request.headers.get("x-request-id")
    if rid and _REQUEST_ID.match(rid):
        return rid
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def error_body(status: int, detail: str, rid: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": rid}, status_code=status, headers=headers)


class BodyTooLarge(FastAPIHTTPException):
    """Raised while reading a body past the limit. An HTTPException, so FastAPI's body reading
    lets it through instead of turning it into a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes", {"Connection": "close"})


def limited_receive(receive: Any, limit: int) -> Any:
    """``receive`` that raises BodyTooLarge once the body read so far passes ``limit`` bytes."""
    seen = 0

    async def receive_within_limit() -> Any:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit


def sends_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or request.headers.get("content-length", "0").strip() not in ("", "0")


def declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length")
    # uvicorn refuses a Content-Length that is not a number before the app sees the request.
    return declared is not None and declared.strip().isdigit() and int(declared) > limit


def unparsable_json(exc: RequestValidationError) -> Optional[str]:
    """The message for a body that is not JSON at all, else None (a field is invalid)."""
    for e in exc.errors():
        if e.get("type") == "json_invalid":
            where = e.get("loc", ("body",))[-1]
            why = (e.get("ctx") or {}).get("error", "JSON decode error")
            return f"the body is not valid JSON: {why} (at character {where})"
    return None


def field_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {
                "loc": [x if isinstance(x, (int, str)) else str(x) for x in e.get("loc", ())],
                "msg": str(e.get("msg", "invalid value")),
                "type": str(e.get("type", "value_error")),
            }
        )
    return out


def validation_body(errors: list[dict[str, Any]], rid: str) -> JSONResponse:
    return JSONResponse({"detail": errors, "request_id": rid}, status_code=422)


# DatabaseError.kind -> (what the client is told, Retry-After in seconds or None where waiting
# alone does not help). The core has already retried a busy database until busy_timeout.
_UNAVAILABLE: dict[str, tuple[str, Optional[int]]] = {
    "busy": ("the queue database is busy (another process held its write lock past busy_timeout); retry shortly", 1),
    "disk_full": (
        "the queue database's disk is full (or a file size limit was reached); nothing was written: "
        "retry once space is freed",
        30,
    ),
    "read_only": (
        "the queue database is read-only (file or directory permissions, or a read-only file system); "
        "nothing was written",
        None,
    ),
    "io_error": ("the queue database's disk reported an I/O error; nothing was written", 5),
    "file_moved": (
        "the queue database file was deleted or replaced while the server was running; "
        "writes are refused until the server is restarted",
        None,
    ),
}

# On PostgreSQL io_error is a server that cannot be reached or a connection lost, possibly
# during a COMMIT, whose outcome is then unknown: "nothing was written" would not hold.
_IO_ERROR_POSTGRES = (
    "the connection to the queue's PostgreSQL server failed (the server cannot be reached, or the "
    "connection was lost); a write under way may have been committed: check before repeating it, "
    "or repeat it with an idempotency key",
    5,
)


def response_for(exc: BaseException, request: Request, rid: str, *, postgres: bool = False) -> Response:
    """The response for an exception raised while handling a request (see the module doc);
    ``postgres`` when the router's queue is on PostgreSQL."""
    if isinstance(exc, ApiError):
        return error_body(exc.status, exc.detail, rid, exc.headers)
    if isinstance(exc, FieldInvalid):
        return validation_body(exc.errors, rid)
    if isinstance(exc, RequestValidationError):
        unparsable = unparsable_json(exc)
        if unparsable is not None:
            return error_body(400, unparsable, rid)
        return validation_body(field_errors(exc.errors()), rid)
    if isinstance(exc, HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_body(exc.status_code, detail, rid, dict(exc.headers or {}))
    if isinstance(exc, TaskNotFound):
        return error_body(404, str(exc), rid)
    if isinstance(exc, InvalidArgument):
        return validation_body([{"loc": ["body"], "msg": str(exc), "type": "value_error"}], rid)
    kind = exc.kind if isinstance(exc, DatabaseError) else None
    unavailable = _UNAVAILABLE.get(kind) if kind is not None else None
    if kind == "io_error" and postgres:
        unavailable = _IO_ERROR_POSTGRES
    if unavailable is not None:
        detail, retry_after = unavailable
        log.warning("request %s %s %s: database unavailable (%s): %s", rid, request.method, request.url.path, kind, exc)
        return error_body(503, detail, rid, {"Retry-After": str(retry_after)} if retry_after is not None else None)
    log.error("request %s %s %s failed", rid, request.method, request.url.path, exc_info=exc)
    return error_body(500, "internal error", rid)


def route_class(max_body_bytes: int, *, postgres: bool = False) -> type[APIRoute]:
    """An APIRoute subclass whose routes read at most ``max_body_bytes`` of a body and answer every
    error as the module doc says (``postgres``: the queue is on PostgreSQL). The route's
    ``ScopeCheck`` dependencies run first: FastAPI would read and parse the body before solving
    any dependency, and a request without a valid token must be refused before its body is read
    (it is solved again with the others, for nothing)."""

    class PrismqRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            inner = super().get_route_handler()
            scope_checks = [d.call for d in self.dependant.dependencies if isinstance(d.call, ScopeCheck)]
            reads_body = self.body_field is not None
            # Every query parameter of the API takes one value: a repeated one is refused, not
            # silently read as its last value.
            single_query = [f.alias for f in self.dependant.query_params]

            async def handler(request: Request) -> Response:
                started = time.perf_counter()
                rid = request_id(request)
                request.state.request_id = rid
                body_read = False
                try:
                    for scope_check in scope_checks:
                        await scope_check(request)
                    refused = refused_before_body(request, single_query, reads_body, max_body_bytes, rid)
                    if refused is not None:
                        response = refused
                    else:
                        if reads_body:
                            request = Request(request.scope, limited_receive(request.receive, max_body_bytes))
                        body_read = True  # read by FastAPI, or refused with 413 on the way (which closes)
                        response = await inner(request)
                except Exception as exc:  # noqa: BLE001 - every error becomes a clean response
                    response = response_for(exc, request, rid, postgres=postgres)
                if reads_body and not body_read and sends_body(request):
                    # Refused before its body was read: the server does not wait for the rest of it.
                    response.headers["Connection"] = "close"
                response.headers["X-Request-ID"] = rid
                # Time spent in the app (auth, validation, queue calls, serialising), for clients
                # and load tests to tell it from time spent in queues before it.
                response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
                return response

            return handler

    return PrismqRoute


def refused_before_body(
    request: Request, single_query: list[str], reads_body: bool, max_body_bytes: int, rid: str
) -> Optional[Response]:
    """The answer to a request refused by its path, query or declared size alone, else None."""
    project_id = request.path_params.get("project_id")
    if project_id is not None and not valid_project_id(project_id):
        return validation_body(
            [
                {
                    "loc": ["path", "project_id"],
                    "msg": "a project id is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                    "type": "string_pattern_mismatch",
                }
            ],
            rid,
        )
    repeated = [n for n in single_query if len(request.query_params.getlist(n)) > 1]
    if repeated:
        return validation_body(
            [{"loc": ["query", n], "msg": "give this parameter once", "type": "value_error"} for n in repeated], rid
        )
    if reads_body and declared_too_large(request, max_body_bytes):
        return response_for(BodyTooLarge(max_body_bytes), request, rid)
    return None
