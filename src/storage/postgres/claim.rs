//! Claiming: one statement per claim, whatever the batch size. For each eligible lane a LATERAL
//! subquery reads the lane's first due rows through the claim index whose order is the
//! strategy's (`LIMIT` the batch), locking them with `FOR UPDATE SKIP LOCKED`, so concurrent
//! claimers pass over each other's rows instead of waiting or taking them twice; the best of
//! those few rows across lanes are then taken, each with a fresh token from `lease_tokens`.
//! Nothing sorts or scans the backlog (the EXPLAIN test checks it). Rows a lane read beyond
//! what the batch took stay locked until the commit, a few milliseconds: other claimers skip
//! them meanwhile.
//!
//! Weighted random is SQLite's exponential race (storage/sqlite/claim/race.rs): a queued task
//! holds the key `clock + Exp(1) * priority` (column `wkey`, drawn at enqueue and whenever it
//! becomes queued again or its priority changes), and the claim takes the smallest due key
//! through `tasks_claim_weighted (lane_id, wkey, id, run_after)`, like the other strategies.
//! What differs is the clock. SQLite keeps it in a meta row every weighted claim advances; here
//! that row would serialise every claim. Instead each weighted claim keeps the key it won with
//! in its own row (`won_at`), and the clock is the largest of them, `race_clock()`: the last
//! entry of the partial index `tasks_race_won`, one index read by whoever draws a key. That is
//! the very value SQLite's row holds (the largest key claimed so far), so the argument carries
//! over: every queued key is above the clock (a claim took the smallest), and given only that,
//! by memorylessness `key - clock` is Exp with mean `p_i`, independent across tasks, whatever
//! the task's age; a new task drawn from the same clock is in the same position. So the next
//! claim takes task `i` with probability `(1/p_i) / sum_j (1/p_j)`, claim after claim. Keys are
//! finite and the clock only grows (a winner's `won_at` never decreases and is kept through its
//! retries), so a task is taken once the clock passes its key: no task starves. Concurrent
//! claims skip each other's locked rows, taking the smallest keys among them in some order, as
//! one claim after another would; an enqueue reads the clock as of its snapshot, so a claim
//! still in flight can leave a new key drawn a step early (about `1 / sum_j (1/p_j)`, the gap
//! between two claims). A purge of every task that ever won takes the clock back to 0: keys
//! drawn then start below the older ones, which wait until the clock passes them again.
//!
//! That index is created by the schema's first weighted claim (or `position`, or the plan's
//! EXPLAIN, for weighted random), as on SQLite: every queued task is in every claim index, and
//! random keys make this one the dearest to keep (10-20% of `enqueue_many`'s rate here), so a
//! schema that never claims weighted never pays for it. `CREATE INDEX` waits for the writers in
//! flight and makes later ones wait for the build (once per schema); from then on every process
//! keeps it, so no task is queued that it misses.

use crate::model::claim::ClaimRequest;
use crate::model::error::Result;
use crate::model::strategy::{Candidate, Strategy};
use crate::model::task::TaskRow;
use crate::storage::postgres::rows::{task_row, COLUMNS, COLUMN_COUNT};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};
use postgres::Row;
use std::sync::LazyLock;

/// The claim of `limit` ($3) tasks from lanes $1 due at $2, for worker $4 until $5.
/// `{order}` is the strategy's ORDER BY, the order of its index; `{won}` records a weighted
/// claim's key (the race's clock, see above). The race key comes back after the columns.
///
/// The rows picked are found again by primary key: the outer `WHERE` has no `status = 'queued'`,
/// which let the planner walk a whole partial claim index with `id` as a non-leading condition
/// whenever the statistics were stale (a claim of 100 took 45 ms at 20,000 queued). None is
/// needed: the subquery locked the rows `FOR UPDATE`, rechecking `status = 'queued'` on their
/// latest version, and holds them. (A join with the picks instead let the planner hash-join a
/// scan of the table for big batches.)
const CLAIM_TEMPLATE: &str = "
    UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = $4, lease_until = $5,
                     lease_token = nextval('lease_tokens'), started_at = $2, updated_at = $2{won}
    WHERE id = ANY (ARRAY(
        SELECT head.id
        FROM unnest($1::bigint[]) AS lane (id)
        CROSS JOIN LATERAL (
            SELECT id, priority, run_after, wkey FROM tasks
            WHERE lane_id = lane.id AND status = 'queued' AND run_after <= $2
            ORDER BY {order}
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        ) AS head
        ORDER BY {head_order}
        LIMIT $3))
    RETURNING {columns}, wkey";

/// `ORDER BY` of a strategy (the columns of its index, in its direction).
pub(crate) fn order_of(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Priority => "priority, run_after, id",
        Strategy::Fifo => "run_after, id",
        Strategy::Lifo => "run_after DESC, id DESC",
        Strategy::WeightedRandom => "wkey, id",
    }
}

fn claim_sql(strategy: Strategy) -> String {
    let order = order_of(strategy);
    let head_order = order
        .split(", ")
        .map(|c| format!("head.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let won = match strategy {
        // GREATEST: a delayed task may win with a key drawn long ago, below the clock.
        Strategy::WeightedRandom => ", won_at = greatest(won_at, wkey)",
        _ => "",
    };
    CLAIM_TEMPLATE
        .replace("{won}", won)
        .replace("{order}", order)
        .replace("{head_order}", &head_order)
        .replace("{columns}", COLUMNS)
}

static CLAIM_PRIORITY: LazyLock<String> = LazyLock::new(|| claim_sql(Strategy::Priority));
static CLAIM_FIFO: LazyLock<String> = LazyLock::new(|| claim_sql(Strategy::Fifo));
static CLAIM_LIFO: LazyLock<String> = LazyLock::new(|| claim_sql(Strategy::Lifo));
static CLAIM_WEIGHTED: LazyLock<String> = LazyLock::new(|| claim_sql(Strategy::WeightedRandom));

/// The claim statement of `strategy` (the tests also run it in transactions of their own).
pub(crate) fn sql_of(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Priority => &CLAIM_PRIORITY,
        Strategy::Fifo => &CLAIM_FIFO,
        Strategy::Lifo => &CLAIM_LIFO,
        Strategy::WeightedRandom => &CLAIM_WEIGHTED,
    }
}

/// The weighted claim's index: the lane's keys in order, `run_after` checked in the index.
const WEIGHTED_INDEX: &str = "CREATE INDEX IF NOT EXISTS tasks_claim_weighted
    ON tasks (lane_id, wkey, id, run_after) WHERE status = 'queued'";

/// Tasks the rescue inside a claim puts back at most (`sweep` takes the rest in rounds).
const RESCUE_IN_CLAIM: i64 = 100;

impl PgDriver {
    pub fn claim(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>> {
        self.write(|tx| {
            let now = db_now(tx)?;
            self.claim_in(tx, req, now)
        })
    }

    /// The claim itself, inside a transaction the caller owns (see `ack::settle`); `now` is the
    /// database's clock read in it. Expired leases go back first, as on SQLite.
    pub(crate) fn claim_in(
        &self,
        tx: &mut Tx,
        req: &ClaimRequest,
        now: i64,
    ) -> Result<Vec<TaskRow>> {
        self.ensure_claim_index_in(tx, req.strategy)?;
        self.rescue_expired_in(tx, now, RESCUE_IN_CLAIM)?;
        let (lanes, limited) = self.eligible_lanes_limited(tx, &req.filter)?;
        if let Some(named) = limited {
            // A limit covers one of the lanes: the claim that locks it (limits.rs).
            return self.claim_limited(tx, req, &named);
        }
        if lanes.is_empty() {
            return Ok(Vec::new());
        }
        let lease_until = crate::model::time::later("lease", now, req.lease_ms)?;
        let rows = tx.query(
            sql_of(req.strategy),
            &[
                &lanes,
                &now,
                &(req.limit as i64),
                &req.worker_id,
                &lease_until,
            ],
        )?;
        in_strategy_order(&rows, req.strategy)
    }

    /// Create the weighted claim index if `strategy` needs it and the schema lacks it. The
    /// lookup takes no lock; the creation is serialised with other processes' by an advisory
    /// lock, after which a second creator finds the index there.
    pub(crate) fn ensure_claim_index_in(&self, tx: &mut Tx, strategy: Strategy) -> Result<()> {
        if strategy != Strategy::WeightedRandom || self.lanes.lock().weighted_index {
            return Ok(());
        }
        let exists = "SELECT to_regclass('tasks_claim_weighted') IS NOT NULL";
        if tx.query_one(exists, &[])?.get::<_, bool>(0) {
            // Committed (the catalog lookup sees only that): kept for good.
            self.lanes.lock().weighted_index = true;
            return Ok(());
        }
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('prismq_queue index ' || current_schema()))",
            &[],
        )?;
        if !tx.query_one(exists, &[])?.get::<_, bool>(0) {
            // Not cached here: a rollback would take it back. The next claim finds it.
            tx.batch_execute(WEIGHTED_INDEX)?;
        }
        Ok(())
    }

    /// The same in a transaction of its own, for the reads that walk the index (`position`,
    /// the plan's EXPLAIN).
    pub(crate) fn ensure_claim_index(&self, strategy: Strategy) -> Result<()> {
        if strategy != Strategy::WeightedRandom || self.lanes.lock().weighted_index {
            return Ok(());
        }
        self.write(|tx| self.ensure_claim_index_in(tx, strategy))
    }

    /// `EXPLAIN (FORMAT JSON)` of the claim statement for `strategy` over every lane, for a
    /// batch of `limit`: the plan the server picks with today's statistics (the tests read it).
    pub fn explain_claim_json(&self, strategy: Strategy, limit: i64) -> Result<serde_json::Value> {
        let rows = self.explain(strategy, limit, "FORMAT JSON")?;
        Ok(rows[0].try_get(0)?)
    }

    /// The plan of the claim statement (a batch of one) as text lines, for operators.
    pub fn explain_claim(&self, strategy: Strategy) -> Result<Vec<String>> {
        let rows = self.explain(strategy, 1, "FORMAT TEXT")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn explain(&self, strategy: Strategy, limit: i64, format: &str) -> Result<Vec<postgres::Row>> {
        self.ensure_claim_index(strategy)?;
        // Without ANALYZE, EXPLAIN plans the UPDATE and runs nothing.
        self.read(|tx| {
            let row = tx.query_one(
                "SELECT coalesce(array_agg(id), '{}'), now_ms() FROM lanes",
                &[],
            )?;
            let (lanes, now): (Vec<i64>, i64) = (row.get(0), row.get(1));
            let sql = format!("EXPLAIN ({format}) {}", sql_of(strategy));
            Ok(tx.query(
                &sql,
                &[
                    &lanes,
                    &now,
                    &limit,
                    &"explain",
                    &now.saturating_add(60_000),
                ],
            )?)
        })
    }
}

/// The rows a claim's UPDATE returned (the task's columns, then its `wkey`) as tasks in
/// `strategy`'s order: RETURNING gives no order.
pub(crate) fn in_strategy_order(rows: &[Row], strategy: Strategy) -> Result<Vec<TaskRow>> {
    let mut out = rows
        .iter()
        .map(|r| {
            let t = task_row(r)?;
            let c = Candidate {
                id: t.id,
                priority: t.priority,
                run_after: t.run_after,
                wkey: r.try_get(COLUMN_COUNT)?,
            };
            Ok((c, t))
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|(a, _), (b, _)| strategy.compare(a, b));
    Ok(out.into_iter().map(|(_, t)| t).collect())
}
