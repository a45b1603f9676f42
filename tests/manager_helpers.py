"""Process entry points for the QueuedTaskManager tests (spawn start method)."""

from __future__ import annotations

import asyncio


def start_run_and_hang(db_path, run_id, module_id, parameters, ready):
    """An app process: start one run whose coroutine never ends, say so, then wait to be killed."""

    async def main():
        from prismq_queue import QueuedTaskManager, Run, RunRegistry

        registry = RunRegistry(db_path)
        mgr = QueuedTaskManager(db_path, registry)
        started = asyncio.Event()

        async def forever():
            started.set()
            await asyncio.Event().wait()

        run = Run(run_id=run_id, module_id=module_id, parameters=parameters)
        registry.add_run(run)
        mgr.start_task(run, forever())
        await started.wait()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())
