//! The weighted-random race, and the index it needs, created at a file's first weighted claim.
//!
//! Weighted random uses an exponential race: each queued task holds a key
//! `clock + Exp(1) * priority`, and the claim takes the smallest key. The minimum of independent
//! exponentials with rates `1/priority` falls on task `i` with probability
//! `(1/p_i) / sum_j (1/p_j)`, exactly the distribution asked for, and by memorylessness this stays
//! true claim after claim as long as new keys start from the current `clock` (the last claimed
//! key), which the claim advances. Every key is finite and the clock only grows, so no task starves.
//!
//! Every task draws its key when it enters the queue (a random number in its row: nothing to
//! speak of). The keys' index, `tasks_claim_weighted`, is another matter: its order is random, so
//! every enqueue writes it at a random page, and so does every claim that takes tasks in another
//! order (priority, FIFO, LIFO): 100 of the 130 WAL frames of a 100-task priority claim, 14% of
//! batched claim+complete throughput (benches/README.md, "The weighted index is built at the
//! first weighted claim"). So a file has that index only once it is used: the first
//! weighted-random claim on the file (or weighted `position`, or `explain_claim`) creates it, in
//! its write transaction, from the keys already in the rows (a sort, like any `CREATE INDEX`).
//! Creating an index changes the schema, which every connection of every process checks at each
//! statement, so from then on every process maintains it: no process can queue a task the race
//! would miss.

use crate::db::WriteTx;
use crate::error::Result;

/// The weighted claim index: the order of the race keys within a lane, queued tasks only.
/// `run_after` lets the claim step over tasks not yet due without visiting their rows.
const CREATE_INDEX: &str = "CREATE INDEX IF NOT EXISTS tasks_claim_weighted
     ON tasks (lane_id, wkey, run_after) WHERE status = 'queued'";

/// A fresh race key for a task of `priority` entering the race at `clock`.
pub fn race_key(clock: f64, priority: i64) -> f64 {
    // 1 - U is in (0, 1], so ln is finite.
    let u: f64 = 1.0 - rand::random::<f64>();
    clock + (-u.ln()) * priority as f64
}

/// The race as a writing transaction sees it: the clock new keys start from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Race {
    pub clock: f64,
}

impl Race {
    pub(crate) fn read(tx: &WriteTx) -> Result<Race> {
        let clock: Option<f64> = tx
            .prepare_cached("SELECT (SELECT value FROM meta WHERE key = 'wclock')")?
            .query_row([], |r| r.get(0))?;
        Ok(Race {
            clock: clock.unwrap_or(0.0),
        })
    }

    /// The key for a task of `priority` entering the queue now.
    pub(crate) fn key(&self, priority: i64) -> f64 {
        race_key(self.clock, priority)
    }
}

/// Whether this file has the weighted claim index.
pub(crate) fn has_index(c: &rusqlite::Connection) -> Result<bool> {
    Ok(c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'tasks_claim_weighted')",
    )?
    .query_row([], |r| r.get(0))?)
}

/// Create the weighted claim index if this file does not have it yet. Returns true when it did.
pub(crate) fn ensure_index(tx: &WriteTx) -> Result<bool> {
    if has_index(tx)? {
        return Ok(false);
    }
    tx.execute_batch(CREATE_INDEX)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Lease;
    use crate::claim::strategy::Strategy;
    use crate::claim::ClaimRequest;
    use crate::enqueue::NewTask;
    use crate::queue::testutil::file_queue;
    use crate::queue::Queue;

    #[test]
    fn exponential_race_matches_inverse_priority_weights() {
        // Two tasks, priorities 1 and 3: the first should win 3/4 of races.
        let n = 200_000;
        let wins = (0..n)
            .filter(|_| race_key(0.0, 1) < race_key(0.0, 3))
            .count();
        let share = wins as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
    }

    /// How many entries the weighted claim index holds (it must exist).
    fn indexed(q: &Queue) -> i64 {
        q.db.read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM tasks INDEXED BY tasks_claim_weighted WHERE status = 'queued'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap()
    }

    fn claim_one(q: &Queue, strategy: Strategy) -> Lease {
        let mut req = ClaimRequest::new("w");
        req.strategy = strategy;
        let t = q.claim(&req).unwrap().remove(0);
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    #[test]
    fn the_weighted_index_is_created_by_the_first_weighted_claim_and_kept_from_then_on() {
        let (_d, q) = file_queue();
        let tasks: Vec<NewTask> = (1..=30)
            .map(|p| {
                let mut t = NewTask::new("t", "null");
                t.priority = p * 10;
                t
            })
            .collect();
        q.enqueue_many(&tasks).unwrap();
        // Other strategies, a retry and a hand-back: no index.
        let failed = claim_one(&q, Strategy::Priority);
        q.fail(failed, "x", true).unwrap();
        let released = claim_one(&q, Strategy::Fifo);
        q.release(released).unwrap();
        assert!(!q.db.read(has_index).unwrap());

        // The first weighted claim creates it, holding every other queued task.
        claim_one(&q, Strategy::WeightedRandom);
        assert!(q.db.read(has_index).unwrap());
        assert_eq!(indexed(&q), 29);
        // And it is maintained from then on: new tasks, retries, claims in another order.
        let failed = claim_one(&q, Strategy::Priority);
        q.fail(failed, "x", true).unwrap();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        claim_one(&q, Strategy::Fifo);
        assert_eq!(indexed(&q), 29);
        assert!(!q.db.write(ensure_index).unwrap());
    }
}
