//! Limits on PostgreSQL: the `limits` table, its figures, and the limited claim.
//!
//! Claims run concurrently (`FOR UPDATE SKIP LOCKED`), so two of them could both count a free
//! slot and both take it. A claim whose lanes a limit covers therefore locks those limits' rows
//! `FOR UPDATE` first, in (queue, type) order, and only then counts the running rows: under READ
//! COMMITTED each later statement sees what the previous holder committed, so limited claims of
//! one limit take turns, and the count is exact. Claims no limit covers never touch the table
//! (eligible_lanes_limited learns that in the round trip it makes anyway), so they keep their
//! single statement. Completions, failures and the rescuer only lower the count: they need no lock.

use crate::model::claim::ClaimRequest;
use crate::model::error::Result;
use crate::model::limits::{
    figures, ClaimLimits, LimitInfo, LimitRow, LimitSpec, NamedLane, Observed, Rate,
};
use crate::model::strategy::{Candidate, Strategy};
use crate::model::task::TaskRow;
use crate::storage::postgres::rows::COLUMNS;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};
use postgres::Row;

const SELECT_LIMITS: &str = "SELECT queue, type, concurrency, per, rate_count, rate_period, tokens,
        refilled_at FROM limits";

fn limit_row(r: &Row) -> Result<LimitRow> {
    let rate = match (
        r.try_get::<_, Option<i64>>(4)?,
        r.try_get::<_, Option<i64>>(5)?,
    ) {
        (Some(count), Some(period_ms)) => Some(Rate { count, period_ms }),
        _ => None,
    };
    Ok(LimitRow {
        spec: LimitSpec {
            queue: r.try_get(0)?,
            task_type: r.try_get(1)?,
            concurrency: r.try_get(2)?,
            per: r.try_get(3)?,
            rate,
        },
        tokens: r.try_get(6)?,
        refilled_at: r.try_get(7)?,
    })
}

/// Running tasks of the limited queues (of `$1`, or all when NULL), with their payloads.
const RUNNING_LIMITED: &str = "SELECT l.queue, l.type, t.payload FROM tasks t
    JOIN lanes l ON l.id = t.lane_id
    WHERE t.status = 'running'
      AND l.queue IN (SELECT queue FROM limits WHERE $1::text IS NULL OR queue = $1)";

fn running_limited(tx: &mut Tx, queue: Option<&str>) -> Result<Vec<(String, String, String)>> {
    let rows = tx.query(RUNNING_LIMITED, &[&queue])?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

/// A limited lane's first due rows, locked as the plain claim locks them; the payload only
/// when a `per` limit needs it ($4).
const LANE_ROWS: &str = "SELECT id, priority, run_after, wkey, CASE WHEN $4 THEN payload END
    FROM tasks WHERE lane_id = $1 AND status = 'queued' AND run_after <= $2
    ORDER BY {order} LIMIT $3 FOR UPDATE SKIP LOCKED";

/// Take the chosen rows ($1), as the plain claim does.
const TAKE: &str = "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = $3,
        lease_until = $4, lease_token = nextval('lease_tokens'), started_at = $2,
        updated_at = $2{won}
    WHERE id = ANY ($1) RETURNING {columns}, wkey";

impl PgDriver {
    pub fn limit_set(&self, spec: &LimitSpec) -> Result<()> {
        self.write(|tx| {
            // A new or replaced limit starts with a full bucket.
            let tokens = spec.rate.map_or(0.0, |r| r.count as f64);
            tx.execute(
                "INSERT INTO limits (queue, type, concurrency, per, rate_count, rate_period,
                     tokens, refilled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now_ms())
                 ON CONFLICT (queue, type) DO UPDATE SET concurrency = EXCLUDED.concurrency,
                     per = EXCLUDED.per, rate_count = EXCLUDED.rate_count,
                     rate_period = EXCLUDED.rate_period, tokens = EXCLUDED.tokens,
                     refilled_at = EXCLUDED.refilled_at",
                &[
                    &spec.queue,
                    &spec.task_type,
                    &spec.concurrency,
                    &spec.per,
                    &spec.rate.map(|r| r.count),
                    &spec.rate.map(|r| r.period_ms),
                    &tokens,
                ],
            )?;
            Ok(())
        })
    }

    pub fn limit_remove(&self, queue: &str, task_type: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM limits WHERE queue = $1 AND type = $2",
                &[&queue, &task_type],
            )?;
            Ok(n > 0)
        })
    }

    pub fn limit_list(&self, queue: Option<&str>) -> Result<Vec<LimitInfo>> {
        self.read(|tx| {
            let sql = format!(
                "{SELECT_LIMITS} WHERE $1::text IS NULL OR queue = $1 ORDER BY queue, type"
            );
            let rows = tx
                .query(&sql, &[&queue])?
                .iter()
                .map(limit_row)
                .collect::<Result<Vec<_>>>()?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let now = db_now(tx)?;
            let running = running_limited(tx, queue)?;
            // Due tasks: counted per lane, with payloads only for queues with a `per` limit.
            let due = tx
                .query(
                    "SELECT l.queue, l.type,
                            CASE WHEN EXISTS (SELECT 1 FROM limits m WHERE m.queue = l.queue
                                              AND m.per IS NOT NULL) THEN t.payload END,
                            count(*)
                     FROM tasks t JOIN lanes l ON l.id = t.lane_id
                     WHERE t.status = 'queued' AND t.run_after <= $2
                       AND l.queue IN (SELECT queue FROM limits WHERE $1::text IS NULL OR queue = $1)
                     GROUP BY 1, 2, 3",
                    &[&queue, &now],
                )?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(figures(rows, now, &Observed { running, due }))
        })
    }

    /// The claim of `req` over `lanes` (id, queue, type), at least one of them limited: lock
    /// the covering limits, count what runs under them, pick each lane's admitted rows, take
    /// the best of them, and write back the buckets it drew from.
    pub(crate) fn claim_limited(
        &self,
        tx: &mut Tx,
        req: &ClaimRequest,
        lanes: &[NamedLane],
    ) -> Result<Vec<TaskRow>> {
        let (queues, types): (Vec<String>, Vec<String>) = tx
            .query("SELECT queue, type FROM limits ORDER BY queue, type", &[])?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|(q, t)| {
                lanes
                    .iter()
                    .any(|(_, lq, lt)| lq == q && (t.is_empty() || t == lt))
            })
            .unzip();
        let sql = format!(
            "{SELECT_LIMITS} WHERE (queue, type) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY queue, type FOR UPDATE"
        );
        let rows = tx
            .query(&sql, &[&queues, &types])?
            .iter()
            .map(limit_row)
            .collect::<Result<Vec<_>>>()?;
        let running = running_limited(tx, None)?;
        // The clock once the lock is held and the count read: a bucket is never refilled past a
        // claim's start, and a task whose finish the count saw as done has finished_at <= now,
        // so a slot's next holder never seems to start before its last one ended.
        let now = db_now(tx)?;
        let mut cl = ClaimLimits::new(rows, now, &running);
        let ids = self.limited_picks(tx, req, lanes, &mut cl, now)?;
        for s in cl.states.iter().filter(|s| s.spent) {
            tx.execute(
                "UPDATE limits SET tokens = $3, refilled_at = greatest(refilled_at, $4)
                 WHERE queue = $1 AND type = $2",
                &[
                    &s.row.spec.queue,
                    &s.row.spec.task_type,
                    &s.tokens.unwrap_or(0.0),
                    &now,
                ],
            )?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let lease_until = crate::model::time::later("lease", now, req.lease_ms)?;
        let won = match req.strategy {
            Strategy::WeightedRandom => ", won_at = greatest(won_at, wkey)",
            _ => "",
        };
        let take = TAKE.replace("{won}", won).replace("{columns}", COLUMNS);
        let rows = tx.query(&take, &[&ids, &now, &req.worker_id, &lease_until])?;
        crate::storage::postgres::claim::in_strategy_order(&rows, req.strategy)
    }

    /// The ids a limited claim takes, in the strategy's order: each lane offers at most the
    /// batch's size of rows its limits admit (reading at most `PER_KEY_SCAN` rows past tasks of
    /// full keys), and the best of those are admitted against the limits they share.
    fn limited_picks(
        &self,
        tx: &mut Tx,
        req: &ClaimRequest,
        lanes: &[NamedLane],
        cl: &mut ClaimLimits,
        now: i64,
    ) -> Result<Vec<i64>> {
        let limit = req.limit;
        let order = crate::storage::postgres::claim::order_of(req.strategy);
        let sql = LANE_ROWS.replace("{order}", order);
        let mut pool = Vec::new();
        for (lane, q, t) in lanes {
            let Some(scan) = cl.lane(q, t, limit) else {
                continue;
            };
            let rows = tx.query(&sql, &[lane, &now, &(scan.reads as i64), &scan.keyed])?;
            let rows = rows.iter().map(|r| {
                let c = Candidate {
                    id: r.try_get(0)?,
                    priority: r.try_get(1)?,
                    run_after: r.try_get(2)?,
                    wkey: r.try_get(3)?,
                };
                Ok((c, r.try_get(4)?))
            });
            cl.offer(&scan, rows, limit, &mut pool)?;
        }
        Ok(cl
            .admit_best(pool, req.strategy, limit)
            .into_iter()
            .map(|c| c.id)
            .collect())
    }
}
