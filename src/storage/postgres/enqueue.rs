//! Enqueue one task or many in one transaction, with idempotency keys and delays: one INSERT
//! for the whole batch, its columns passed as arrays, or a binary COPY for a large batch without
//! idempotency keys (COPY cannot skip a key that exists, and an INSERT's per-row work costs about
//! twice a COPY's: `benches/bench_postgres.py`).

use crate::model::claim::LaneKey;
use crate::model::error::Result;
use crate::model::new_task::{requires_as_given, requires_text, NewTask};
use crate::storage::postgres::dependencies;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::PgDriver;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use std::collections::HashMap;

/// The batch's ids are taken from the sequence first, so each task knows its id whatever order
/// the INSERT writes rows in; a task whose key already exists (in the table, or earlier in the
/// batch) inserts nothing and is looked up by its key. Each task draws its weighted-random race
/// key from the race's clock, read once for the batch (see `claim`): `$14`. The change feed's row
/// names the tasks inserted (`changes::RECORD_CREATED`), in the same statement.
const INSERT: &str = "
    WITH ins AS (
    INSERT INTO tasks (id, lane_id, type, queue, payload, priority, status, max_attempts, run_after,
                       created_at, updated_at, requires, timeout_ms, retry_policy, idempotency_key,
                       wkey)
    SELECT id, lane_id, type, queue, payload, priority, 'queued', max_attempts, run_after,
           $13, $13, requires, timeout_ms, retry_policy, idempotency_key,
           $14 - ln(1 - random()) * priority
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[])
         AS t (id, lane_id, type, queue, payload, priority,
               max_attempts, run_after, requires, timeout_ms, retry_policy, idempotency_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, lane_id),
    feed AS (
        INSERT INTO task_changes (xid, task_ids, created)
        SELECT pg_current_xact_id()::text::bigint, array_agg(id), true FROM ins
        HAVING count(*) > 0)
    SELECT id, lane_id FROM ins";

/// The clock, the race's clock and the batch's ids, taken before the rows are built.
const START: &str = "SELECT now_ms(), race_clock(),
                            array(SELECT nextval('task_ids') FROM generate_series(1, $1::bigint))";
/// `START` for a batch going in by COPY, which inserts every id it takes: the change feed's row
/// for them is written here, saving a round trip (`changes::RECORD_CREATED`).
const START_COPY: &str = "
    WITH ids AS (SELECT array(SELECT nextval('task_ids') FROM generate_series(1, $1::bigint)) AS a),
    feed AS (
        INSERT INTO task_changes (xid, task_ids, created)
        SELECT pg_current_xact_id()::text::bigint, a, true FROM ids)
    SELECT now_ms(), race_clock(), a FROM ids";

/// The same columns for COPY, the race key drawn by `copy_in`.
const COPY: &str = "
    COPY tasks (id, lane_id, type, queue, payload, priority, status, max_attempts, run_after,
                created_at, updated_at, requires, timeout_ms, retry_policy, wkey)
    FROM STDIN BINARY";
const COPY_TYPES: &[Type] = &[
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::FLOAT8,
];
/// Below this many tasks the INSERT's one round trip beats COPY's setup.
const COPY_FROM: usize = 32;

/// The columns of a batch, one array each, in `INSERT`'s parameter order; the texts borrowed from
/// the tasks (a batch's copies of them were a fifth of the client's time).
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<i64>,
    lanes: Vec<i64>,
    types: Vec<&'a str>,
    queues: Vec<&'a str>,
    payloads: Vec<&'a str>,
    priorities: Vec<i64>,
    max_attempts: Vec<i64>,
    run_after: Vec<i64>,
    requires: Vec<Option<String>>,
    timeouts: Vec<Option<i64>>,
    retry: Vec<Option<String>>,
    keys: Vec<Option<&'a str>>,
}

impl PgDriver {
    pub fn enqueue(&self, task: &NewTask) -> Result<i64> {
        Ok(self.enqueue_many(std::slice::from_ref(task))?[0])
    }

    /// Insert tasks the engine checked in one transaction: every task is queued or none is. An
    /// existing idempotency key yields the existing task's id (also within the batch itself).
    pub fn enqueue_many(&self, tasks: &[NewTask]) -> Result<Vec<i64>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let mut new_lanes = Vec::new();
        let ids = self.write(|tx| {
            new_lanes.clear();
            self.insert_in(tx, tasks, &mut new_lanes)
        })?;
        // Only lanes whose creating transaction committed enter the cache.
        let mut cache = self.lanes.lock();
        for (key, id) in new_lanes {
            cache.remember(key, id);
        }
        Ok(ids)
    }

    /// The insert of `enqueue_many` inside the caller's transaction `tx` (the scheduler adds its
    /// due tasks in the transaction that advances the schedule); lanes it creates are added to
    /// `new_lanes`, for the cache once the transaction committed.
    pub(crate) fn insert_in(
        &self,
        tx: &mut Tx,
        tasks: &[NewTask],
        new_lanes: &mut Vec<(LaneKey, i64)>,
    ) -> Result<Vec<i64>> {
        let copying = tasks.len() >= COPY_FROM && tasks.iter().all(|t| t.idempotency_key.is_none());
        let start = if copying { START_COPY } else { START };
        let row = tx.query_one(start, &[&(tasks.len() as i64)])?;
        let now: i64 = row.get(0);
        let race_clock: f64 = row.get(1);
        let mut c = Columns {
            ids: row.get(2),
            ..Columns::default()
        };
        let mut lane_of: HashMap<LaneKey, i64> = HashMap::new();
        let mut previous: Option<(&NewTask, i64)> = None;
        for t in tasks {
            // A batch's tasks mostly share their lane with the task before: no key is built.
            let lane = match previous {
                Some((p, id)) if same_lane(p, t) => id,
                _ => {
                    let key = lane_key(t);
                    match lane_of.get(&key) {
                        Some(id) => *id,
                        None => {
                            let id = self.lane_id_in(tx, &key, new_lanes)?;
                            *lane_of.entry(key).or_insert(id)
                        }
                    }
                }
            };
            previous = Some((t, lane));
            c.push(t, lane, now)?;
        }
        if copying {
            copy_in(tx, &c, now, race_clock)?;
            self.notify_all_in(tx, c.lanes.iter().copied());
            if tasks.iter().any(|t| !t.after.is_empty()) {
                dependencies::hold_new(tx, tasks, &c.ids, &vec![true; tasks.len()], now)?;
            }
            return Ok(c.ids);
        }
        let inserted: HashMap<i64, i64> = tx
            .query(
                INSERT,
                &[
                    &c.ids,
                    &c.lanes,
                    &c.types,
                    &c.queues,
                    &c.payloads,
                    &c.priorities,
                    &c.max_attempts,
                    &c.run_after,
                    &c.requires,
                    &c.timeouts,
                    &c.retry,
                    &c.keys,
                    &now,
                    &race_clock,
                ],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        self.notify_all_in(tx, inserted.values().copied());
        if inserted.len() == tasks.len() {
            if tasks.iter().any(|t| !t.after.is_empty()) {
                dependencies::hold_new(tx, tasks, &c.ids, &vec![true; tasks.len()], now)?;
            }
            return Ok(c.ids);
        }
        // Keys that existed already: their tasks' ids.
        let wanted: Vec<&str> = c
            .ids
            .iter()
            .zip(&c.keys)
            .filter(|(id, _)| !inserted.contains_key(id))
            .filter_map(|(_, k)| *k)
            .collect();
        let existing: HashMap<String, i64> = tx
            .query(
                "SELECT idempotency_key, id FROM tasks WHERE idempotency_key = ANY($1)",
                &[&wanted],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let ids: Vec<i64> = c
            .ids
            .iter()
            .zip(&c.keys)
            .map(|(id, key)| match key {
                Some(k) if !inserted.contains_key(id) => existing[*k],
                _ => *id,
            })
            .collect();
        if tasks.iter().any(|t| !t.after.is_empty()) {
            let fresh: Vec<bool> = c.ids.iter().map(|id| inserted.contains_key(id)).collect();
            dependencies::hold_new(tx, tasks, &ids, &fresh, now)?;
        }
        Ok(ids)
    }
}

/// Every row of `c` through one binary COPY: rows go in as written, no key can conflict.
fn copy_in(tx: &mut Tx, c: &Columns, now: i64, race_clock: f64) -> Result<()> {
    let mut w = BinaryCopyInWriter::new(tx.copy_in(COPY)?, COPY_TYPES);
    for i in 0..c.ids.len() {
        // The key a weighted claim compares: the clock plus Exp(1) scaled by the priority, as
        // the INSERT's `ln(1 - random())` draws it (1 - u is in (0, 1], so ln is finite).
        let wkey = race_clock - (1.0 - rand::random::<f64>()).ln() * c.priorities[i] as f64;
        w.write(&[
            &c.ids[i],
            &c.lanes[i],
            &c.types[i],
            &c.queues[i],
            &c.payloads[i],
            &c.priorities[i],
            &"queued",
            &c.max_attempts[i],
            &c.run_after[i],
            &now,
            &now,
            &c.requires[i],
            &c.timeouts[i],
            &c.retry[i],
            &wkey,
        ])?;
    }
    w.finish()?;
    Ok(())
}

impl<'a> Columns<'a> {
    /// Task `t` of lane `lane` as one more row, due at its time (or `now` plus its delay).
    fn push(&mut self, t: &'a NewTask, lane: i64, now: i64) -> Result<()> {
        let run_after = match (t.run_after, t.delay_ms) {
            (Some(at), _) => at,
            (None, Some(d)) => crate::model::time::later("delay", now, d)?,
            (None, None) => now,
        };
        self.lanes.push(lane);
        self.types.push(&t.task_type);
        self.queues.push(&t.queue);
        self.payloads.push(&t.payload);
        self.priorities.push(t.priority);
        self.max_attempts.push(t.max_attempts);
        self.run_after.push(run_after);
        self.requires.push(requires_as_given(&t.requires));
        self.timeouts.push(t.timeout_ms);
        self.retry.push(
            t.retry
                .filter(|r| !r.is_empty())
                .map(|r| serde_json::to_string(&r))
                .transpose()?,
        );
        self.keys.push(t.idempotency_key.as_deref());
        Ok(())
    }
}

/// Whether tasks `a` and `b` are in the same lane (`lane_key`'s parts compared in place).
fn same_lane(a: &NewTask, b: &NewTask) -> bool {
    a.queue == b.queue && a.task_type == b.task_type && a.requires == b.requires
}

/// The lane of a task: its queue, type and canonical `requires` text ('' when it requires
/// nothing), as on SQLite.
fn lane_key(t: &NewTask) -> LaneKey {
    let requires = match requires_as_given(&t.requires) {
        Some(_) => requires_text(&t.requires),
        None => String::new(),
    };
    (t.queue.clone(), t.task_type.clone(), requires)
}
