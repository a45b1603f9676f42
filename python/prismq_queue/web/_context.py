"""What every resource's routes of one router share: the queue, the thread pools its calls run in,
the snapshot cache, the dashboard's monitor and the authentication dependency."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar

from fastapi import APIRouter, params

from .._location import is_url
from .._prismq_queue import Queue
from ._auth import Auth, requires
from ._errors import route_class
from ._monitor import Monitor
from ._responses import ERRORS
from ._threads import ThreadPool

T = TypeVar("T")


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
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = float(ttl)
        self._entries: dict[tuple[Any, ...], tuple[float, int, Any]] = {}
        self._generation: dict[Optional[str], int] = {}
        # key -> (generation it was started at, the computation); touched only on the event loop
        self._inflight: dict[tuple[Any, ...], tuple[int, asyncio.Future[Any]]] = {}

    async def fetch(self, key: tuple[Any, ...], project: Optional[str], compute: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, the one being computed (when nothing changed since it started), or
        a fresh one from ``compute``."""
        cached = self.get(key, project)
        if cached is not None:
            return cached
        generation = self.generation(project)
        if self.ttl > 0:
            running = self._inflight.get(key)
            if running is not None and running[0] == generation:
                return await asyncio.shield(running[1])
        task = asyncio.ensure_future(compute())
        self._inflight[key] = (generation, task)
        try:
            # Shielded: a client that disconnects must not cancel what others wait for.
            result = await asyncio.shield(task)
        finally:
            inflight = self._inflight.get(key)
            if inflight is not None and inflight[1] is task:
                del self._inflight[key]
        self.put(key, project, generation, result)
        return result

    def generation(self, project: Optional[str]) -> int:
        return self._generation.get(project, 0)

    def get(self, key: tuple[Any, ...], project: Optional[str]) -> Any:
        entry = self._entries.get(key)
        if entry is not None and entry[0] > time.monotonic() and entry[1] == self.generation(project):
            return entry[2]
        return None

    def put(self, key: tuple[Any, ...], project: Optional[str], generation: int, value: Any) -> None:
        if self.ttl > 0 and generation == self.generation(project):
            if len(self._entries) > 1000:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            self._entries[key] = (time.monotonic() + self.ttl, generation, value)

    def invalidate(self, project: Optional[str]) -> None:
        self._generation[project] = self.generation(project) + 1


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
        return APIRouter(route_class=route_class(self.max_body_bytes, postgres=postgres), responses=ERRORS)
