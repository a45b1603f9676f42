//! Limits on SQLite: the `limits` table, its figures, and what the claim asks of it. A claim
//! runs in one IMMEDIATE transaction, so counting the running rows there is atomic: no other
//! process can start or finish a task between the count and the claim's own update.

use crate::model::claim::{ClaimRequest, LaneFilter};
use crate::model::error::Result;
use crate::model::limits::{
    figures, ClaimLimits, LimitInfo, LimitRow, LimitSpec, NamedLane, Observed, Rate,
};
use crate::model::strategy::{Candidate, Strategy};
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, Connection, Row};

const SELECT_LIMITS: &str = "SELECT queue, type, concurrency, per, rate_count, rate_period, tokens,
        refilled_at FROM limits";

fn limit_row(r: &Row) -> rusqlite::Result<LimitRow> {
    let rate = match (r.get::<_, Option<i64>>(4)?, r.get::<_, Option<i64>>(5)?) {
        (Some(count), Some(period_ms)) => Some(Rate { count, period_ms }),
        _ => None,
    };
    Ok(LimitRow {
        spec: LimitSpec {
            queue: r.get(0)?,
            task_type: r.get(1)?,
            concurrency: r.get(2)?,
            per: r.get(3)?,
            rate,
        },
        tokens: r.get(6)?,
        refilled_at: r.get(7)?,
    })
}

/// Every limit, or those of `queue`, in (queue, type) order.
fn read_limits(c: &Connection, queue: Option<&str>) -> Result<Vec<LimitRow>> {
    let sql = format!("{SELECT_LIMITS} WHERE ?1 IS NULL OR queue = ?1 ORDER BY queue, type");
    let mut st = c.prepare_cached(&sql)?;
    let rows = st.query_map([queue], limit_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Running tasks of the limited queues, with their payloads (few: one per busy worker slot).
const RUNNING_LIMITED: &str = "SELECT l.queue, l.type, t.payload FROM tasks t
    JOIN lanes l ON l.id = t.lane_id
    WHERE t.status = 'running' AND l.queue IN (SELECT queue FROM limits WHERE ?1 IS NULL OR queue = ?1)";

fn running_limited(c: &Connection, queue: Option<&str>) -> Result<Vec<(String, String, String)>> {
    let mut st = c.prepare_cached(RUNNING_LIMITED)?;
    let rows = st.query_map([queue], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl SqliteDriver {
    /// `lanes` with their queue and type, from the lane cache (refreshed by this claim).
    pub(crate) fn lanes_named(&self, lanes: &[i64]) -> Vec<NamedLane> {
        let cache = self.lanes.lock();
        lanes
            .iter()
            .filter_map(|id| cache.list.iter().find(|l| l.id == *id))
            .map(|l| (l.id, l.queue.clone(), l.task_type.clone()))
            .collect()
    }

    pub fn limit_set(&self, spec: &LimitSpec) -> Result<()> {
        self.db.write(|tx| {
            let now = self.now(tx)?.wall;
            // A new or replaced limit starts with a full bucket.
            let tokens = spec.rate.map_or(0.0, |r| r.count as f64);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO limits (queue, type, concurrency, per, rate_count,
                     rate_period, tokens, refilled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                spec.queue,
                spec.task_type,
                spec.concurrency,
                spec.per,
                spec.rate.map(|r| r.count),
                spec.rate.map(|r| r.period_ms),
                tokens,
                now
            ])?;
            Ok(())
        })
    }

    pub fn limit_remove(&self, queue: &str, task_type: &str) -> Result<bool> {
        self.db.write(|tx| {
            let n = tx
                .prepare_cached("DELETE FROM limits WHERE queue = ?1 AND type = ?2")?
                .execute(params![queue, task_type])?;
            Ok(n > 0)
        })
    }

    pub fn limit_list(&self, queue: Option<&str>) -> Result<Vec<LimitInfo>> {
        self.db.read(|c| {
            let rows = read_limits(c, queue)?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let now = crate::model::time::now_ms();
            let running = running_limited(c, queue)?;
            // Due tasks: counted per lane, with payloads only for queues with a `per` limit.
            let mut st = c.prepare_cached(
                "SELECT l.queue, l.type,
                        CASE WHEN EXISTS (SELECT 1 FROM limits m WHERE m.queue = l.queue
                                          AND m.per IS NOT NULL) THEN t.payload END, count(*)
                 FROM tasks t JOIN lanes l ON l.id = t.lane_id
                 WHERE t.status = 'queued' AND t.run_after <= ?2
                   AND l.queue IN (SELECT queue FROM limits WHERE ?1 IS NULL OR queue = ?1)
                 GROUP BY 1, 2, 3",
            )?;
            let due = st
                .query_map(params![queue, now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(figures(rows, now, &Observed { running, due }))
        })
    }

    /// Whether a claim with `filter` may meet a limit (read before the claim picks its path,
    /// so the single-claim memory is opened only when none can apply).
    pub(crate) fn limits_may_apply(&self, tx: &WriteTx, filter: &LaneFilter) -> Result<bool> {
        let mut st = tx.prepare_cached("SELECT DISTINCT queue FROM limits")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let queue: String = r.get(0)?;
            if filter.queues.as_ref().is_none_or(|qs| qs.contains(&queue)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The candidates of a claim over `lanes` within the limits that cover them, and those
    /// limits as the claim leaves them; `None` when no limit covers the lanes.
    pub(crate) fn limited_claim(
        &self,
        tx: &WriteTx,
        req: &ClaimRequest,
        lanes: &[i64],
        now: i64,
    ) -> Result<Option<(Vec<Candidate>, ClaimLimits)>> {
        let named = self.lanes_named(lanes);
        let Some(mut cl) = self.claim_limits(tx, &named, now)? else {
            return Ok(None);
        };
        let cands = self.limited_candidates(tx, req.strategy, &named, &mut cl, now, req.limit)?;
        Ok(Some((cands, cl)))
    }

    /// The limits covering any of `lanes`, with what runs under them now, or `None` when no
    /// limit covers them.
    pub(crate) fn claim_limits(
        &self,
        tx: &WriteTx,
        lanes: &[NamedLane],
        now: i64,
    ) -> Result<Option<ClaimLimits>> {
        let rows: Vec<LimitRow> = read_limits(tx, None)?
            .into_iter()
            .filter(|l| lanes.iter().any(|(_, q, t)| l.spec.covers(q, t)))
            .collect();
        if rows.is_empty() {
            return Ok(None);
        }
        let running = running_limited(tx, None)?;
        Ok(Some(ClaimLimits::new(rows, now, &running)))
    }

    /// The candidates of a limited claim, in the strategy's order, at most `limit`, each
    /// admitted by every limit covering it (counted in `cl`). A lane gives at most `limit`
    /// rows that its limits admit, reading at most `PER_KEY_SCAN` rows past tasks of full keys.
    pub(crate) fn limited_candidates(
        &self,
        tx: &WriteTx,
        strategy: Strategy,
        lanes: &[NamedLane],
        cl: &mut ClaimLimits,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Candidate>> {
        let mut stmt = tx.prepare_cached(strategy.candidate_sql())?;
        let mut payload = tx.prepare_cached("SELECT payload FROM tasks WHERE id = ?1")?;
        let mut pool = Vec::new();
        for (lane, q, t) in lanes {
            let Some(scan) = cl.lane(q, t, limit) else {
                continue;
            };
            let rows = stmt.query(params![lane, now, scan.reads as i64])?;
            // The payload is read per row, and only for the rows the lane reaches.
            let rows = rows.mapped(|r| {
                let c = Candidate::from_row(r)?;
                let p = match scan.keyed {
                    true => Some(payload.query_row([c.id], |r| r.get(0))?),
                    false => None,
                };
                Ok((c, p))
            });
            cl.offer(&scan, rows.map(|r| r.map_err(Into::into)), limit, &mut pool)?;
        }
        Ok(cl.admit_best(pool, strategy, limit))
    }

    /// Write back the buckets the claim took tokens from, refilled to `now`.
    pub(crate) fn save_buckets(&self, tx: &WriteTx, cl: &ClaimLimits, now: i64) -> Result<()> {
        let mut st = tx.prepare_cached(
            "UPDATE limits SET tokens = ?3, refilled_at = max(refilled_at, ?4)
             WHERE queue = ?1 AND type = ?2",
        )?;
        for s in cl.states.iter().filter(|s| s.spent) {
            st.execute(params![
                s.row.spec.queue,
                s.row.spec.task_type,
                s.tokens.unwrap_or(0.0),
                now
            ])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::Lease;
    use crate::model::limits::{LimitSpec, PER_KEY_SCAN};
    use crate::model::new_task::NewTask;
    use crate::model::strategy::Strategy;
    use crate::model::task::TaskRow;
    use crate::storage::sqlite::testutil::file_driver;
    use crate::storage::sqlite::SqliteDriver;

    fn claim(q: &SqliteDriver, n: usize) -> Vec<TaskRow> {
        let mut req = ClaimRequest::new("w");
        req.limit = n;
        q.claim(&req).unwrap()
    }

    fn lease(t: &TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    #[test]
    fn single_and_batch_claims_stop_at_the_limit_and_resume_on_complete() {
        let (_d, q) = file_driver();
        let tasks: Vec<NewTask> = (0..10)
            .map(|i| NewTask::new(format!("t{}", i % 2), "null"))
            .collect();
        q.enqueue_many(&tasks).unwrap();
        // The memory of single claims was warm before the limit came: it must not bypass it.
        let first = claim(&q, 1);
        q.limit_set(&LimitSpec::new("default", None, Some(3), None, None).unwrap())
            .unwrap();
        assert_eq!(claim(&q, 1).len(), 1);
        assert_eq!(claim(&q, 5).len(), 1);
        assert!(claim(&q, 1).is_empty());
        q.complete(lease(&first[0]), None).unwrap();
        assert_eq!(claim(&q, 5).len(), 1);
        assert!(q.limit_remove("default", "").unwrap());
        assert_eq!(claim(&q, 10).len(), 6);
    }

    #[test]
    fn per_key_claims_read_a_bounded_number_of_rows_past_full_keys() {
        let (_d, q) = file_driver();
        let mut tasks: Vec<NewTask> = (0..PER_KEY_SCAN + 1)
            .map(|_| NewTask::new("t", r#"{"p": "a"}"#))
            .collect();
        tasks.push(NewTask::new("t", r#"{"p": "b"}"#));
        q.enqueue_many(&tasks).unwrap();
        q.limit_set(&LimitSpec::new("default", None, Some(1), Some("p"), None).unwrap())
            .unwrap();
        let mut req = ClaimRequest::new("w");
        req.strategy = Strategy::Fifo;
        assert_eq!(q.claim(&req).unwrap().len(), 1);
        // b sits past PER_KEY_SCAN rows of the full key a: this claim does not reach it.
        assert!(q.claim(&req).unwrap().is_empty());
    }

    #[test]
    fn a_rescued_lease_frees_its_slot() {
        let (_d, q) = file_driver();
        let tasks: Vec<NewTask> = (0..4).map(|_| NewTask::new("t", "null")).collect();
        q.enqueue_many(&tasks).unwrap();
        q.limit_set(&LimitSpec::new("default", None, Some(2), None, None).unwrap())
            .unwrap();
        let mut req = ClaimRequest::new("w");
        req.limit = 4;
        req.lease_ms = 1;
        assert_eq!(q.claim(&req).unwrap().len(), 2);
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The claim puts the expired leases back first, then counts: two slots again.
        req.lease_ms = 60_000;
        assert_eq!(q.claim(&req).unwrap().len(), 2);
        assert_eq!(q.limit_list(None).unwrap()[0].running, 2);
    }

    #[test]
    fn a_rate_limit_spends_and_keeps_its_tokens() {
        let (_d, q) = file_driver();
        let tasks: Vec<NewTask> = (0..10).map(|_| NewTask::new("t", "null")).collect();
        q.enqueue_many(&tasks).unwrap();
        q.limit_set(&LimitSpec::new("default", Some("t"), None, None, Some("4/h")).unwrap())
            .unwrap();
        assert_eq!(claim(&q, 3).len(), 3);
        assert_eq!(claim(&q, 3).len(), 1);
        assert!(claim(&q, 3).is_empty());
        let info = &q.limit_list(None).unwrap()[0];
        assert_eq!((info.running, info.waiting), (4, 6));
        assert!(info.tokens.unwrap() < 0.1, "{info:?}");
    }
}
