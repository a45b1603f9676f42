"""The error responses the routes document, and how a task is shown in a response."""

from __future__ import annotations

from typing import Any, Union

from .._prismq_queue import Task
from ._models import ErrorResponse, ValidationErrorResponse

# FastAPI's ``responses=``: status code -> what the OpenAPI schema says of it.
Responses = dict[Union[int, str], dict[str, Any]]

ERRORS: Responses = {
    401: {"model": ErrorResponse, "description": "No bearer token, or not a valid one (see WWW-Authenticate)."},
    403: {"model": ErrorResponse, "description": "The token lacks the scope, or may not access this project."},
    422: {"model": ValidationErrorResponse, "description": "Invalid field; nothing was written."},
    500: {"model": ErrorResponse, "description": "Internal error; the details are in the server log under request_id."},
    503: {"model": ErrorResponse, "description": "The database stayed locked past busy_timeout; retry (Retry-After)."},
}
# Routes that read a body: it may be unparsable or too large.
BODY_ERRORS: Responses = {
    400: {"model": ErrorResponse, "description": "The body is not JSON (or not UTF-8); nothing was written."},
    413: {
        "model": ErrorResponse,
        "description": "The body is larger than the router's max_body_bytes; nothing was read.",
    },
}
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "No such task (or item of this project)."}}
CONFLICT: Responses = {409: {"model": ErrorResponse, "description": "The task is not in a state that allows this."}}


def json_error(spec: dict[str, Any]) -> dict[str, Any]:
    """An entry of ERRORS spelled out as JSON content, for a route whose own media type is not JSON."""
    ref = {"$ref": f"#/components/schemas/{spec['model'].__name__}"}
    return {"description": spec["description"], "content": {"application/json": {"schema": ref}}}


def json_field(task: Task, name: str) -> Any:
    """A JSON field of ``task``; a damaged row's reads as None, as in ``Task.as_dict()``: one bad
    row never fails a listing."""
    return task.as_dict()[name] if task.damaged else getattr(task, name)


def task_view(task: Task) -> dict[str, Any]:
    """A task as the operations and dashboard endpoints show it: every field but its lease token."""
    view = task.as_dict()
    view.pop("lease_token", None)
    return view
