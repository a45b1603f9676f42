"""Issue 15, point 6: a task's `requires` is compared as the user wrote it. A worker whose
capabilities hold exactly the same values gets the task, floats and big integers included, and
the task shows its requirements back with the keys in the order they were given.
"""

from __future__ import annotations

import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prismq_queue import Queue

TRICKY = [0.1, 1e-7, 2.675, 0.1 + 0.2, 1 / 3, 5e-324, 1e300, -2.9205048131065683e-196, 2.2790121708605243e274,
          123456789.123456789, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(TRICKY),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=12,
)
requirements = st.dictionaries(st.text(min_size=1, max_size=8), json_values, min_size=1, max_size=5)


def _reordered(value):
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    return value


def test_tricky_numbers_route_to_a_worker_with_the_same_values(queue):
    for v in TRICKY:
        tid = queue.enqueue("t", requires={"v": v})
        got = queue.claim("w", capabilities={"v": v, "other": 1})
        assert [t.id for t in got] == [tid], v
        assert got[0].requires == {"v": v} and type(got[0].requires["v"]) is type(v)


def test_random_floats_route_exactly(queue):
    # Bit patterns across the whole range of doubles: one in ten used to be re-parsed off by an ulp.
    import random

    rng = random.Random(7)
    values = [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(600)]
    values = [v for v in values if v == v and abs(v) != float("inf")]
    lost = []
    for v in values:
        tid = queue.enqueue("t", requires={"v": v})
        got = queue.claim("w", capabilities={"v": v})
        if [t.id for t in got] != [tid]:
            lost.append(v)
            queue.cancel(tid)
        else:
            queue.complete(got[0])
    assert lost == []


def test_key_order_is_kept_and_does_not_matter_for_routing(queue):
    requires = {"zone": "eu", "gpu": {"model": "a100", "mem": 80}, "arch": "x86"}
    tid = queue.enqueue("t", requires=requires)
    t = queue.get(tid)
    assert json.dumps(t.requires) == json.dumps(requires)  # the order given, at every level
    assert json.dumps(t.as_dict()["requires"]) == json.dumps(requires)
    [got] = queue.claim("w", capabilities=_reordered({**requires, "extra": True}))
    assert got.id == tid


def test_requirements_are_compared_as_written(queue):
    # 1 and 1.0 are different JSON: a worker that has 1.0 is not one that has 1.
    tid = queue.enqueue("t", requires={"cuda": 12})
    assert queue.claim("w", capabilities={"cuda": 12.0}) == []
    assert queue.claim("w", capabilities={"cuda": 13}) == []
    assert [t.id for t in queue.claim("w", capabilities={"cuda": 12})] == [tid]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requirements)
def test_any_requirements_reach_a_worker_with_the_same_capabilities(queue, requires):
    tid = queue.enqueue("prop", requires=requires)
    t = queue.get(tid)
    assert t.requires == requires
    assert json.dumps(t.requires) == json.dumps(requires), "keys in the order given"
    assert queue.claim("nobody", types="prop", capabilities={"\x00unrelated": 1}) == []
    got = queue.claim("w", types="prop", capabilities=_reordered(requires))
    assert [x.id for x in got] == [tid]
    queue.complete(got[0])


def test_existing_lanes_keep_working_across_reopen(db_path):
    with Queue(db_path) as q:
        a = q.enqueue("t", requires={"b": 2.675, "a": 1})
    with Queue(db_path) as q:
        b = q.enqueue("t", requires={"a": 1, "b": 2.675})
        got = q.claim("w", capabilities={"a": 1, "b": 2.675}, limit=5)
        assert sorted(t.id for t in got) == [a, b]
