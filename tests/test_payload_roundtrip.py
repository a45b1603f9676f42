"""Any JSON value a task carries comes back equal, through every path that decodes stored JSON.

Stored JSON is decoded by the json module's C scanner directly (``json.loads`` runs the same
scanner behind two Python calls and a regex, five times slower for a small payload); text the
scanner does not consume whole falls back to ``json.loads``. Hypothesis draws the values.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prismq_queue import Queue

# JSON as the queue stores it: 64-bit integers (signed, or unsigned up to 2**64 - 1), finite
# floats, any unicode text (surrogates cannot be encoded as UTF-8, so they are left out).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=values, result=values)
def test_any_json_value_round_trips(tmp_path, payload, result):
    with Queue(str(tmp_path / "rt.db")) as q:
        tid = q.enqueue("t", payload)
        assert q.get(tid).payload == payload
        [t] = q.claim("w")
        assert t.payload == payload
        q.complete(t, result=result)
        assert q.get(tid).result == result


def test_text_with_surrounding_whitespace_still_decodes(tmp_path):
    # Text the C scanner does not consume whole goes through json.loads: a task imported with a
    # hand-written payload keeps working.
    with Queue(str(tmp_path / "ws.db")) as q:
        tid = q.enqueue("t", {"a": [1, 2]})
    import sqlite3

    c = sqlite3.connect(str(tmp_path / "ws.db"))
    c.execute("UPDATE tasks SET payload = ' {\"a\": [1, 2]}  ' WHERE id = ?", (tid,))
    c.commit()
    c.close()
    with Queue(str(tmp_path / "ws.db")) as q:
        assert q.get(tid).payload == {"a": [1, 2]}


def test_dict_keys_come_back_in_the_order_they_were_given(tmp_path):
    """As json.dumps and json.loads keep them: a payload or result is not re-sorted on the way."""
    with Queue(tmp_path / "order.db") as q:
        payload = {"zeta": 1, "alpha": {"y": 2, "b": 3}, "mid": [{"k2": 0, "k1": 1}]}
        tid = q.enqueue("t", payload)
        [t] = q.claim("w")
        assert list(t.payload) == ["zeta", "alpha", "mid"]
        assert list(t.payload["alpha"]) == ["y", "b"] and list(t.payload["mid"][0]) == ["k2", "k1"]
        q.complete(t, {"second": 2, "first": 1})
        assert list(q.get(tid).result) == ["second", "first"]
        assert json.dumps(q.get(tid).payload) == json.dumps(payload)


def test_subclasses_of_json_types_are_stored_as_json_dumps_writes_them(tmp_path):
    # The encoder tells types apart by cheap exact checks first; subclasses (enums, a float or
    # str subclass, an OrderedDict, a tuple) must still come out as json.dumps writes them.
    import enum
    from collections import OrderedDict

    class Level(enum.IntEnum):
        HIGH = 3

    class Money(float):
        pass

    class Name(str):
        pass

    payload = {
        "level": Level.HIGH,
        "price": Money(2.5),
        "who": Name("ada"),
        "ordered": OrderedDict([("b", 1), ("a", [Money(0.5), True, None])]),
        "pair": (1, "x"),
        "big": 2**64 - 1,
        "neg": -(2**63),
    }
    with Queue(str(tmp_path / "sub.db")) as q:
        tid = q.enqueue("t", payload)
        assert q.get(tid).payload == json.loads(json.dumps(payload))
        [many] = q.enqueue_many([{"type": "t", "payload": payload}])
        assert q.get(many).payload == json.loads(json.dumps(payload))
