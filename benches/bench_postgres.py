"""PostgreSQL benchmarks (issue 19), from Python through the module, against a raw SKIP LOCKED loop
on the same server in the same run.

    pip install "psycopg[binary]"               # the RAW loop's client (bench only)
    python benches/bench_postgres.py            # full run (several minutes on 2 cores)
    python benches/bench_postgres.py --quick    # smoke run
    python benches/bench_postgres.py --only enqueue_many,claim_complete_batch   # some figures
    python benches/bench_postgres.py --url postgresql://user@host/db   # an existing server

Without --url it starts a throwaway cluster (tests/pg_cluster.py: initdb into a temporary
directory, a free port) and restarts it without the tests' fsync=off, so it runs with the default
durability (fsync=on, synchronous_commit=on) on this machine's disk. Every figure uses a fresh
schema. The server shares the machine's cores with this process and the workers: compare the
ratio ours/raw of one run, not absolute figures between runs.

Figures (targets from issue 19):
  enqueue_many          q.enqueue_many(1000 dicts) per call                 target >= 100,000/s
  claim_complete_batch  q.claim(w, limit=100); q.complete_many(tasks)       target >= 15,000/s
  worker_<p>proc_c<c>   no-op tasks through Worker, p processes x c threads target >= 6,000/s (best)
  claim_p99_<strategy>  one claim with 100,000 tasks queued                 target p99 < 5 ms
  pickup                an idle worker in another process picks a task up   target p50 < 5 ms, p99 < 25 ms
                        (from the enqueue call, and from its return)
  raw_commit            one durable one-row commit through psycopg: the floor under a pick-up
RAW (psycopg, one table with the claim's partial index):
  enqueue_many: INSERT ... SELECT FROM unnest(...) of 1000 rows per statement (autocommit), and
  a binary COPY of the same rows, 1000 per transaction (our enqueue_many's path for a batch of 32
  or more without idempotency keys);
  claim_complete_batch: claim 100 with UPDATE ... WHERE id IN (SELECT ... ORDER BY id LIMIT 100
  FOR UPDATE SKIP LOCKED) RETURNING, then one UPDATE completing them: two statements, two
  commits, like the queue's two calls.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from bench_core import percentiles, realistic_items  # noqa: E402
from bench_worker import _worker_main, pickup_latency  # noqa: E402  (Queue opens a URL as a path)

from prismq_queue import Queue  # noqa: E402

STRATEGIES = ("fifo", "lifo", "priority", "weighted_random")
FIGURES = ("enqueue_many", "claim_complete_batch", "claim_latency", "worker", "pickup")
TARGETS = {
    "enqueue_many": (">=", 100_000, "tasks/s"),
    "claim_complete_batch": (">=", 15_000, "tasks/s"),
    "worker_best": (">=", 6_000, "tasks/s"),
    **{f"claim_p99_{s}": ("<", 5.0, "ms") for s in STRATEGIES},
    "pickup_p50": ("<", 5.0, "ms"),
    "pickup_p99": ("<", 25.0, "ms"),
}


def schema_url(server: str) -> str:
    sep = "&" if "?" in server else "?"
    return f"{server}{sep}schema=b_{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# RAW: psycopg on a minimal table.

RAW_SCHEMA = """
CREATE TABLE raw_tasks (
    id       bigserial PRIMARY KEY,
    type     text NOT NULL,
    payload  text NOT NULL,
    status   text NOT NULL DEFAULT 'queued',
    result   text
);
CREATE INDEX raw_tasks_claim ON raw_tasks (id) WHERE status = 'queued';
"""


def raw_connect(server: str, table_schema: str):
    import psycopg

    c = psycopg.connect(server, autocommit=True)
    c.execute(f"CREATE SCHEMA IF NOT EXISTS {table_schema}")
    c.execute(f"SET search_path = {table_schema}")
    return c


def raw_enqueue_many(server: str, n: int, batch: int = 1000) -> float:
    s = f"raw_{uuid.uuid4().hex[:12]}"
    with raw_connect(server, s) as c:
        c.execute(RAW_SCHEMA)
        batches = [
            (["email.send"] * batch, [json.dumps({"to": "a@example.com", "i": i}) for i in range(k, k + batch)])
            for k in range(0, n, batch)
        ]
        t0 = time.perf_counter()
        for types, payloads in batches:
            c.execute(
                "INSERT INTO raw_tasks (type, payload) SELECT * FROM unnest(%s::text[], %s::text[])",
                (types, payloads),
            )
        rate = n / (time.perf_counter() - t0)
        c.execute(f"DROP SCHEMA {s} CASCADE")
    return rate


def raw_copy_many(server: str, n: int, batch: int = 1000) -> float:
    """The same rows by binary COPY, one transaction per batch: the floor under our COPY path."""
    s = f"raw_{uuid.uuid4().hex[:12]}"
    with raw_connect(server, s) as c:
        c.execute(RAW_SCHEMA)
        rows = [("email.send", json.dumps({"to": "a@example.com", "i": i})) for i in range(n)]
        t0 = time.perf_counter()
        for k in range(0, n, batch):
            with c.transaction(), c.cursor().copy("COPY raw_tasks (type, payload) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["text", "text"])
                for row in rows[k : k + batch]:
                    cp.write_row(row)
        rate = n / (time.perf_counter() - t0)
        c.execute(f"DROP SCHEMA {s} CASCADE")
    return rate


def raw_claim_complete_batch(server: str, n: int, limit: int = 100) -> float:
    s = f"raw_{uuid.uuid4().hex[:12]}"
    with raw_connect(server, s) as c:
        c.execute(RAW_SCHEMA)
        for k in range(0, n + limit, 5000):
            c.execute(
                "INSERT INTO raw_tasks (type, payload) SELECT 'noop', '{\"i\": ' || g || '}' FROM generate_series(%s::bigint, %s::bigint) g",
                (k, k + 4999),
            )
        c.execute("ANALYZE raw_tasks")
        done = 0
        t0 = time.perf_counter()
        while done < n:
            rows = c.execute(
                "UPDATE raw_tasks SET status = 'running' WHERE id IN (SELECT id FROM raw_tasks "
                "WHERE status = 'queued' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, payload",
                (limit,),
            ).fetchall()
            for _, p in rows:
                json.loads(p)
            c.execute(
                "UPDATE raw_tasks SET status = 'completed', result = 'null' WHERE id = ANY(%s)",
                ([r[0] for r in rows],),
            )
            done += len(rows)
        rate = done / (time.perf_counter() - t0)
        c.execute(f"DROP SCHEMA {s} CASCADE")
    return rate


# --------------------------------------------------------------------------------------------
# Ours.


def ours_enqueue_many(server: str, n: int, batch: int = 1000) -> float:
    with Queue(schema_url(server)) as q:
        batches = [
            [{"type": "email.send", "payload": {"to": "a@example.com", "i": i}} for i in range(k, k + batch)]
            for k in range(0, n, batch)
        ]
        t0 = time.perf_counter()
        for b in batches:
            q.enqueue_many(b)
        return n / (time.perf_counter() - t0)


def ours_claim_complete_batch(server: str, n: int, limit: int = 100) -> float:
    with Queue(schema_url(server)) as q:
        for k in range(0, n + limit, 5000):
            q.enqueue_many([{"type": "noop", "payload": {"i": i}} for i in range(k, k + 5000)])
        q.analyze()
        done = 0
        t0 = time.perf_counter()
        while done < n:
            tasks = q.claim("w", limit=limit)
            for t in tasks:
                _ = t.payload
            q.complete_many(tasks)
            done += len(tasks)
        return done / (time.perf_counter() - t0)


def ours_claim_latency(server: str, depth: int, samples: int) -> dict:
    caps = {"gpu": True, "region": "eu"}
    out: dict = {}
    with Queue(schema_url(server)) as q:
        items = realistic_items(depth)
        for k in range(0, depth, 5000):
            q.enqueue_many(items[k : k + 5000])
        q.analyze()
        top_up = realistic_items(samples, seed=11)
        for strategy in STRATEGIES:
            lat = []
            try:
                q.claim("w", strategy=strategy, capabilities=caps)
            except Exception as e:  # a strategy this build refuses on PostgreSQL is reported, not hidden
                out[strategy] = {"error": f"{type(e).__name__}: {e}"}
                continue
            for _ in range(samples):
                t0 = time.perf_counter_ns()
                got = q.claim("w", strategy=strategy, capabilities=caps)
                lat.append((time.perf_counter_ns() - t0) / 1e6)
                q.complete(got[0])
            q.enqueue_many(top_up)
            out[strategy] = percentiles(lat)
        out["queued_after"] = q.stats()["queued"]
    return out


def worker_throughput(server: str, n: int, processes: int, concurrency: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    url = schema_url(server)
    with Queue(url) as q:
        for k in range(0, n, 5000):
            q.enqueue_many([{"type": "noop", "payload": {"i": i}} for i in range(k, min(n, k + 5000))])
        q.analyze()
    events = [ctx.Event() for _ in range(processes)]
    procs = [ctx.Process(target=_worker_main, args=(url, concurrency, 600, e)) for e in events]
    for p in procs:
        p.start()
    with Queue(url) as q:
        while q.stats()["running"] == 0 and q.stats()["completed"] == 0:
            time.sleep(0.001)
        t0 = time.perf_counter()
        while q.stats()["completed"] < n:
            time.sleep(0.01)
        dt = time.perf_counter() - t0
    for p in procs:
        p.terminate()
    for p in procs:
        p.join()
    return n / dt


def raw_commit_latency(server: str, samples: int) -> dict:
    """The floor of any pick-up: one tiny durable commit (an INSERT in autocommit), psycopg."""
    s = f"raw_{uuid.uuid4().hex[:12]}"
    with raw_connect(server, s) as c:
        c.execute(RAW_SCHEMA)
        lat = []
        for i in range(samples):
            t0 = time.perf_counter_ns()
            c.execute("INSERT INTO raw_tasks (type, payload) VALUES ('noop', %s)", (str(i),))
            lat.append((time.perf_counter_ns() - t0) / 1e6)
        c.execute(f"DROP SCHEMA {s} CASCADE")
    return percentiles(lat)


# --------------------------------------------------------------------------------------------


def start_server():
    import pg_cluster

    bin_path = pg_cluster.bin_dir()
    if bin_path is None:
        sys.exit("no PostgreSQL found: " + pg_cluster.HOW_TO_INSTALL)
    cluster = pg_cluster.Cluster(bin_path)
    # The test cluster runs with fsync=off (a command-line option, which ALTER SYSTEM cannot
    # override): restart it with PostgreSQL's defaults, so the figures pay for durable commits.
    options = f"-p {cluster.port} -k {cluster.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
    log = os.path.join(cluster.dir, "log")
    cluster._run(["pg_ctl", "restart", "-D", cluster.data, "-w", "-t", "60", "-m", "fast", "-l", log, "-o", options])
    import psycopg

    with psycopg.connect(cluster.url, autocommit=True) as c:
        settings = {k: c.execute(f"SHOW {k}").fetchone()[0] for k in ("fsync", "synchronous_commit", "server_version")}
    return cluster, settings


def check(name, value):
    op, target, unit = TARGETS[name]
    ok = value >= target if op == ">=" else value < target
    return f"{'met' if ok else 'MISSED'} ({op} {target:,} {unit})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--url", help="an existing server (default: a throwaway cluster)")
    ap.add_argument("--only", help=f"comma-separated figures among {','.join(FIGURES)} (default: all)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(FIGURES)
    if only - set(FIGURES):
        ap.error(f"unknown figures {sorted(only - set(FIGURES))}; choose among {', '.join(FIGURES)}")
    cluster = None
    if args.url:
        server, settings = args.url, {}
    else:
        cluster, settings = start_server()
        server = cluster.url
    n_enq = 20_000 if args.quick else 200_000
    n_cc = 5_000 if args.quick else 50_000
    depth = 10_000 if args.quick else 100_000
    samples = 200 if args.quick else 1000
    r: dict = {"server": settings}
    try:
        if "enqueue_many" in only:
            r["enqueue_many"] = ours_enqueue_many(server, n_enq)
            r["enqueue_many_raw"] = raw_enqueue_many(server, n_enq)
            r["enqueue_many_raw_copy"] = raw_copy_many(server, n_enq)
        if "claim_complete_batch" in only:
            r["claim_complete_batch"] = ours_claim_complete_batch(server, n_cc)
            r["claim_complete_batch_raw"] = raw_claim_complete_batch(server, n_cc)
        if "claim_latency" in only:
            r["claim_latency"] = ours_claim_latency(server, depth, samples)
        if "worker" in only:
            n_w = 10_000 if args.quick else 40_000
            settings_w = [(1, 20), (2, 20)] if args.quick else [(1, 20), (1, 40), (2, 20), (2, 40), (4, 10)]
            r["worker"] = {f"{p}proc_c{c}": worker_throughput(server, n_w, p, c) for p, c in settings_w}
        if "pickup" in only:
            r["pickup"] = pickup_latency(50 if args.quick else 300, url=schema_url(server))
            r["raw_commit"] = raw_commit_latency(server, 100 if args.quick else 500)
    finally:
        if cluster is not None:
            cluster.stop()
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"server: {r['server']}  load average before: {os.getloadavg()}")
    for k in ("enqueue_many", "claim_complete_batch"):
        if k in r:
            ours, raw = r[k], r[f"{k}_raw"]
            print(f"  {k:<24} {ours:>10,.0f} tasks/s   raw {raw:>10,.0f}   ours/raw {ours / raw:.2f}   {check(k, ours)}")
            if f"{k}_raw_copy" in r:
                cp = r[f"{k}_raw_copy"]
                print(f"  {'':<24} {'':>10}           raw COPY {cp:>7,.0f}   ours/raw COPY {ours / cp:.2f}")
    for s in STRATEGIES if "claim_latency" in r else ():
        v = r["claim_latency"][s]
        if "error" in v:
            print(f"  claim_p99_{s:<14} {v['error']}")
            continue
        print(f"  claim_p99_{s:<14} p50 {v['p50_ms']:.2f} ms  p99 {v['p99_ms']:.2f} ms  max {v['max_ms']:.2f} ms   {check('claim_p99_' + s, v['p99_ms'])}")
    if "worker" in r:
        best = max(r["worker"].values())
        for k, v in r["worker"].items():
            print(f"  worker_{k:<17} {v:>10,.0f} tasks/s")
        print(f"  worker_best              {best:>10,.0f} tasks/s   {check('worker_best', best)}")
    if "pickup" in r:
        pk = r["pickup"]
        print(f"  pickup                   p50 {pk['p50_ms']:.2f} ms {check('pickup_p50', pk['p50_ms'])}   p99 {pk['p99_ms']:.2f} ms {check('pickup_p99', pk['p99_ms'])}")
        ac = pk["after_commit"]
        print(f"    from the enqueue's return: p50 {ac['p50_ms']:.2f} ms   p99 {ac['p99_ms']:.2f} ms")
        rc = r["raw_commit"]
        print(f"  raw durable commit (one-row INSERT): p50 {rc['p50_ms']:.2f} ms   p99 {rc['p99_ms']:.2f} ms"
              "   (a pick-up holds two: the enqueue's and the claim's)")

if __name__ == "__main__":
    main()
