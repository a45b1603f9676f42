"""The run registry's old import path (``from prismq_queue.runs import RunRegistry``), kept so
code written before the task manager moved into ``prismq_queue.manager`` keeps importing."""

from .manager.runs import Run, RunRegistry, RunStatus, utc_now

__all__ = ["Run", "RunStatus", "RunRegistry", "utc_now"]
