"""A minimal thread pool for the router's queue calls, awaited from the event loop.

``loop.run_in_executor(ThreadPoolExecutor)`` costs, per call, a concurrent Future, a work item,
a semaphore, a lock and a chain of callbacks between two futures; under load that handoff was
~15% of the server's Python time. Here a call is one tuple on a ``SimpleQueue`` (C, lock-free for
the putter) and one ``call_soon_threadsafe`` back. Semantics are those of ``run_in_executor``: a
cancelled caller stops waiting, the call itself runs to its end and its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from queue import SimpleQueue
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_STOP = None


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.cancelled():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class ThreadPool:
    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._calls: SimpleQueue[Any] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for a call (approximate: only used to decide to start one)
        self._closed = False

    def _worker(self) -> None:
        calls = self._calls
        while True:
            self._idle += 1
            item = calls.get()
            self._idle -= 1
            if item is _STOP:
                return
            loop, fut, fn = item
            try:
                value = fn()
                ok = True
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                value, ok = e, False
            try:
                loop.call_soon_threadsafe(_resolve, fut, ok, value)
            except RuntimeError:  # the loop was closed meanwhile: nobody is waiting
                pass
            del item, loop, fut, fn, value

    def _spawn(self) -> None:
        with self._lock:
            if self._closed or len(self._threads) >= self.size:
                return
            t = threading.Thread(target=self._worker, name=f"{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    async def run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise RuntimeError("the router's thread pool was shut down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self._idle <= self._calls.qsize() and len(self._threads) < self.size:
            self._spawn()
        self._calls.put((loop, fut, fn))
        return await fut

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            n = len(self._threads)
        for _ in range(n):
            self._calls.put(_STOP)
