//! Claiming: one IMMEDIATE transaction per claim call (one task or a batch). The write lock is
//! taken before anything is read, so two processes can never pick the same row; every claimed
//! task gets a fresh random lease token that fences its later complete/fail/renew/progress.

pub mod heads;
pub mod indexes;
pub mod lanes;
pub mod race;

use crate::model::claim::ClaimRequest;
use crate::model::error::Result;
use crate::model::strategy::{Candidate, Strategy};
use crate::model::task::TaskRow;
use crate::storage::sqlite::clock::{LeaseClock, Now};
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::rows::COLUMNS;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::params;
use std::cmp::Ordering;

/// `SELECT <COLUMNS> FROM tasks WHERE id = ?1`, formatted once (it keys the statement cache).
static SELECT_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"));

pub(crate) fn new_lease_token() -> i64 {
    (rand::random::<u64>() >> 1) as i64
}

impl SqliteDriver {
    pub fn claim(&self, req: &ClaimRequest) -> Result<Vec<TaskRow>> {
        self.write_keeping_heads(|tx| self.claim_in(tx, req, self.now(tx)?))
    }

    /// The claim itself, inside a write transaction the caller owns (see `ack::settle`).
    pub(crate) fn claim_in(
        &self,
        tx: &WriteTx,
        req: &ClaimRequest,
        clock: Now,
    ) -> Result<Vec<TaskRow>> {
        let now = clock.wall;
        let limit = req.limit;
        // Limits are counted in this transaction; such a claim reads its lanes afresh rather
        // than through the memory (which knows nothing of limits).
        let limited = self.limits_may_apply(tx, &req.filter)?;
        // A batch claim searches every lane, and the memory follows single claims only.
        let mut heads = (limit == 1 && !limited).then(|| self.heads.open(tx, req.strategy));
        if heads.is_none() {
            self.heads.forget();
        }
        // Crash recovery rides along: expired leases go back before we choose.
        if heads.as_ref().is_none_or(|h| h.may_rescue(clock.key)) {
            let (moved, next_end) = self.rescue_expired_in(tx, clock)?;
            if let Some(h) = heads.as_mut() {
                h.rescued(moved, next_end);
            }
        }
        indexes::ensure_index(tx, req.strategy, &self.claim_indexes)?;
        let refresh = heads.as_ref().is_none_or(|h| !h.trusted());
        let lanes = self.eligible_lanes(tx, &req.filter, refresh)?;
        // A claim that a limit covers chooses within it (`limits`).
        let limits = match limited {
            true => self.limited_claim(tx, req, &lanes, now)?,
            false => None,
        };
        let mut cands: Vec<Candidate> = Vec::new();
        if let Some((chosen, _)) = &limits {
            cands.clone_from(chosen);
        } else if let Some(mut heads) = heads {
            // One task: each lane's candidate from the handle's memory where it is known.
            let mut best: Option<(Candidate, i64)> = None;
            for &lane in &lanes {
                if let Some(c) = heads.candidate(tx, lane, now)? {
                    if best
                        .as_ref()
                        .is_none_or(|(b, _)| req.strategy.compare(&c, b) == Ordering::Less)
                    {
                        best = Some((c, lane));
                    }
                }
            }
            if let Some((c, lane)) = best {
                heads.taken(lane, c.id, LeaseClock::after(clock, req.lease_ms));
                cands.push(c);
            }
        } else {
            let mut stmt = tx.prepare_cached(req.strategy.candidate_sql())?;
            for lane in &lanes {
                // Each lane's rows come in the strategy's order. Once `limit` candidates are
                // known, the worst of them bounds what can still win, and a lane's first row that
                // does not beat it ends that lane: a batch claim over many lanes reads about
                // `limit` rows plus one per lane, not `limit` per lane.
                let bound = (cands.len() >= limit).then(|| cands[limit - 1].clone());
                let before = cands.len();
                let mut rows = stmt.query(params![lane, now, limit as i64])?;
                while let Some(r) = rows.next()? {
                    let c = Candidate::from_row(r)?;
                    if bound
                        .as_ref()
                        .is_some_and(|b| req.strategy.compare(&c, b) != Ordering::Less)
                    {
                        break;
                    }
                    cands.push(c);
                }
                if before > 0 && cands.len() > before {
                    cands.sort_by(|a, b| req.strategy.compare(a, b));
                    cands.truncate(limit);
                }
            }
        }
        if cands.is_empty() {
            return Ok(Vec::new());
        }

        // A plain UPDATE, then the row by rowid. `UPDATE ... RETURNING` is compiled with a
        // trigger, which (with the table's CHECK and NOT NULL constraints) makes SQLite open a
        // statement journal and copy every page it touches into it: measurably slower.
        let mut take = tx.prepare_cached(
            "UPDATE tasks SET status = 'running', attempts = attempts + 1, locked_by = ?2, lease_until = ?3,
                    lease_token = ?4, started_at = ?5, updated_at = ?5, lease_key = ?6
             WHERE id = ?1 AND status = 'queued'",
        )?;
        let mut read = tx.prepare_cached(&SELECT_BY_ID)?;
        let mut out = Vec::with_capacity(cands.len());
        // The lease ends at `lease_key` (the lease clock); `lease_until` shows it on the wall clock.
        let lease_until = crate::model::time::later("lease", now, req.lease_ms)?;
        let lease_key = LeaseClock::after(clock, req.lease_ms);
        for c in &cands {
            let n = take.execute(params![
                c.id,
                req.worker_id,
                lease_until,
                new_lease_token(),
                now,
                lease_key
            ])?;
            if n != 1 {
                // Impossible under the write lock (the candidate was read as queued in this very
                // transaction); fail loudly rather than hand out a task we did not take.
                return Err(rusqlite::Error::QueryReturnedNoRows.into());
            }
            out.push(read.query_row([c.id], TaskRow::from_row)?);
        }
        if let Some((_, cl)) = &limits {
            self.save_buckets(tx, cl, now)?;
        }
        if req.strategy == Strategy::WeightedRandom {
            let top = cands.iter().map(|c| c.wkey).fold(f64::MIN, f64::max);
            tx.prepare_cached("UPDATE meta SET value = max(value, ?1) WHERE key = 'wclock'")?
                .execute([top])?;
        }
        Ok(out)
    }
}

impl SqliteDriver {
    /// Create the index `strategy` claims through if the file does not have it yet, as its first
    /// claim would (see `indexes`): for `position` and `explain_claim`, which only read.
    pub(crate) fn ensure_claim_index(&self, strategy: Strategy) -> Result<()> {
        if !self
            .db
            .read(|c| indexes::has_index(c, strategy, &self.claim_indexes))?
        {
            self.db
                .write(|tx| indexes::ensure_index(tx, strategy, &self.claim_indexes))?;
        }
        Ok(())
    }

    /// `EXPLAIN QUERY PLAN` of the per-lane search `claim` runs for `strategy`, as it runs it:
    /// for the lane's first rows due or not (`heads`), then, when the first is not due yet, for
    /// its first due row. Operators (and the tests) can see that each walks an index in order,
    /// with no temporary B-tree.
    pub fn explain_claim(&self, strategy: Strategy) -> Result<Vec<String>> {
        self.ensure_claim_index(strategy)?;
        self.db.read(|c| {
            let mut stmt =
                c.prepare(&format!("EXPLAIN QUERY PLAN {}", strategy.candidate_sql()))?;
            let mut out = Vec::new();
            for args in [params![1, i64::MAX, heads::KEPT as i64], params![1, 0, 1]] {
                let rows = stmt.query_map(args, |r| r.get::<_, String>(3))?;
                out.extend(rows.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::new_task::NewTask;
    use crate::storage::sqlite::testutil::file_driver;
    use serde_json::json;

    fn enqueue(q: &SqliteDriver, t: &str, priority: i64) -> i64 {
        let mut task = NewTask::new(t, "null");
        task.priority = priority;
        q.enqueue(&task).unwrap()
    }

    fn claim_ids(q: &SqliteDriver, s: Strategy, n: usize) -> Vec<i64> {
        let mut req = ClaimRequest::new("w");
        req.strategy = s;
        req.limit = n;
        q.claim(&req).unwrap().into_iter().map(|t| t.id).collect()
    }

    #[test]
    fn each_strategy_orders_across_lanes() {
        let (_d, q) = file_driver();
        let a = enqueue(&q, "a", 50);
        let b = enqueue(&q, "b", 10);
        let c = enqueue(&q, "a", 10);
        // Lanes "a" and "b" are merged: most urgent first, FIFO among equals.
        assert_eq!(claim_ids(&q, Strategy::Priority, 3), vec![b, c, a]);
    }

    #[test]
    fn batch_claims_over_many_lanes_take_the_global_best_in_order() {
        // Lanes stop early once they cannot beat the batch's worst candidate: the result must
        // still be exactly the first `limit` queued tasks in the strategy's order.
        for s in [
            Strategy::Priority,
            Strategy::Fifo,
            Strategy::Lifo,
            Strategy::WeightedRandom,
        ] {
            let (_d, q) = file_driver();
            let tasks: Vec<NewTask> = (0..600)
                .map(|i: i64| {
                    let mut t = NewTask::new(format!("t{}", (i * 7) % 9), "null");
                    t.priority = 1 + (i * 37) % 50;
                    // Spread due times so FIFO and LIFO order differs from id order.
                    t.run_after = Some(1_000 + (i * 13) % 97);
                    t
                })
                .collect();
            q.enqueue_many(&tasks).unwrap();
            for limit in [1, 7, 50, 120] {
                let mut all: Vec<Candidate> = q
                    .db
                    .read(|c| {
                        let mut st = c.prepare(
                            "SELECT id, priority, run_after, wkey FROM tasks WHERE status = 'queued'",
                        )?;
                        let rows = st.query_map([], |r| {
                            Ok(Candidate {
                                id: r.get(0)?,
                                priority: r.get(1)?,
                                run_after: r.get(2)?,
                                wkey: r.get(3)?,
                            })
                        })?;
                        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
                    })
                    .unwrap();
                all.sort_by(|a, b| s.compare(a, b));
                let want: Vec<i64> = all.iter().take(limit).map(|c| c.id).collect();
                assert_eq!(claim_ids(&q, s, limit), want, "{s:?} limit {limit}");
            }
        }
    }

    #[test]
    fn fifo_and_lifo_follow_due_time_then_id() {
        let (_d, q) = file_driver();
        let ids: Vec<i64> = (0..4)
            .map(|i| enqueue(&q, if i % 2 == 0 { "x" } else { "y" }, 100))
            .collect();
        assert_eq!(claim_ids(&q, Strategy::Fifo, 2), vec![ids[0], ids[1]]);
        assert_eq!(claim_ids(&q, Strategy::Lifo, 2), vec![ids[3], ids[2]]);
    }

    #[test]
    fn delayed_tasks_wait_until_due() {
        let (_d, q) = file_driver();
        let mut t = NewTask::new("x", "null");
        t.delay_ms = Some(60_000);
        q.enqueue(&t).unwrap();
        assert!(claim_ids(&q, Strategy::Fifo, 1).is_empty());
    }

    #[test]
    fn priority_and_weighted_step_over_delayed_heads() {
        // Delayed tasks at the head of the priority and weighted indexes are stepped over (the
        // weighted index holds run_after for that, schema V4), and never claimed early.
        let (_d, q) = file_driver();
        let delayed: Vec<NewTask> = (0..50)
            .map(|_| {
                let mut t = NewTask::new("x", "null");
                t.priority = 1;
                t.delay_ms = Some(60_000);
                t
            })
            .collect();
        q.enqueue_many(&delayed).unwrap();
        let due = enqueue(&q, "x", 1000);
        for s in [Strategy::Priority, Strategy::WeightedRandom] {
            assert_eq!(claim_ids(&q, s, 10), vec![due], "{s:?}");
            // Put it back for the next strategy.
            q.db.write(|tx| {
                tx.execute(
                    "UPDATE tasks SET status = 'queued', lease_token = NULL WHERE id = ?1",
                    [due],
                )?;
                Ok(())
            })
            .unwrap();
        }
        let cols: Vec<String> =
            q.db.read(|c| {
                let mut st =
                    c.prepare("SELECT name FROM pragma_index_info('tasks_claim_weighted')")?;
                let rows = st.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            })
            .unwrap();
        assert_eq!(cols, ["lane_id", "wkey", "run_after"]);
    }

    #[test]
    fn requirements_route_to_capable_workers_only() {
        let (_d, q) = file_driver();
        let mut t = NewTask::new("render", "null");
        t.requires = json!({"gpu": true}).as_object().cloned();
        let id = q.enqueue(&t).unwrap();
        let mut req = ClaimRequest::new("cpu-worker");
        assert!(q.claim(&req).unwrap().is_empty());
        req.filter.capabilities = json!({"gpu": true, "mem": 64}).as_object().cloned();
        assert_eq!(q.claim(&req).unwrap()[0].id, id);
    }

    #[test]
    fn type_and_queue_filters() {
        let (_d, q) = file_driver();
        let a = enqueue(&q, "a", 100);
        let mut t = NewTask::new("b", "null");
        t.queue = "other".into();
        let b = q.enqueue(&t).unwrap();
        let mut req = ClaimRequest::new("w");
        req.filter.types = Some(vec!["zzz".into()]);
        assert!(q.claim(&req).unwrap().is_empty());
        req.filter.types = None;
        req.filter.queues = Some(vec!["other".into()]);
        assert_eq!(q.claim(&req).unwrap()[0].id, b);
        req.filter.queues = None;
        req.filter.types = Some(vec!["a".into()]);
        assert_eq!(q.claim(&req).unwrap()[0].id, a);
    }

    #[test]
    fn every_claim_plan_walks_an_index_without_sorting() {
        let (_d, q) = file_driver();
        let tasks: Vec<NewTask> = (0..2000)
            .map(|i| {
                let mut t = NewTask::new(format!("t{}", i % 3), "null");
                t.priority = 1 + (i % 1000);
                t
            })
            .collect();
        q.enqueue_many(&tasks).unwrap();
        q.analyze().unwrap();
        for s in [
            Strategy::Fifo,
            Strategy::Lifo,
            Strategy::Priority,
            Strategy::WeightedRandom,
        ] {
            let plan = q.explain_claim(s).unwrap();
            let joined = plan.join("\n");
            // One covering index search per statement: the lane's head, its first due row.
            assert_eq!(
                plan.iter()
                    .filter(|l| l.contains("USING COVERING INDEX tasks_claim_"))
                    .count(),
                2,
                "{s:?}: {joined}"
            );
            assert!(!joined.contains("TEMP B-TREE"), "{s:?}: {joined}");
            assert!(!joined.contains("SCAN"), "{s:?}: {joined}");
        }
    }

    #[test]
    fn claimed_tasks_get_distinct_fresh_tokens() {
        let (_d, q) = file_driver();
        enqueue(&q, "a", 1);
        enqueue(&q, "a", 1);
        let mut req = ClaimRequest::new("w");
        req.limit = 2;
        let got = q.claim(&req).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got
            .iter()
            .all(|t| t.status == crate::Status::Running && t.attempts == 1));
        assert_ne!(got[0].lease_token, got[1].lease_token);
    }
}
