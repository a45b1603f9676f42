"""The task manager adapter: ``QueuedTaskManager``, a drop-in for an in-memory ``BackgroundTaskManager``.

An application that runs background work as coroutines in its own process
(``mgr.start_task(run, coro)``) keeps doing exactly that; the queue-backed manager adds:

* every started run is also a task row of the queue file (type = the run's ``module_id``,
  payload = its ``parameters``, idempotency key = its ``run_id``), inserted directly in
  ``running`` and leased to this process, so other processes, the REST API and the dashboard see
  it and no worker ever claims it while it runs here. Its status follows the run's;
* durable work: ``register_task`` / ``schedule_task`` put tasks in the file that workers in any
  process execute, including a worker embedded in this manager when it has handlers;
* crash recovery: a run whose process died is re-run by a durable handler of its type when one is
  registered, otherwise marked failed with an error saying it was interrupted;
* ``create_task_manager``: the one setting that switches between the two managers.

When recovery runs
------------------
``await mgr.recover()`` runs it explicitly (call it at start-up, after ``register_task``).
Without it, recovery runs automatically on the first ``start_task``, ``schedule_task`` or
``get_task_status`` (so register durable handlers before starting work), and again every
``recover_interval`` seconds while the manager is in use, for runs of other processes whose
leases expired. A run is interrupted when its row is still ``running`` but its lease expired or
its holder is a process of this host that no longer exists, or when the rescuer of a claim already
put it back in the queue.
"""

from .base import BackgroundTaskManager
from .queued import RUNS_QUEUE, QueuedTaskManager
from .runs import Run, RunRegistry, RunStatus
from .switch import create_task_manager

__all__ = [
    "QueuedTaskManager",
    "BackgroundTaskManager",
    "create_task_manager",
    "RUNS_QUEUE",
    "Run",
    "RunRegistry",
    "RunStatus",
]
