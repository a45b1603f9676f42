//! A queued task's position in line: how many queued, due tasks of the lanes of its queue (every
//! type and `requires` variant) a claim of `strategy` takes before it, as on SQLite (see
//! storage/sqlite/position.rs). Each count is a range of the strategy's claim index per lane,
//! bounded by the task's own key (a row comparison the index can seek). For weighted random
//! that key is the race key: the count is exactly the number of tasks that run first if nothing
//! new arrives, and a lower bound otherwise (a task queued later may draw a smaller key).

use crate::model::error::{Error, Result};
use crate::model::strategy::Strategy;
use crate::storage::postgres::{db_now, PgDriver};

/// $1 queue, $2 now, then the task's key: ($3 priority, $4 run_after, $5 id) for priority,
/// ($3 run_after, $4 id) for FIFO and LIFO, ($3 wkey, $4 id) for weighted random.
fn count_sql(strategy: Strategy) -> String {
    let ahead = match strategy {
        Strategy::Priority => "(priority, run_after, id) < ($3, $4, $5) AND run_after <= $2",
        // The bound is the task's (run_after, id), or (now, max) for a task not due yet:
        // either way everything below it is due ($2 is named for its type only).
        Strategy::Fifo => "(run_after, id) < ($3, $4) AND $2::bigint IS NOT NULL",
        Strategy::Lifo => "(run_after, id) > ($3, $4) AND run_after <= $2",
        Strategy::WeightedRandom => "(wkey, id) < ($3::float8, $4) AND run_after <= $2",
    };
    format!(
        "SELECT count(*) FROM tasks
         WHERE lane_id IN (SELECT id FROM lanes WHERE queue = $1)
           AND status = 'queued' AND {ahead}"
    )
}

impl PgDriver {
    /// How many queued, due tasks of its queue (any type) run before task `id` under `strategy`
    /// (0: it is next). `None` when the task is not queued; `TaskNotFound` when there is none.
    pub fn position(&self, id: i64, strategy: Strategy) -> Result<Option<i64>> {
        self.ensure_claim_index(strategy)?;
        let sql = count_sql(strategy);
        self.read(|tx| {
            let Some(row) = tx.query_opt(
                "SELECT status, queue, priority, run_after, wkey FROM tasks WHERE id = $1",
                &[&id],
            )?
            else {
                return Err(Error::TaskNotFound(id));
            };
            let (status, queue): (String, String) = (row.get(0), row.get(1));
            let (priority, run_after, wkey): (i64, i64, f64) = (row.get(2), row.get(3), row.get(4));
            // A task held on its dependencies is in no line yet (`model::dependencies`).
            if status != "queued" || run_after == crate::model::dependencies::HELD_UNTIL {
                return Ok(None);
            }
            let now = db_now(tx)?;
            let (ra, bound_id) = match strategy {
                Strategy::Fifo if run_after > now => (now, i64::MAX),
                _ => (run_after, id),
            };
            let row = match strategy {
                Strategy::Priority => {
                    tx.query_one(&sql, &[&queue, &now, &priority, &run_after, &id])?
                }
                Strategy::WeightedRandom => tx.query_one(&sql, &[&queue, &now, &wkey, &id])?,
                _ => tx.query_one(&sql, &[&queue, &now, &ra, &bound_id])?,
            };
            let n: i64 = row.get(0);
            Ok(Some(n))
        })
    }
}
