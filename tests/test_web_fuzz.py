"""A Schemathesis run over the app's own OpenAPI schema (issue 15, point 14), so that the schema
and what the API does cannot drift apart again: every operation, with valid and invalid requests.

Bounded for CI: ``PRISMQ_FUZZ_EXAMPLES`` examples per operation and phase (15 by default), the
same examples on every run (derandomized), so that CI judges the code, not the draw; fuzz longer,
with fresh examples each run, with ``PRISMQ_FUZZ_EXAMPLES=500 python -m pytest tests/test_web_fuzz.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

pytest.importorskip("fastapi")

from prismq_queue import Queue, web  # noqa: E402

AUTH = web.Auth(tokens={"all": web.Token(scopes={"read", "write", "admin"})})
ALL = {"Authorization": "Bearer all"}

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis 4 needs Python 3.11+ (the test extra has it there)")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.core.failures import AcceptedNegativeData  # noqa: E402
from schemathesis.openapi.checks import RejectedPositiveData  # noqa: E402

EXAMPLES = int(os.environ.get("PRISMQ_FUZZ_EXAMPLES", "15"))
# The bounded run draws the same examples every time; a longer one explores.
DERANDOMIZE = "PRISMQ_FUZZ_EXAMPLES" not in os.environ
# An event stream never ends: Schemathesis reads its first event (`ready`) and validates it.
# Unknown query parameters are ignored, as OpenAPI allows: not generated as "invalid" requests.
CONFIG = SchemathesisConfig.from_str(
    """
max-stream-events = 1
[generation]
allow-extra-parameters = false
"""
)
_DIR = tempfile.mkdtemp(prefix="prismq-schema-")
_QUEUE = Queue(os.path.join(_DIR, "fuzz.db"))
# A Queue, not a path: Schemathesis runs the app's lifespan per test, and an app that opened its
# queue from a path would close it at each end.
APP = web.create_app(_QUEUE, auth=AUTH, events_interval=0.2)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


def _exact(value):
    """False when the value holds a number JSON Schema tools compare as a double (|x| >= 2**53):
    there neither the generator nor the validator can tell 2**64 - 1 (stored) from 2**64 (refused),
    nor the float 1e20 (stored) from the integer 10**20 (refused)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)):
        return abs(value) < 2**53
    if isinstance(value, list):
        return all(_exact(v) for v in value)
    if isinstance(value, dict):
        return all(_exact(v) for v in value.values())
    return True


@schema.hook("filter_failure")
def _only_what_json_schema_can_judge(context, failure, case, response):
    if isinstance(failure, (AcceptedNegativeData, RejectedPositiveData)):
        return _exact(case.body)
    return True


@pytest.fixture(scope="module", autouse=True)
def _fuzz_queue():
    yield
    try:
        from schemathesis.python.asgi import shutdown_lifespans

        shutdown_lifespans()
    finally:
        _QUEUE.close()
        shutil.rmtree(_DIR, ignore_errors=True)


@pytest.mark.timeout(600)
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          derandomize=DERANDOMIZE)
def test_the_api_does_what_its_schema_says(case):
    # Every check: no 5xx, documented statuses and media types, responses that match their
    # schema, invalid requests refused and valid ones accepted, 405 for undocumented methods.
    case.call_and_validate(headers=ALL, timeout=10)

