"""One module per resource of the REST API, each building an ``APIRouter`` from the router's
``RouterContext`` (``build(ctx)``); ``web._router.create_router`` includes them all:

- ``queue_api``: the older queue API (``/queue/enqueue``, ``/queue/tasks``, ``/queue/stats``);
- ``projects``: ``/projects/{project_id}/queue/...``;
- ``operations``: statistics, running tasks, workers, dead letters, clear, Prometheus metrics;
- ``live``: the event streams (WebSocket and Server-Sent Events), of a project and of every queue;
- ``dashboard``: what the dashboard page reads;
- ``limits``: ``/queue/limits`` (list, set, remove the concurrency and rate limits).
"""
