"""The in-memory task manager's contract, as the smallest code that meets it.

This is the specification the contract suite (test_manager_contract.py) checks, written as a
manager: a backend's ``BackgroundTaskManager(registry)`` runs coroutines in its own process and
tracks each as a *run* through ``run.status`` and ``registry.update_run(run)``.

* ``registry`` is the very object passed in; ``tasks`` maps run id -> asyncio task, empty at start.
* ``start_task(run, coro)`` is synchronous, called while an event loop runs, and returns
  ``run.run_id`` at once; the coroutine runs in the background.
* the run goes RUNNING when it starts, then COMPLETED with ``exit_code = 0``, FAILED with
  ``error_message = str(exc)``, or CANCELLED; each change is saved with ``registry.update_run``.
* however it ends, the run leaves ``tasks`` promptly (nothing waits between the end of the
  coroutine and its removal), and the run id may then be started again. Starting a run id that
  is still active is refused with ``ValueError`` (and the first run goes on).
* ``await cancel_task(run_id)``: False for an unknown or finished run; otherwise cancels it, waits
  for it to stop and returns True; the run ends CANCELLED, even when it was cancelled before its
  coroutine got to run.
* ``await wait_all()`` returns once every active run has finished; their exceptions do not
  propagate.
* ``get_active_task_count()``, ``get_active_task_ids()``, ``is_task_active(run_id)``.

Runs are duck-typed: any object with ``run_id``, ``status``, ``exit_code`` and ``error_message``
(the app's own pydantic model included). A status is stored as a member of the run's own status
enum when ``run.status`` holds one.
"""

from __future__ import annotations

import asyncio
from enum import Enum


def _status(run, value):
    current = getattr(run, "status", None)
    if isinstance(current, Enum):
        return type(current)(value)
    return value


class ReferenceTaskManager:
    def __init__(self, registry):
        self.registry = registry
        self.tasks = {}

    def start_task(self, run, coro):
        loop = asyncio.get_running_loop()
        if run.run_id in self.tasks:
            coro.close()
            raise ValueError(f"run {run.run_id!r} is still active")
        began = []
        task = loop.create_task(self._run(run, coro, began))
        self.tasks[run.run_id] = task

        def done(t):
            if not began:  # cancelled before its first step: the wrapper never ran
                coro.close()
                self._set(run, "cancelled")
            self._forget(run.run_id, t)

        task.add_done_callback(done)
        return run.run_id

    def _set(self, run, status, **fields):
        run.status = _status(run, status)
        for name, value in fields.items():
            setattr(run, name, value)
        self.registry.update_run(run)

    def _forget(self, run_id, task):
        if self.tasks.get(run_id) is task:
            del self.tasks[run_id]

    async def _run(self, run, coro, began):
        began.append(True)
        try:
            self._set(run, "running")
            await coro
            self._set(run, "completed", exit_code=0)
        except asyncio.CancelledError:
            self._set(run, "cancelled")
            raise
        except Exception as e:
            self._set(run, "failed", error_message=str(e))
        finally:
            self._forget(run.run_id, asyncio.current_task())

    async def cancel_task(self, run_id):
        task = self.tasks.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.wait({task})
        return True

    async def wait_all(self):
        while self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def get_active_task_count(self):
        return len(self.tasks)

    def get_active_task_ids(self):
        return list(self.tasks)

    def is_task_active(self, run_id):
        return run_id in self.tasks
