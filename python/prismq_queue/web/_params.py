"""Path and query parameters several resources declare, bounded to what the core accepts."""

from __future__ import annotations

from typing import Any

from fastapi import Path, Query
from starlette.convertors import Convertor, register_url_convertor

from ._models import I64_MAX, MAX_NAME_BYTES, PROJECT_ID_PATTERN


class _ItemSegment(Convertor):  # type: ignore[type-arg]  # generic only in newer Starlette
    """An item id's path segment, but never the name of a sibling route: `DELETE
    /projects/p/queue/status` is then 405 (status is GET only), not a 422 for the id "status". Any
    other segment matches, so a bad id is a 422 located in the path."""

    regex = "(?!(?:status|add|events|ws)(?![^/]))[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: Any) -> str:
        return str(value)


# Routes use it as `{item_id:prismq_item}`.
register_url_convertor("prismq_item", _ItemSegment())

ProjectId = Path(
    ..., pattern=PROJECT_ID_PATTERN, description="The project; its tasks live in the queue 'project:{project_id}'."
)
# Task ids are positive 64-bit integers.
TaskId = Path(..., ge=1, le=I64_MAX, description="A task id.")
ItemId = Path(..., ge=1, le=I64_MAX, description="The item's task id.")
AfterId = Query(None, ge=0, le=I64_MAX, description="Paging: only ids below this one (newest first).")
NameFilter = Query(None, min_length=1, max_length=MAX_NAME_BYTES)
