"""REST API latency under load (issue 5's speed targets).

    python benches/bench_web.py                       # 500 requests/s for 10 s (+1 s warm-up)
    python benches/bench_web.py --rate 500 --seconds 5 --json

Four kinds of process, all on this machine, all on 127.0.0.1 (loopback only), started with spawn:

- the app: ``web.create_app`` served by uvicorn (one process, access log off);
- two worker processes (``prismq_queue.Worker``, concurrency 4) draining the queue ``default``
  and ``project:bench`` while the load runs: tasks preloaded so they never run dry, each handler
  sleeping ``--task-ms`` (simulated I/O) and reporting progress;
- a load generator (asyncio with aiohttp if installed, else httpx) sending requests open-loop at ``--rate`` per second (each
  request is due at its own time whether or not earlier ones came back, so a slow server shows as
  latency, not as a lower rate), ``--rate x --seconds`` requests in all, and stopping by itself
  (a hard deadline of 3 x the run); latency is measured in the generator, so it includes its own
  scheduling delay: an honest upper bound.

The mix: GET /queue/tasks/{id} 35%, GET /queue/stats 20%, GET /projects/bench/queue/status 15%,
POST /queue/enqueue 30%. Targets: p99 under 20 ms for the status and task endpoints and for enqueue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import threading
import time

TOKEN = "bench-token"
PROJECT = "bench"
ENDPOINTS = ["GET /queue/tasks/{id}", "GET /queue/stats", "GET /projects/{p}/queue/status", "POST /queue/enqueue"]
WEIGHTS = [35, 20, 15, 30]
TARGET_MS = 20.0


# ---------------------------------------------------------------------- processes
def serve(path: str, port: int, ready, switch_ms: float = 0.0) -> None:
    import logging

    import uvicorn

    from prismq_queue import Queue, web

    logging.getLogger("prismq_queue.web").setLevel(logging.ERROR)
    if switch_ms:
        sys.setswitchinterval(switch_ms / 1000.0)
    q = Queue(path)
    app = web.create_app(q, auth=web.Auth(tokens={TOKEN: web.Token(scopes={"read", "write", "admin"})}))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        ready.set()

    threading.Thread(target=announce, daemon=True).start()
    server.run()


class _Registry:
    def __init__(self, handlers):
        self.handlers = handlers

    def get_registered_types(self):
        return set(self.handlers)

    def get_handler(self, t):
        return self.handlers[t]


def _job(ctx):
    ms = (ctx.payload or {}).get("ms", 5) if isinstance(ctx.payload, dict) else 5
    ctx.progress(50, step="working")
    time.sleep(ms / 1000.0)
    return None


def work(path: str, name: str, stop, out) -> None:
    from prismq_queue import Queue, Worker

    q = Queue(path)
    w = Worker(q, _Registry({"bench.job": _job}), worker_id=name, queues=["default", f"project:{PROJECT}"],
               concurrency=4, poll_interval=0.05)
    threading.Thread(target=lambda: (stop.wait(), w.stop()), daemon=True).start()
    w.run(install_signal_handlers=False)
    out.put((name, w.tasks_done))


def load(base: str, rate: float, seconds: float, warmup: float, task_ids: list[int], task_ms: float, client: str, out) -> None:
    async def main() -> dict:
        rng = random.Random(7)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        samples: list[tuple[int, float, float, int, float, float]] = []  # (endpoint, due, latency ms, status, done, app ms)
        enqueue_body = {"type": "bench.job", "payload": {"ms": task_ms}}

        if client == "aiohttp":
            import aiohttp

            session = aiohttp.ClientSession(base_url=base, headers=headers,
                                            connector=aiohttp.TCPConnector(limit=128),
                                            timeout=aiohttp.ClientTimeout(total=10))

            async def request(method: str, path: str, body: dict | None = None) -> tuple[int, float]:
                async with session.request(method, path, json=body) as r:
                    await r.read()
                    return r.status, _app_ms(r.headers.get("Server-Timing"))
        else:
            import httpx

            session = httpx.AsyncClient(base_url=base, headers=headers, timeout=10.0,
                                        limits=httpx.Limits(max_connections=128, max_keepalive_connections=128))

            async def request(method: str, path: str, body: dict | None = None) -> tuple[int, float]:
                r = await session.request(method, path, json=body)
                return r.status_code, _app_ms(r.headers.get("Server-Timing"))

        async def one(kind: int, due: float) -> None:
            t0 = time.perf_counter()
            app_ms = float("nan")
            try:
                if kind == 0:
                    status, app_ms = await request("GET", f"/api/queue/tasks/{rng.choice(task_ids)}")
                elif kind == 1:
                    status, app_ms = await request("GET", "/api/queue/stats")
                elif kind == 2:
                    status, app_ms = await request("GET", f"/api/projects/{PROJECT}/queue/status?limit=20")
                else:
                    status, app_ms = await request("POST", "/api/queue/enqueue", enqueue_body)
            except Exception:  # noqa: BLE001 - counted as an error
                status = 0
            t1 = time.perf_counter()
            samples.append((kind, due, (t1 - t0) * 1000.0, status, t1 - start, app_ms))

        total = int(rate * (seconds + warmup))
        start = time.perf_counter() + 0.2
        hard_stop = start + 3 * (seconds + warmup)
        pending: set = set()
        try:
            for i in range(total):
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.perf_counter() > hard_stop:
                    break
                kind = rng.choices(range(4), WEIGHTS)[0]
                t = asyncio.ensure_future(one(kind, due - start))
                pending.add(t)
                t.add_done_callback(pending.discard)
            sent_for = time.perf_counter() - start
            if pending:
                await asyncio.wait(pending, timeout=max(1.0, hard_stop - time.perf_counter()))
        finally:
            if client == "aiohttp":
                await session.close()
            else:
                await session.aclose()
        return {"samples": samples, "sent_for": sent_for, "warmup": warmup}

    try:
        import uvloop

        result = uvloop.run(main())
    except ImportError:
        result = asyncio.run(main())
    out.put(result)


def _app_ms(header: str | None) -> float:
    # "app;dur=1.23": the time the request spent in the app, as the router measures it
    try:
        return float(header.split("dur=", 1)[1]) if header else float("nan")
    except (IndexError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------- driver
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=500.0, help="requests per second (default 500)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default 10)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring (default 1)")
    ap.add_argument("--task-ms", type=float, default=5.0, help="each task's handler sleeps this long (default 5)")
    ap.add_argument("--preload", type=int, default=0, help="tasks queued before the run (default: enough to keep both workers busy)")
    ap.add_argument("--switch-ms", type=float, default=0.0,
                    help="sys.setswitchinterval in the server process, ms (default: Python's 5 ms)")
    ap.add_argument("--client", choices=["aiohttp", "httpx"], default=None,
                    help="load generator's HTTP client (default: aiohttp if installed, else httpx)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()
    if args.client is None:
        try:
            import aiohttp  # noqa: F401

            args.client = "aiohttp"
        except ImportError:
            args.client = "httpx"

    from prismq_queue import Queue

    ctx = mp.get_context("spawn")
    tmp = tempfile.mkdtemp(prefix="bench_web_")
    path = os.path.join(tmp, "bench.db")
    run_for = args.seconds + args.warmup
    # two workers x 4 slots, each task >= task_ms: at most this many tasks/s; keep them busy throughout
    preload = args.preload or int(2 * 4 * (1000.0 / max(args.task_ms, 0.5)) * (run_for + 2))
    with Queue(path) as q:
        items = [{"type": "bench.job", "payload": {"ms": args.task_ms}, "priority": 100 + (i % 50)} for i in range(preload)]
        for i in range(0, len(items), 5000):
            q.enqueue_many(items[i : i + 5000])
        q.enqueue_many([{"type": "bench.job", "payload": {"ms": args.task_ms}, "queue": f"project:{PROJECT}",
                         "priority": 1 + i % 100} for i in range(200)])
        task_ids = [t.id for t in q.list(limit=2000)]
        before = q.stats()

    port = free_port()
    ready = ctx.Event()
    server = ctx.Process(target=serve, args=(path, port, ready, args.switch_ms), daemon=True)
    server.start()
    if not ready.wait(30):
        print("the server did not start", file=sys.stderr)
        server.terminate()
        return 1

    stop = ctx.Event()
    done_q = ctx.Queue()
    workers = [ctx.Process(target=work, args=(path, f"bench-w{i}", stop, done_q), daemon=True) for i in range(2)]
    for w in workers:
        w.start()
    time.sleep(0.5)

    out = ctx.Queue()
    gen = ctx.Process(target=load, args=(f"http://127.0.0.1:{port}", args.rate, args.seconds, args.warmup, task_ids, args.task_ms, args.client, out), daemon=True)
    cpu0 = {"server": cpu_seconds(server.pid), **{f"worker{i}": cpu_seconds(w.pid) for i, w in enumerate(workers)}}
    t0 = time.monotonic()
    gen.start()
    result = out.get(timeout=3 * run_for + 30)
    wall = time.monotonic() - t0
    cpu1 = {"server": cpu_seconds(server.pid), **{f"worker{i}": cpu_seconds(w.pid) for i, w in enumerate(workers)},
            "generator": cpu_seconds(gen.pid)}
    cpu = {k: (cpu1[k] - cpu0.get(k, 0.0)) / wall for k in cpu1}
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = float("nan")
    gen.join(10)
    with Queue(path) as q:
        after = q.stats()
    stop.set()
    drained = {}
    for _ in workers:
        name, n = done_q.get(timeout=60)
        drained[name] = n
    for w in workers:
        w.join(30)
    server.terminate()
    server.join(10)

    samples = [s for s in result["samples"] if s[1] >= result["warmup"]]
    measured = samples
    # achieved: responses over the time from the first measured request's due time to the last response
    span = max(s[4] for s in measured) - min(s[1] for s in measured) if measured else 0.0
    print(f"bench_web: {args.rate:.0f} req/s offered for {args.seconds:.0f} s (+{args.warmup:.0f} s warm-up), "
          f"2 workers x 4 slots, tasks of {args.task_ms:g} ms, {preload} tasks preloaded, client {args.client}, cpus={os.cpu_count()}")
    print(f"achieved {len(measured) / span if span else 0:.0f} req/s over the measured window "
          f"({len(measured)} responses; generator sent for {result['sent_for']:.1f} s; wall {wall:.1f} s)")
    print(f"tasks completed during the run: {after['completed'] - before['completed']} "
          f"({(after['completed'] - before['completed']) / wall:.0f}/s); by worker {drained}")
    print("CPU during the run (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
          + f"; load average (1 min) at the end {load1:.2f}")
    print(f"{'endpoint':34} {'n':>6} {'errors':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}  target"
          f"   {'in app p50/p99 ms':>18}")
    figures = {}
    for k, name in enumerate(ENDPOINTS):
        lat = [s[2] for s in measured if s[0] == k]
        errors = sum(1 for s in measured if s[0] == k and s[3] not in (200, 201))
        p50, p90, p99 = pct(lat, 50), pct(lat, 90), pct(lat, 99)
        ok = "ok" if p99 < TARGET_MS and not errors else "MISSED"
        app = [s[5] for s in measured if s[0] == k and s[5] == s[5]]
        print(f"{name:34} {len(lat):6d} {errors:6d} {p50:8.2f} {p90:8.2f} {p99:8.2f} {max(lat) if lat else 0:8.2f}  p99<{TARGET_MS:g} {ok:6}"
              f"   {pct(app, 50):8.2f}/{pct(app, 99):.2f}")
        figures[name] = {"n": len(lat), "errors": errors, "p50_ms": round(p50, 2), "p90_ms": round(p90, 2),
                         "app_p50_ms": round(pct(app, 50), 2), "app_p99_ms": round(pct(app, 99), 2),
                         "p99_ms": round(p99, 2), "max_ms": round(max(lat), 2) if lat else None}
    by_second: dict[int, list[float]] = {}
    for smp in measured:
        by_second.setdefault(int(smp[1]), []).append(smp[2])
    print("p99 ms by second of the run (all endpoints): "
          + " ".join(f"{pct(v, 99):.0f}" for _, v in sorted(by_second.items())))
    if args.json:
        print(json.dumps({"rate": args.rate, "seconds": args.seconds, "achieved_rps": round(len(measured) / span, 1) if span else 0,
                          "endpoints": figures, "tasks_completed": after["completed"] - before["completed"],
                          "cpu_cores": {k: round(v, 2) for k, v in cpu.items()}, "load1": load1}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
