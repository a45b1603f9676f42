//! A queued task's position in line: how many tasks its worker pool would run before it.
//!
//! The tasks that compete with it are the queued, due tasks of every lane of its queue (every
//! type and `requires` variant): a claim merges the heads of the lanes it may take in the
//! strategy's order, so a worker taking every type of the queue runs them in one order across
//! types, and a project (one queue) sees its items numbered 0, 1, 2, ... in claim order. "Before
//! it" is the order of the strategy's claim index, the same order a claim walks: the count is one
//! range of that index per lane, bounded by the task's own key, so it costs O(lanes x (log n +
//! position)) index entries and never visits a task behind it, nor anything outside its queue. (SQLite's B-trees keep no subtree counts, so counting k entries
//! means stepping over them: a task far down a deep backlog costs more than the head's.)
//!
//! - priority: tasks with a smaller (priority, run_after, id) that are due now;
//! - fifo: due tasks with a smaller (run_after, id); lifo: due tasks with a larger one;
//! - weighted_random: due tasks with a smaller race key. Keys are drawn when a task enters the
//!   queue and a claim always takes the smallest, so this is exactly the number of tasks that run
//!   first if nothing new arrives; a task enqueued later may still draw a smaller key and cut in
//!   (with a chance that grows as its priority number shrinks), so it is a lower bound of the
//!   wait rather than a promise. The index holds no `run_after`, so this one reads the rows it
//!   counts.
//!
//! A task that is not yet due gets the number of due tasks ahead of it in that order: it cannot
//! be claimed before its `run_after` anyway.

use crate::model::error::{Error, Result};
use crate::model::strategy::Strategy;
use crate::model::time::now_ms;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, OptionalExtension};

fn count_sql(strategy: Strategy) -> &'static str {
    // ?1 lane, ?2 now, ?3 the task's id, then its key: ?4 priority and ?5 run_after (priority),
    // ?4 run_after (lifo), ?4 wkey (weighted random). FIFO: (?2, ?3) is the bound itself, the
    // task's (run_after, id), or (now, MAX) for a task not yet due: either way everything below
    // it is due, so the range needs no other condition.
    match strategy {
        Strategy::Priority => {
            "SELECT count(*) FROM tasks INDEXED BY tasks_claim_priority
             WHERE lane_id = ?1 AND status = 'queued' AND (priority, run_after, id) < (?4, ?5, ?3)
               AND run_after <= ?2"
        }
        Strategy::Fifo => {
            "SELECT count(*) FROM tasks INDEXED BY tasks_claim_time
             WHERE lane_id = ?1 AND status = 'queued' AND (run_after, id) < (?2, ?3)"
        }
        Strategy::Lifo => {
            "SELECT count(*) FROM tasks INDEXED BY tasks_claim_time
             WHERE lane_id = ?1 AND status = 'queued' AND (run_after, id) > (?4, ?3) AND run_after <= ?2"
        }
        Strategy::WeightedRandom => {
            "SELECT count(*) FROM tasks INDEXED BY tasks_claim_weighted
             WHERE lane_id = ?1 AND status = 'queued' AND (wkey, id) < (?4, ?3) AND run_after <= ?2"
        }
    }
}

impl SqliteDriver {
    /// How many queued, due tasks of its queue (any type) run before task `id` under `strategy`
    /// (0: it is next). `None` when the task is not queued; `TaskNotFound` when there is none.
    pub fn position(&self, id: i64, strategy: Strategy) -> Result<Option<i64>> {
        // Counted over the strategy's claim index, which the file's first claim of that strategy
        // creates (see `claim::indexes`): create it as that claim would.
        self.ensure_claim_index(strategy)?;
        self.db.read(|c| {
            let tx = c.unchecked_transaction()?; // the task and the counts from one snapshot
            let row: Option<(String, String, i64, i64, f64)> = tx
                .prepare_cached(
                    "SELECT status, queue, priority, run_after, wkey FROM tasks WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            let Some((status, queue, priority, run_after, wkey)) = row else {
                return Err(Error::TaskNotFound(id));
            };
            // A task held on its dependencies is in no line yet (`model::dependencies`).
            if status != "queued" || run_after == crate::model::dependencies::HELD_UNTIL {
                return Ok(None);
            }
            let lanes: Vec<i64> = tx
                .prepare_cached("SELECT id FROM lanes WHERE queue = ?1")?
                .query_map([queue], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let now = now_ms();
            let mut stmt = tx.prepare_cached(count_sql(strategy))?;
            let mut ahead = 0i64;
            for lane in lanes {
                let n: i64 = match strategy {
                    Strategy::Priority => {
                        stmt.query_row(params![lane, now, id, priority, run_after], |r| r.get(0))?
                    }
                    Strategy::Fifo if run_after <= now => {
                        stmt.query_row(params![lane, run_after, id], |r| r.get(0))?
                    }
                    Strategy::Fifo => stmt.query_row(params![lane, now, i64::MAX], |r| r.get(0))?,
                    Strategy::Lifo => {
                        stmt.query_row(params![lane, now, id, run_after], |r| r.get(0))?
                    }
                    Strategy::WeightedRandom => {
                        stmt.query_row(params![lane, now, id, wkey], |r| r.get(0))?
                    }
                };
                ahead += n;
            }
            drop(stmt);
            tx.finish()?;
            Ok(Some(ahead))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::new_task::NewTask;
    use crate::storage::sqlite::testutil::file_driver;

    fn task(t: &str, priority: i64) -> NewTask {
        let mut n = NewTask::new(t, "null");
        n.priority = priority;
        n
    }

    /// Every strategy's position equals the number of claims, by a worker taking every type of
    /// the queue, before the task comes out: types interleave, so positions count across them.
    #[test]
    fn position_matches_the_claim_order() {
        for strategy in [
            Strategy::Priority,
            Strategy::Fifo,
            Strategy::Lifo,
            Strategy::WeightedRandom,
        ] {
            let (_d, q) = file_driver();
            let mut ids = Vec::new();
            for i in 0..30 {
                let mut t = task(["x", "y", "z"][i % 3], [5, 1, 9, 3][i % 4]);
                if i % 4 == 0 {
                    t.requires = Some(serde_json::from_str(r#"{"gpu": true}"#).unwrap());
                }
                ids.push(q.enqueue(&t).unwrap());
                let mut other = task("x", 1);
                other.queue = "other-queue".into(); // another queue's tasks are never ahead
                q.enqueue(&other).unwrap();
            }
            let expected: Vec<(i64, i64)> = ids
                .iter()
                .map(|&id| (id, q.position(id, strategy).unwrap().unwrap()))
                .collect();
            let mut req = ClaimRequest::new("w");
            req.strategy = strategy;
            req.filter.queues = Some(vec!["default".into()]);
            req.filter.capabilities = Some(serde_json::from_str(r#"{"gpu": true}"#).unwrap());
            for n in 0..30 {
                let t = q.claim(&req).unwrap().pop().unwrap();
                let (_, pos) = expected.iter().find(|(id, _)| *id == t.id).unwrap();
                assert_eq!(*pos, n, "{strategy:?}: task {} came out after {n}", t.id);
                assert_eq!(q.position(t.id, strategy).unwrap(), None);
            }
        }
    }

    #[test]
    fn delayed_tasks_are_not_ahead_and_absent_tasks_are_an_error() {
        let (_d, q) = file_driver();
        let mut later = task("x", 1);
        later.delay_ms = Some(3_600_000);
        let later = q.enqueue(&later).unwrap();
        let now = q.enqueue(&task("x", 50)).unwrap();
        assert_eq!(q.position(now, Strategy::Priority).unwrap(), Some(0));
        assert_eq!(q.position(later, Strategy::Priority).unwrap(), Some(0));
        assert_eq!(q.position(later, Strategy::Fifo).unwrap(), Some(1));
        assert!(matches!(
            q.position(9999, Strategy::Priority),
            Err(Error::TaskNotFound(9999))
        ));
    }

    #[test]
    fn counts_walk_a_range_of_the_claim_index() {
        let (_d, q) = file_driver();
        q.enqueue(&task("x", 1)).unwrap();
        for s in [Strategy::Fifo, Strategy::WeightedRandom] {
            q.ensure_claim_index(s).unwrap(); // as the first position of s would
        }
        for s in [
            Strategy::Priority,
            Strategy::Fifo,
            Strategy::Lifo,
            Strategy::WeightedRandom,
        ] {
            let plan: Vec<String> =
                q.db.read(|c| {
                    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {}", count_sql(s)))?;
                    let n = st.parameter_count();
                    let args = vec![1i64; n];
                    let rows =
                        st.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?;
                    Ok(rows.collect::<rusqlite::Result<_>>()?)
                })
                .unwrap();
            let plan = plan.join(" ");
            assert!(
                plan.contains("SEARCH tasks USING") && plan.contains("(lane_id=? AND "),
                "{s:?}: {plan}"
            );
        }
    }
}
