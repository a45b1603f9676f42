//! Claiming: one statement per claim, whatever the batch size. For each eligible lane a LATERAL
//! subquery reads the lane's first due rows through the claim index whose order is the
//! strategy's (`LIMIT` the batch), locking them with `FOR UPDATE SKIP LOCKED`, so concurrent
//! claimers pass over each other's rows instead of waiting or taking them twice; the best of
//! those few rows across lanes are then taken, each with a fresh token from `lease_tokens`.
//! Nothing sorts or scans the backlog (the EXPLAIN test checks it). Rows a lane read beyond
//! what the batch took stay locked until the commit, a few milliseconds: other claimers skip
//! them meanwhile.

use crate::model::claim::ClaimRequest;
use crate::model::error::{Error, Result};
use crate::model::strategy::Strategy;
use crate::model::task::TaskRow;
use crate::storage::postgres::rows::{candidate, task_rows, COLUMNS};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};
use std::sync::LazyLock;

/// The claim of `limit` ($3) tasks from lanes $1 due at $2, for worker $4 until $5.
/// `{order}` is the strategy's ORDER BY, the order of its index.
///
/// The rows picked are found again by primary key: the outer `WHERE` has no `status = 'queued'`,
/// which let the planner walk a whole partial claim index with `id` as a non-leading condition
/// whenever the statistics were stale (a claim of 100 took 45 ms at 20,000 queued). None is
/// needed: the subquery locked the rows `FOR UPDATE`, rechecking `status = 'queued'` on their
/// latest version, and holds them. (A join with the picks instead let the planner hash-join a
/// scan of the table for big batches.)
const CLAIM_TEMPLATE: &str = "
    UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = $4, lease_until = $5,
                     lease_token = nextval('lease_tokens'), started_at = $2, updated_at = $2
    WHERE id = ANY (ARRAY(
        SELECT head.id
        FROM unnest($1::bigint[]) AS lane (id)
        CROSS JOIN LATERAL (
            SELECT id, priority, run_after FROM tasks
            WHERE lane_id = lane.id AND status = 'queued' AND run_after <= $2
            ORDER BY {order}
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        ) AS head
        ORDER BY {head_order}
        LIMIT $3))
    RETURNING {columns}";

/// `ORDER BY` of a strategy (the columns of its index, in its direction).
fn order_of(strategy: Strategy) -> Option<&'static str> {
    match strategy {
        Strategy::Priority => Some("priority, run_after, id"),
        Strategy::Fifo => Some("run_after, id"),
        Strategy::Lifo => Some("run_after DESC, id DESC"),
        Strategy::WeightedRandom => None,
    }
}

fn claim_sql(order: &str) -> String {
    let head_order = order
        .split(", ")
        .map(|c| format!("head.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    CLAIM_TEMPLATE
        .replace("{order}", order)
        .replace("{head_order}", &head_order)
        .replace("{columns}", COLUMNS)
}

static CLAIM_PRIORITY: LazyLock<String> = LazyLock::new(|| claim_sql("priority, run_after, id"));
static CLAIM_FIFO: LazyLock<String> = LazyLock::new(|| claim_sql("run_after, id"));
static CLAIM_LIFO: LazyLock<String> = LazyLock::new(|| claim_sql("run_after DESC, id DESC"));

fn sql_of(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Priority => &CLAIM_PRIORITY,
        Strategy::Fifo => &CLAIM_FIFO,
        Strategy::Lifo => &CLAIM_LIFO,
        // Refused by `check_strategy` before any transaction starts.
        Strategy::WeightedRandom => unreachable!("weighted random is refused before"),
    }
}

/// Tasks the rescue inside a claim puts back at most (`sweep` takes the rest in rounds).
const RESCUE_IN_CLAIM: i64 = 100;

impl PgDriver {
    /// Weighted random needs a race key every claim could read through an index without a row
    /// that every claim updates: not there yet.
    pub(crate) fn check_strategy(&self, strategy: Strategy) -> Result<()> {
        match order_of(strategy) {
            Some(_) => Ok(()),
            None => Err(Error::Unsupported {
                backend: "postgresql",
                operation: "claim with weighted_random",
                instead:
                    "fifo, lifo or priority (weighted random is not yet implemented on PostgreSQL)",
            }),
        }
    }

    pub fn claim(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>> {
        self.check_strategy(req.strategy)?;
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
        self.rescue_expired_in(tx, now, RESCUE_IN_CLAIM)?;
        let lanes = self.eligible_lanes(tx, &req.filter)?;
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
        // RETURNING gives no order: the batch in the strategy's.
        let mut out = task_rows(&rows)?;
        out.sort_by(|a, b| req.strategy.compare(&candidate(a), &candidate(b)));
        Ok(out)
    }

    /// `EXPLAIN (FORMAT JSON)` of the claim statement for `strategy` over every lane, for a
    /// batch of `limit`: the plan the server picks with today's statistics (the tests read it).
    pub fn explain_claim_json(&self, strategy: Strategy, limit: i64) -> Result<serde_json::Value> {
        self.check_strategy(strategy)?;
        let rows = self.explain(strategy, limit, "FORMAT JSON")?;
        Ok(rows[0].try_get(0)?)
    }

    /// The plan of the claim statement (a batch of one) as text lines, for operators.
    pub fn explain_claim(&self, strategy: Strategy) -> Result<Vec<String>> {
        self.check_strategy(strategy)?;
        let rows = self.explain(strategy, 1, "FORMAT TEXT")?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn explain(&self, strategy: Strategy, limit: i64, format: &str) -> Result<Vec<postgres::Row>> {
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
