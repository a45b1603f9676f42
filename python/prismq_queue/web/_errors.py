"""Errors as HTTP responses, authentication before anything else, and request ids.

Every route of the router uses the route class made by :func:`route_class`. It wraps FastAPI's
handler (body parsing, validation, the endpoint, serialising the response), so the router behaves
the same in whatever app mounts it, whatever exception handlers that app has:

- the bearer token is checked first (401, 403), before the body is even parsed;
- validation errors are 422 with field details (``loc``, ``msg``, ``type``);
- ``TaskNotFound`` is 404, ``InvalidArgument`` (the core refused a value) 422;
- a ``DatabaseError`` that is a lock held past ``busy_timeout`` is 503 with ``Retry-After``
  (the core has already retried until then), any other one 500;
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
from typing import Any, Callable, Coroutine, Optional

from fastapi import Request
from starlette.exceptions import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from ..errors import DatabaseError, InvalidArgument, TaskNotFound
from ._auth import Auth, bearer_from_header, check
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
    rid = request.headers.get("x-request-id")
    if rid and _REQUEST_ID.match(rid):
        return rid
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def error_body(status: int, detail: str, rid: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": rid}, status_code=status, headers=headers)


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


def is_busy(e: BaseException) -> bool:
    text = str(e).lower()
    return "busy" in text or "locked" in text


def response_for(exc: BaseException, request: Request, rid: str) -> Response:
    """The response for an exception raised while handling a request (see the module doc)."""
    if isinstance(exc, ApiError):
        return error_body(exc.status, exc.detail, rid, exc.headers)
    if isinstance(exc, FieldInvalid):
        return validation_body(exc.errors, rid)
    if isinstance(exc, RequestValidationError):
        return validation_body(field_errors(exc.errors()), rid)
    if isinstance(exc, HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error_body(exc.status_code, detail, rid, dict(exc.headers or {}))
    if isinstance(exc, TaskNotFound):
        return error_body(404, str(exc), rid)
    if isinstance(exc, InvalidArgument):
        return validation_body([{"loc": ["body"], "msg": str(exc), "type": "value_error"}], rid)
    if isinstance(exc, DatabaseError) and is_busy(exc):
        log.warning("request %s %s %s: database busy past busy_timeout: %s", rid, request.method, request.url.path, exc)
        return error_body(503, "the queue database is busy; retry shortly", rid, {"Retry-After": "1"})
    log.error("request %s %s %s failed", rid, request.method, request.url.path, exc_info=exc)
    return error_body(500, "internal error", rid)


def route_class(auth: Auth) -> type[APIRoute]:
    """An APIRoute subclass bound to ``auth``. Endpoints say what they need with attributes set by
    :func:`needs`: ``_prismq_scope`` and ``_prismq_query_token`` (SSE: token also from ``?token=``)."""

    class PrismqRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            inner = super().get_route_handler()
            scope: Optional[str] = getattr(self.endpoint, "_prismq_scope", None)
            query_token: bool = getattr(self.endpoint, "_prismq_query_token", False)

            async def handler(request: Request) -> Response:
                started = time.perf_counter()
                rid = request_id(request)
                request.state.request_id = rid
                try:
                    project_id = request.path_params.get("project_id")
                    if scope is not None:
                        secret = bearer_from_header(request.headers.get("authorization"))
                        if secret is None and query_token:
                            secret = request.query_params.get("token") or None
                        token = auth.lookup(secret)
                        refused = check(token, secret is not None, scope, project_id)
                        if refused is not None:
                            status, detail, headers = refused
                            response: Response = error_body(status, detail, rid, headers)
                            response.headers["X-Request-ID"] = rid
                            return response
                        request.state.token = token
                    if project_id is not None and not valid_project_id(project_id):
                        response = validation_body(
                            [
                                {
                                    "loc": ["path", "project_id"],
                                    "msg": "a project id is 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
                                    "type": "string_pattern_mismatch",
                                }
                            ],
                            rid,
                        )
                    else:
                        response = await inner(request)
                except Exception as exc:  # noqa: BLE001 - every error becomes a clean response
                    response = response_for(exc, request, rid)
                response.headers["X-Request-ID"] = rid
                # Time spent in the app (auth, validation, queue calls, serialising), for clients
                # and load tests to tell it from time spent in queues before it.
                response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
                return response

            return handler

    return PrismqRoute


def needs(scope: str, *, query_token: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an endpoint with the scope it needs (checked by the route class)."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn._prismq_scope = scope  # type: ignore[attr-defined]
        fn._prismq_query_token = query_token  # type: ignore[attr-defined]
        return fn

    return mark
