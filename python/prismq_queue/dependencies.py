"""Chains and groups of tasks, built on ``enqueue(..., after=[...])``.

``chain(q, steps)`` enqueues each step after the one before it: a step's handler finds the
previous step's result in ``ctx.dependency_results``. ``group(q, tasks, then=step)`` enqueues the
tasks, and ``then`` after all of them: its handler receives every result, by task id. A step is a
dict with ``enqueue``'s keywords (``type`` required), as ``enqueue_many`` takes. If a task fails
for good or is cancelled, what waits on it is cancelled with the reason in its error, and so on
down the chain, unless the waiting step says ``"on_dependency_failure": "run"``.

Each step is its own enqueue (a step's id is known only once it is written), so a process that
dies half-way leaves the first steps enqueued without the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple, Optional

from ._prismq_queue import Queue, Task
from .errors import InvalidArgument

__all__ = ["HELD_UNTIL", "Group", "chain", "group", "is_held"]

#: The due time a held task shows (the latest instant a task can have): no claim reaches it.
HELD_UNTIL = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)


def is_held(task: Task) -> bool:
    """Whether ``task`` is queued but held on its dependencies (``Task.waiting_on`` says which,
    on a task read with ``get``)."""
    return task.status == "queued" and task.run_after == HELD_UNTIL


class Group(NamedTuple):
    """What ``group`` enqueued: the tasks run side by side, and the one run after them all."""

    tasks: list[int]
    then: Optional[int]


def _step(step: Mapping[str, Any], after: list[int], what: str) -> dict[str, Any]:
    if not isinstance(step, Mapping) or "type" not in step:
        raise InvalidArgument(f"{what} must be a dict with enqueue's keywords, 'type' at least")
    item = dict(step)
    item["after"] = [*item.get("after", ()), *after]
    return item


def chain(queue: Queue, steps: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue ``steps`` so that each runs after the one before it has completed; returns their
    ids in order."""
    ids: list[int] = []
    for i, step in enumerate(steps):
        ids.append(queue.enqueue_many([_step(step, ids[-1:], f"step {i}")])[0])
    if not ids:
        raise InvalidArgument("chain needs at least one step")
    return ids


def group(
    queue: Queue,
    tasks: Iterable[Mapping[str, Any]],
    *,
    then: Optional[Mapping[str, Any]] = None,
) -> Group:
    """Enqueue ``tasks`` in one transaction and, when given, ``then`` to run after all of them
    have completed (it receives their results in ``ctx.dependency_results``)."""
    items = [_step(t, [], f"task {i}") for i, t in enumerate(tasks)]
    if not items:
        raise InvalidArgument("group needs at least one task")
    ids = queue.enqueue_many(items)
    last = None if then is None else queue.enqueue_many([_step(then, ids, "then")])[0]
    return Group(ids, last)
