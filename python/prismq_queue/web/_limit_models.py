"""The request and response bodies of the limits endpoints (``_routers.limits``), beside
``_models`` (which holds every other body) and built from its types."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from ._models import I64_MAX, Name, StrictInt, _Strict, _unicode_text


class LimitModel(BaseModel):
    """A limit and what it holds now (``Queue.limits()``)."""

    model_config = ConfigDict(extra="allow")

    queue: str
    type: Optional[str] = Field(None, description="The task type it limits; null: every task of the queue.")
    concurrency: Optional[int] = Field(None, description="Tasks running at once, at most (null: no such bound).")
    per: Optional[str] = Field(None, description="A payload key: the concurrency counts per value of it.")
    rate: Optional[str] = Field(None, description="Tasks started per period, at most, such as '100/min'.")
    running: int = Field(..., description="Tasks running now that the limit counts.")
    waiting: int = Field(..., description="Due tasks held back by the limit now.")
    tokens: Optional[float] = Field(None, description="Starts the rate allows now (null without a rate).")


# The core's grammar of a rate (model::limits::Rate::parse), spelled for JSON Schema so that the
# schema accepts exactly what the core does: Rust's trim, a count from 1 to 1,000,000,000 (leading
# zeros allowed), a unit in any ASCII case, plural forms of the long units.
_RUST_SPACE = "[\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"


def _any_case(word: str) -> str:
    return "".join(f"[{c}{c.upper()}]" for c in word)


_UNITS = "|".join(
    [_any_case(u) for u in ("s", "m", "h", "d")]
    + [_any_case(u) + "[sS]?" for u in ("sec", "second", "min", "minute", "hour", "day")]
)
RATE_PATTERN = (
    f"^{_RUST_SPACE}*0*(?:[1-9][0-9]{{0,8}}|1000000000){_RUST_SPACE}*/{_RUST_SPACE}*(?:{_UNITS}){_RUST_SPACE}*$"
)
# A payload key as the core takes it for `per`: no control character (Rust's char::is_control).
PER_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"


def _not_null(v: Any) -> Any:
    if v is None:
        raise ValueError("omit the field instead of sending null")
    return v


class LimitRequest(_Strict):
    """``PUT /queue/limits``: create or replace the limit of (queue, type). The schema says what
    the queue accepts; the queue itself judges ``concurrency``, ``per`` and ``rate``, and a value it
    refuses is 400 with its message (nothing is written)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "example": {"queue": "tests", "concurrency": 5, "per": "project", "rate": "100/min"},
            "anyOf": [{"required": ["concurrency"]}, {"required": ["rate"]}],
            "dependentRequired": {"per": ["concurrency"]},
        },
    )

    queue: Name = Field(..., description="The queue (not blank; at most 200 bytes as UTF-8).")
    type: Optional[Name] = Field(None, description="Only tasks of this type; null or absent: the whole queue.")
    # The bounds below the core's are the queue's to refuse (400 with its words), not the schema
    # validator's; a value past 64 bits never reaches it (422).
    concurrency: Annotated[
        Optional[StrictInt],
        BeforeValidator(_not_null),
        Field(le=I64_MAX, ge=-(I64_MAX + 1)),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": I64_MAX}),
    ] = Field(None, description="Tasks running at once, at most (1 or more); give it, rate, or both.")
    per: Annotated[
        Optional[str],
        BeforeValidator(_not_null),
        AfterValidator(_unicode_text),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 200, "pattern": PER_PATTERN}),
    ] = Field(None, description="Count the concurrency per value of this top-level payload key; needs concurrency.")
    rate: Annotated[
        Optional[str],
        BeforeValidator(_not_null),
        Field(max_length=100),
        AfterValidator(_unicode_text),
        WithJsonSchema({"type": "string", "maxLength": 100, "pattern": RATE_PATTERN}),
    ] = Field(None, description="Tasks started per period, at most: '100/min', '5/s', '1000/hours'.")


class LimitRemoved(BaseModel):
    queue: str
    type: Optional[str] = None
    removed: bool = Field(..., description="Always true: a missing limit is 404.")
