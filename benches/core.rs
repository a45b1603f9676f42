//! Criterion benchmarks of the Rust core, without Python: `cargo bench --bench core`.
//!
//! Every benchmark uses a file database in a temporary directory (WAL, synchronous=NORMAL, the
//! defaults of `Queue::open`). The default run is short (10 samples, 2 s each; about a minute in
//! all, most of it filling the 100,000-task queue); pass criterion's own options for longer runs,
//! e.g. `cargo bench --bench core -- --measurement-time 10`.
//!
//! - `enqueue/one`: `Queue::enqueue`, one transaction per task.
//! - `enqueue/many_1000`: `Queue::enqueue_many` of 1,000 tasks, one transaction.
//! - `cycle/claim_complete_one`: claim one task, complete it (two transactions).
//! - `cycle/claim100_complete_many`: claim 100 tasks in one call, complete them with `complete_many`.
//! - `claim_depth_100k/<strategy>`: one claim (timed) from a queue kept at about 100,000 tasks
//!   over 72 lanes (3 queues x 8 types x 3 requirement sets) with mixed priorities and 5%
//!   delayed tasks; each claimed task is completed outside the timing.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prismq_queue::{ClaimRequest, Lease, NewTask, Queue, QueueOptions, Strategy, TaskRow};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn open() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.db");
    let q = Queue::open(
        path.to_str().expect("a UTF-8 path"),
        QueueOptions::default(),
    )
    .expect("open the queue");
    (dir, q)
}

fn email(i: u64) -> NewTask {
    NewTask::new("email.send", format!(r#"{{"to":"a@example.com","i":{i}}}"#))
}

/// `n` plain tasks over 8 types (8 lanes), as the Python benchmark's throughput figures use.
fn fill(q: &Queue, n: u64) {
    let mut i = 0;
    while i < n {
        let batch: Vec<NewTask> = (i..n.min(i + 5000))
            .map(|j| NewTask::new(format!("t{}", j % 8), format!(r#"{{"i":{j}}}"#)))
            .collect();
        q.enqueue_many(&batch).expect("enqueue_many");
        i += 5000;
    }
}

fn lease(t: &TaskRow) -> Lease {
    Lease {
        task_id: t.id,
        token: t.lease_token.expect("a claimed task carries a lease token"),
    }
}

fn bench_enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let (_d, q) = open();
    let mut i = 0u64;
    g.throughput(Throughput::Elements(1));
    g.bench_function("one", |b| {
        b.iter(|| {
            i += 1;
            black_box(q.enqueue(&email(i)).expect("enqueue"))
        })
    });

    let (_d2, q2) = open();
    let batch: Vec<NewTask> = (0..1000).map(email).collect();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("many_1000", |b| {
        b.iter(|| black_box(q2.enqueue_many(&batch).expect("enqueue_many")))
    });
    g.finish();
}

fn bench_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("cycle");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    // Enough queued tasks for every iteration criterion asks for, topped up outside the timing.
    let (_d, q) = open();
    let mut queued = 0u64;
    let req = ClaimRequest::new("bench-worker");
    g.throughput(Throughput::Elements(1));
    g.bench_function("claim_complete_one", |b| {
        b.iter_custom(|iters| {
            if queued < iters {
                fill(&q, iters - queued + 1000);
                queued = iters + 1000;
            }
            let t0 = Instant::now();
            for _ in 0..iters {
                let t = q.claim(&req).expect("claim").pop().expect("a queued task");
                q.complete(lease(&t), None).expect("complete");
            }
            queued -= iters;
            t0.elapsed()
        })
    });

    let (_d2, q2) = open();
    let mut queued = 0u64;
    let mut req = ClaimRequest::new("bench-worker");
    req.limit = 100;
    g.throughput(Throughput::Elements(100));
    g.bench_function("claim100_complete_many", |b| {
        b.iter_custom(|iters| {
            let need = iters * 100;
            if queued < need {
                fill(&q2, need - queued + 1000);
                queued = need + 1000;
            }
            let t0 = Instant::now();
            for _ in 0..iters {
                let tasks = q2.claim(&req).expect("claim");
                assert_eq!(tasks.len(), 100);
                let items: Vec<(Lease, Option<String>)> =
                    tasks.iter().map(|t| (lease(t), None)).collect();
                black_box(q2.complete_many(&items).expect("complete_many"));
            }
            queued -= need;
            t0.elapsed()
        })
    });
    g.finish();
}

/// A realistic backlog (same shape as benches/bench_core.py): 3 queues, 8 types, requirement
/// sets {}, {"gpu": true}, {"region": "eu"}; priority 100 for 60%, 1..20 for 20%, 1..1000 for the
/// rest; 5% delayed an hour. A small deterministic generator keeps runs comparable.
fn realistic(n: u64, seed: u64) -> Vec<NewTask> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let queues = ["default", "emails", "reports"];
    let types = [
        "email.send",
        "email.digest",
        "report.build",
        "report.export",
        "image.resize",
        "image.thumb",
        "webhook",
        "cleanup",
    ];
    (0..n)
        .map(|i| {
            let mut t = NewTask::new(
                types[(next() % 8) as usize],
                format!(r#"{{"i":{i},"user":{}}}"#, next() % 10_000),
            );
            t.queue = queues[(next() % 3) as usize].to_string();
            let r = next() % 100;
            t.priority = match r {
                0..=59 => 100,
                60..=79 => 1 + (next() % 20) as i64,
                _ => 1 + (next() % 1000) as i64,
            };
            t.requires = match next() % 5 {
                3 => json!({"gpu": true}).as_object().cloned(),
                4 => json!({"region": "eu"}).as_object().cloned(),
                _ => None,
            };
            if next() % 100 < 5 {
                t.delay_ms = Some(3_600_000);
            }
            t
        })
        .collect()
}

fn bench_claim_depth(c: &mut Criterion) {
    const DEPTH: u64 = 100_000;
    let mut g = c.benchmark_group("claim_depth_100k");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));

    let (_d, q) = open();
    for chunk in realistic(DEPTH, 1).chunks(5000) {
        q.enqueue_many(chunk).expect("enqueue_many");
    }
    q.analyze().expect("analyze");
    let mut caps = Map::new();
    caps.insert("gpu".into(), Value::Bool(true));
    caps.insert("region".into(), Value::String("eu".into()));
    let mut seed = 2;

    g.throughput(Throughput::Elements(1));
    for strategy in [
        Strategy::Fifo,
        Strategy::Lifo,
        Strategy::Priority,
        Strategy::WeightedRandom,
    ] {
        let mut req = ClaimRequest::new("bench-worker");
        req.strategy = strategy;
        req.filter.capabilities = Some(caps.clone());
        g.bench_function(strategy.as_str(), |b| {
            b.iter_custom(|iters| {
                // Keep the depth: put back as many tasks as this round takes, untimed.
                seed += 1;
                for chunk in realistic(iters, seed).chunks(5000) {
                    q.enqueue_many(chunk).expect("enqueue_many");
                }
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let got = q.claim(&req).expect("claim");
                    total += t0.elapsed();
                    let t = got.first().expect("a due task");
                    q.complete(lease(t), None).expect("complete");
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_enqueue, bench_cycle, bench_claim_depth);
criterion_main!(benches);
