"""What every resource's routes of one router share: the queue, the thread pools its calls run in,
the snapshot cache, the dashboard's monitor and the authentication dependency."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

from fastapi import APIRouter, Request, Response, params
from fastapi.routing import APIRoute

from .._location import is_url
from .._prismq_queue import Queue
from ._auth import Auth, bearer_from_header, requires
from ._errors import route_class
from ._monitor import Monitor
from ._responses import ERRORS
from ._threads import ThreadPool

T = TypeVar("T")

# The caller of the request being answered (see ``caller_of``), for the cache's read-your-writes.
_CALLER: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("prismq_web_caller", default=None)
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def caller_of(request: Request) -> str:
    """Who is asking: the bearer token when one is given (as a digest: no secret is kept), else
    the client's address (with authentication off). Writes take no ``?token=``."""
    secret = bearer_from_header(request.headers.get("authorization"))
    if secret:
        return "token:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    return "host:" + (request.client.host if request.client is not None else "")


class SnapshotCache:
    """Short-lived results of the aggregate reads (``/queue/stats`` and project status).

    Their core queries count or list rows across the whole table (tens of milliseconds at
    hundreds of thousands of tasks), while dashboards poll them many times a second; the older
    queue API cached its stats for 2 s. An entry lives ``ttl`` seconds; a project's entries are
    dropped at once when a request through this router changes that project, and when a live
    event stream of this router sees a change in it, so a client that refetches after an event
    gets the change. ``ttl=0`` turns caching off. Task endpoints are never cached.

    Requests that miss while the same value is already being computed wait for that computation
    instead of starting their own (``fetch``): when an entry expires under load, every read
    thread used to recount the same rows at once, and task reads queued behind them.

    A caller reads its own writes: every write request through the router (any method but GET,
    HEAD and OPTIONS) marks its caller (``caller_of``) when it ends, and that caller's next reads
    take no value computed before the mark; they compute a fresh one, which then serves everyone.
    Others keep the cached value until it expires.
    """

    #: Marks kept at most; older ones go first (a mark older than ``ttl`` no longer matters).
    MAX_MARKS = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = float(ttl)
        # key -> (expires, generation, write count when its computation started, value)
        self._entries: dict[tuple[Any, ...], tuple[float, int, int, Any]] = {}
        self._generation: dict[Optional[str], int] = {}
        # key -> (generation, write count it was started at, the computation); event loop only
        self._inflight: dict[tuple[Any, ...], tuple[int, int, asyncio.Future[Any]]] = {}
        # Writes through the router so far, and caller -> (that count after its last write, when).
        self._writes = 0
        self._marks: dict[str, tuple[int, float]] = {}

    async def fetch(self, key: tuple[Any, ...], project: Optional[str], compute: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, the one being computed (when nothing changed since it started), or
        a fresh one from ``compute``."""
        cached = self.get(key, project)
        if cached is not None:
            return cached
        generation = self.generation(project)
        if self.ttl > 0:
            running = self._inflight.get(key)
            if running is not None and running[0] == generation and self._fresh_for_caller(running[1]):
                return await asyncio.shield(running[2])
        started = self._writes
        task = asyncio.ensure_future(compute())
        self._inflight[key] = (generation, started, task)
        try:
            # Shielded: a client that disconnects must not cancel what others wait for.
            result = await asyncio.shield(task)
        finally:
            inflight = self._inflight.get(key)
            if inflight is not None and inflight[2] is task:
                del self._inflight[key]
        self.put(key, project, generation, result, started=started)
        return result

    def generation(self, project: Optional[str]) -> int:
        return self._generation.get(project, 0)

    def get(self, key: tuple[Any, ...], project: Optional[str]) -> Any:
        entry = self._entries.get(key)
        if (
            entry is not None
            and entry[0] > time.monotonic()
            and entry[1] == self.generation(project)
            and self._fresh_for_caller(entry[2])
        ):
            return entry[3]
        return None

    def put(
        self, key: tuple[Any, ...], project: Optional[str], generation: int, value: Any, *, started: int = -1
    ) -> None:
        """``started``: the write count when the value's computation began (-1: unknown, so it
        is older than every mark)."""
        if self.ttl > 0 and generation == self.generation(project):
            if len(self._entries) > 1000:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            entry = self._entries.get(key)
            # Never replace a value with one whose computation began before it.
            if entry is None or entry[1] != generation or entry[2] <= started:
                self._entries[key] = (time.monotonic() + self.ttl, generation, started, value)

    def invalidate(self, project: Optional[str]) -> None:
        self._generation[project] = self.generation(project) + 1

    def wrote(self, caller: str) -> None:
        """A write request of ``caller`` ended: its next reads take nothing computed before."""
        self._writes += 1
        now = time.monotonic()
        if len(self._marks) >= self.MAX_MARKS:
            self._marks = {c: m for c, m in self._marks.items() if m[1] > now - self.ttl}
            while len(self._marks) >= self.MAX_MARKS:  # all recent: drop the oldest
                del self._marks[next(iter(self._marks))]
        self._marks.pop(caller, None)  # re-inserted last: the dict stays in mark order
        self._marks[caller] = (self._writes, now)

    def _fresh_for_caller(self, started: int) -> bool:
        """A value whose computation began at write count ``started`` holds the current
        caller's writes (True outside a request, or for a caller that wrote nothing)."""
        caller = _CALLER.get()
        mark = self._marks.get(caller) if caller is not None else None
        return mark is None or started >= mark[0]


def tracking_callers(base: type[APIRoute], cache: SnapshotCache) -> type[APIRoute]:
    """``base`` whose handlers name their caller to ``cache`` (``_CALLER``) and, for a write
    request, mark it once answered: before the response is sent, so the caller's next request
    already sees the mark."""

    class CallerRoute(base):  # type: ignore[misc, valid-type]
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            inner = super().get_route_handler()
            writes = bool(set(self.methods or ()) - _READ_METHODS)

            async def handler(request: Request) -> Response:
                caller = caller_of(request)
                reset = _CALLER.set(caller)
                try:
                    response: Response = await inner(request)
                    return response
                finally:
                    _CALLER.reset(reset)
                    if writes:
                        cache.wrote(caller)

            return handler

    return CallerRoute


@dataclass
class RouterContext:
    """One router's shared state, handed to each resource's ``build`` function.

    Every queue call runs in a thread: SQLite never blocks the event loop. The pools are the
    router's own (not anyio's default limiter, which the host app's sync endpoints share), and
    writes have one apart: while they wait for the write lock (other processes' workers hold it
    many times a second), reads, which WAL never blocks, must not queue behind them.
    """

    queue: Queue
    auth: Auth
    monitor: Monitor
    cache: SnapshotCache
    reads: ThreadPool
    writes: ThreadPool
    max_body_bytes: int

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the read pool."""
        return await self.reads.run(functools.partial(fn, *args, **kwargs) if args or kwargs else fn)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in the write pool."""
        return await self.writes.run(functools.partial(fn, *args, **kwargs) if args or kwargs else fn)

    def requires(self, scope: str, *, query_token: bool = False) -> list[params.Depends]:
        """``dependencies=`` of a route that needs ``scope`` (see ``_auth.requires``)."""
        return [requires(self.auth, scope, query_token=query_token)]

    def router(self) -> APIRouter:
        """An empty router of one resource: the route class that answers errors and limits
        bodies, and the error responses every route documents."""
        postgres = is_url(getattr(self.queue, "path", ""))  # io_error's wording (see _errors)
        routes = tracking_callers(route_class(self.max_body_bytes, postgres=postgres), self.cache)
        return APIRouter(route_class=routes, responses=ERRORS)
