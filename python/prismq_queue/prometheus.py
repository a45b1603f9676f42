"""The queue's metrics in the Prometheus text exposition format.

>>> from prismq_queue import Queue
>>> from prismq_queue import prometheus
>>> with Queue(":memory:") as q:
...     _ = q.enqueue("email.send", queue="mail")
...     text = prometheus.render(q)
>>> 'prismq_tasks{status="queued"} 1.0' in text
True

``render(queue)`` reads ``Queue.metrics(window=...)`` once and writes it with the
``prometheus_client`` library (a custom collector on a private registry, so nothing is added to
the process's default registry). Serve it with ``CONTENT_TYPE`` (``web.create_router`` mounts it at
``GET /metrics``). Every name starts with ``prismq_``; labels are ``status``, ``queue``, ``type``
and, for processing times, ``quantile``.

Gauges (values at the scrape): ``prismq_tasks{status}``, ``prismq_tasks_scheduled``,
``prismq_oldest_queued_age_seconds``, ``prismq_queue_tasks{queue,type,status}`` (queued, running
and retrying per queue and type), ``prismq_tasks_retrying``, ``prismq_window_seconds``,
``prismq_window_tasks{status}`` (finished in the window), ``prismq_window_success_ratio``,
``prismq_window_failure_ratio``, ``prismq_throughput_per_second``,
``prismq_failures_per_second``, ``prismq_window_retried_tasks{status}``,
``prismq_processing_seconds{type,quantile}`` (``type="*"``: every type; quantiles 0.5, 0.95,
0.99 and 1 for the maximum) with ``prismq_processing_samples{type}`` (how many tasks), ``prismq_workers{status}``
(active, stale), ``prismq_database_size_bytes``, ``prismq_wal_size_bytes``, ``prismq_wal_frames``,
``prismq_wal_frames_pending``, ``prismq_checkpoint_age_seconds``, and for each limit
(``Queue.set_limit``; ``type="*"``: the limit of the whole queue) ``prismq_limit_running{queue,type}``
(tasks running that it counts), ``prismq_limit_waiting{queue,type}`` (due tasks it holds back),
``prismq_limit_concurrency{queue,type}`` (its bound, when it has one) and
``prismq_limit_rate_tokens{queue,type}`` (starts its rate allows now, when it has a rate).
Counters (this process since it started): ``prismq_lock_busy_retries_total``, ``prismq_lock_wait_seconds_total``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._prismq_queue import Queue

__all__ = ["render", "QueueCollector", "CONTENT_TYPE"]

#: The Content-Type header of ``render``'s output.
CONTENT_TYPE = CONTENT_TYPE_LATEST

_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max"))


def _gauge(name: str, doc: str, value: Optional[float]) -> Optional[GaugeMetricFamily]:
    return None if value is None else GaugeMetricFamily(name, doc, value=value)


class QueueCollector(Collector):
    """A ``prometheus_client`` collector over ``queue.metrics(window=window)``; register it on
    your own registry to export the queue next to the app's metrics."""

    def __init__(self, queue: Queue, *, window: float = 300.0) -> None:
        self.queue = queue
        self.window = window

    def collect(self) -> Iterator[Metric]:
        yield from families(self.queue.metrics(window=self.window))


def families(m: dict[str, Any]) -> Iterator[Metric]:
    """The metric families of one ``Queue.metrics()`` dict."""
    tasks = GaugeMetricFamily("prismq_tasks", "Tasks by status.", labels=["status"])
    for status, n in sorted(m["depth"].items()):
        tasks.add_metric([status], n)
    yield tasks
    yield GaugeMetricFamily("prismq_tasks_scheduled", "Queued tasks not due yet.", value=m["scheduled"])
    age = _gauge(
        "prismq_oldest_queued_age_seconds",
        "How long the longest-waiting due task has been claimable.",
        m["oldest_queued_age_seconds"],
    )
    if age is not None:
        yield age

    lanes = GaugeMetricFamily(
        "prismq_queue_tasks",
        "Queued, running and retrying (queued after a failed attempt) tasks by queue and type.",
        labels=["queue", "type", "status"],
    )
    for queue, types in sorted(m["by_queue_and_type"].items()):
        for typ, d in sorted(types.items()):
            for status in ("queued", "running", "retrying"):
                lanes.add_metric([queue, typ, status], d[status])
    yield lanes
    yield GaugeMetricFamily(
        "prismq_tasks_retrying", "Queued tasks waiting to retry after a failed attempt.", value=m["retrying"]
    )

    w = m["window"]
    yield GaugeMetricFamily("prismq_window_seconds", "The window of the prismq_window_* metrics.", value=w["seconds"])
    finished = GaugeMetricFamily("prismq_window_tasks", "Tasks finished in the window, by outcome.", labels=["status"])
    for status in ("completed", "failed", "cancelled"):
        finished.add_metric([status], w[status])
    yield finished
    for name, key, doc in (
        ("prismq_window_success_ratio", "success_ratio", "Completed / (completed + failed) in the window."),
        ("prismq_window_failure_ratio", "failure_ratio", "Failed / (completed + failed) in the window."),
    ):
        g = _gauge(name, doc, w[key])
        if g is not None:
            yield g
    yield GaugeMetricFamily(
        "prismq_throughput_per_second", "Tasks completed per second over the window.", value=w["throughput_per_second"]
    )
    yield GaugeMetricFamily(
        "prismq_failures_per_second", "Tasks dead-lettered per second over the window.", value=w["failed_per_second"]
    )
    retried = GaugeMetricFamily(
        "prismq_window_retried_tasks",
        "Tasks finished in the window that needed more than one attempt (of the latest 10,000).",
        labels=["status"],
    )
    for status, n in sorted(w["retried"].items()):
        retried.add_metric([status], n)
    yield retried

    proc = GaugeMetricFamily(
        "prismq_processing_seconds",
        "Processing time (claim to completion) of tasks completed in the window; type=\"*\" is every type.",
        labels=["type", "quantile"],
    )
    count = GaugeMetricFamily(
        "prismq_processing_samples", "Completed tasks the processing times are computed from.", labels=["type"]
    )
    for typ, s in [("*", w["processing_seconds"])] + sorted(w["processing_seconds_by_type"].items()):
        count.add_metric([typ], s["count"])
        for q, key in _QUANTILES:
            if s[key] is not None:
                proc.add_metric([typ, q], s[key])
    yield proc
    yield count

    yield from limit_families(m.get("limits") or [])

    workers = GaugeMetricFamily("prismq_workers", "Workers by heartbeat freshness.", labels=["status"])
    for status in ("active", "stale"):
        workers.add_metric([status], m["workers"][status])
    yield workers

    lc = m["lock_contention"]
    yield CounterMetricFamily(
        "prismq_lock_busy_retries",
        "Waits for another connection's write lock (busy handler calls and transaction retries), this process.",
        value=lc["busy_retries"],
    )
    yield CounterMetricFamily(
        "prismq_lock_wait_seconds",
        "Time spent waiting for the write lock, this process.",
        value=lc["busy_wait_seconds"],
    )

    db = m["database"]
    yield GaugeMetricFamily("prismq_database_size_bytes", "Size of the database file.", value=db["size_bytes"])
    yield GaugeMetricFamily("prismq_wal_size_bytes", "Size of the WAL file.", value=db["wal_bytes"])
    for name, key, doc in (
        ("prismq_wal_frames", "wal_frames", "Frames (pages) in the WAL."),
        ("prismq_wal_frames_pending", "wal_frames_pending", "WAL frames not yet checkpointed into the database."),
    ):
        g = _gauge(name, doc, db[key])
        if g is not None:
            yield g
    cp = m.get("checkpoint")
    if cp is not None:
        yield GaugeMetricFamily(
            "prismq_checkpoint_age_seconds",
            "Seconds since this process's background checkpointer last checkpointed.",
            value=cp["seconds_ago"],
        )


def limit_families(limits: list[dict[str, Any]]) -> Iterator[Metric]:
    """The gauges of ``metrics()["limits"]``, labelled by queue and type (``*``: the whole queue)."""
    labels = ["queue", "type"]
    running = GaugeMetricFamily("prismq_limit_running", "Running tasks a limit counts.", labels=labels)
    waiting = GaugeMetricFamily("prismq_limit_waiting", "Due tasks a limit holds back now.", labels=labels)
    concurrency = GaugeMetricFamily(
        "prismq_limit_concurrency", "The most tasks a limit lets run at once (per key with `per`).", labels=labels
    )
    tokens = GaugeMetricFamily("prismq_limit_rate_tokens", "Starts a rate limit allows now.", labels=labels)
    for lim in sorted(limits, key=lambda d: (d["queue"], d.get("type") or "")):
        key = [lim["queue"], lim.get("type") or "*"]
        running.add_metric(key, lim.get("running") or 0)
        waiting.add_metric(key, lim.get("waiting") or 0)
        if lim.get("concurrency") is not None:
            concurrency.add_metric(key, lim["concurrency"])
        if lim.get("tokens") is not None:
            tokens.add_metric(key, lim["tokens"])
    yield from (running, waiting, concurrency, tokens)


def render(queue: Queue, *, window: float = 300.0) -> str:
    """The queue's metrics as Prometheus text (serve with ``CONTENT_TYPE``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue, window=window))
    return generate_latest(registry).decode("utf-8")
