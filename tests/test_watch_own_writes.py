"""``events.watch`` wakes for every commit made after ``watch()`` returned, however soon after.

Reported as "a stream stays asleep after a change made through its own handle, until some later
commit arrives". The cause was not the handle: the thread that waits for a queue's commits took
its starting position itself, once it first ran, and a thread started by ``watch()`` waits for
the GIL, so a caller writing at once could commit, let the stream's first look run, and commit
again, all before that thread's first step: the second commit was then in neither the first look
nor the wait, and the stream slept until a later one. Now ``watch()`` takes that position before
it returns.

Here the only writer is the watched handle itself (in this thread, or in another thread of the
process) or a second handle, so no later commit can rescue a missed wake-up: each change must be
reported on its own. Each test opens many streams in a row, starting to write the moment
``watch()`` returns, since the race was at a stream's start (without the fix about one stream in
three slept). Sync and async, both backends (``queue_url`` as in tests/test_backends_live.py).

The bound on each wait (``WITHIN``) is not a speed claim: a healthy stream reports within
milliseconds; one that slept through a commit would never report it, nothing else commits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from prismq_queue import Queue, events

BACKENDS = ["sqlite", "postgres"]
#: Seconds a step may take before the stream is declared asleep (see the module doc).
WITHIN = 10.0
#: Streams opened in a row per test: more chances for a race at a stream's start to show.
STREAMS = 20

Match = Callable[[events.Event], bool]


@pytest.fixture(params=BACKENDS)
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "own.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def q(queue_url):
    with Queue(queue_url) as queue:
        yield queue


def life(q: Queue) -> list[tuple[str, Callable[[], object], Match]]:
    """One task's life through `q` (enqueue, claim, complete) and a second task cancelled while
    queued: each step with the event that must follow it (matched once the step returned)."""
    s: dict[str, object] = {}

    def enqueue() -> None:
        s["id"] = q.enqueue("own", {"n": 1})

    def claim() -> None:
        [s["task"]] = q.claim("own-worker", types=["own"])

    def complete() -> None:
        q.complete(s["task"], {"ok": True})

    def cancel() -> None:
        s["other"] = q.enqueue("own.other")
        q.cancel(s["other"])

    return [
        ("enqueue", enqueue, lambda e: e.kind == "task.created" and e.task_id == s["id"]),
        ("claim", claim, lambda e: (e.kind, e.task_id, e.status) == ("task.status", s["id"], "running")),
        ("complete", complete, lambda e: (e.kind, e.task_id, e.status) == ("task.status", s["id"], "completed")),
        ("cancel", cancel, lambda e: (e.kind, e.task_id, e.status) == ("task.status", s["other"], "cancelled")),
    ]


class Writer:
    """A thread of this process that runs one step each time it is told to."""

    def __init__(self) -> None:
        self.todo: list[Callable[[], object] | None] = []
        self.go = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.go.acquire()
            step = self.todo.pop(0)
            if step is None:
                return
            try:
                step()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.error = e
            self.finished.release()

    def run(self, step: Callable[[], object]) -> Callable[[], bool]:
        """Start `step`; returns whether it has finished (raising what it raised)."""
        self.todo.append(step)
        self.go.release()
        done = [False]

        def finished() -> bool:
            if not done[0]:
                done[0] = self.finished.acquire(blocking=False)
                if done[0] and self.error is not None:
                    raise self.error
            return done[0]

        return finished


def in_this_thread(step: Callable[[], object]) -> Callable[[], bool]:
    step()
    return lambda: True


def failure(what: str, seen: list[events.Event]) -> AssertionError:
    got = [(ev.kind, ev.task_id, ev.status) for ev in seen]
    return AssertionError(f"the stream slept through the {what} (nothing else commits); it saw {got}")


Run = Callable[[Callable[[], object]], Callable[[], bool]]


def sync_lives(q: Queue, run: Run, through: Queue | None = None) -> None:
    """`STREAMS` streams on `q` in a row, each seeing a life written through `through` (`q`)."""
    for _ in range(STREAMS):
        with events.watch(q, interval=0.2, min_gap=0) as stream:
            for what, step, match in life(through or q):
                finished = run(step)  # at once: the first step races the stream's start
                seen: list[events.Event] = []
                deadline = time.monotonic() + WITHIN
                while not (finished() and any(match(ev) for ev in seen)):
                    if time.monotonic() > deadline:
                        raise failure(what, seen)
                    seen += stream.poll(timeout=0.2)


async def async_lives(q: Queue, run: Run) -> None:
    for _ in range(STREAMS):
        async with events.watch(q, interval=0.2, min_gap=0) as stream:
            for what, step, match in life(q):
                finished = run(step)
                seen: list[events.Event] = []
                deadline = time.monotonic() + WITHIN
                while not (finished() and any(match(ev) for ev in seen)):
                    if time.monotonic() > deadline:
                        raise failure(what, seen)
                    try:
                        seen.append(await asyncio.wait_for(stream.__anext__(), 0.2))
                    except asyncio.TimeoutError:
                        pass


@pytest.fixture
def writer() -> Iterator[Writer]:
    w = Writer()
    yield w
    w.todo.append(None)
    w.go.release()
    w.thread.join(WITHIN)


@pytest.mark.timeout(180)
def test_sync_watch_wakes_for_its_own_handles_commits_made_in_another_thread(q, writer):
    sync_lives(q, writer.run)


@pytest.mark.timeout(180)
def test_sync_watch_wakes_for_its_own_handles_commits_made_in_its_thread(q):
    sync_lives(q, in_this_thread)


@pytest.mark.timeout(180)
def test_sync_watch_wakes_for_another_handles_commits_made_at_once(queue_url, q):
    # The same race, through a second handle: the handle was never the cause.
    with Queue(queue_url) as other:
        sync_lives(q, in_this_thread, through=other)


@pytest.mark.timeout(180)
async def test_async_watch_wakes_for_its_own_handles_commits_made_in_another_thread(q, writer):
    await async_lives(q, writer.run)


@pytest.mark.timeout(180)
async def test_async_watch_wakes_for_its_own_handles_commits_made_in_its_thread(q):
    await async_lives(q, in_this_thread)
