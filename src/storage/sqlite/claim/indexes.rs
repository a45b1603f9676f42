//! Claim indexes a file gets only once it uses their strategy.
//!
//! A queued task is in every claim index, so every enqueue writes each of them and every claim
//! (whatever its strategy) deletes from each. The priority index is always there: priority is the
//! default strategy, and stats, metrics and change counts walk it (it holds every queued task).
//! The FIFO/LIFO index and the weighted-random index are created by the first claim of their
//! strategy on the file (or `position` or `explain_claim` for it), from the rows already there: a
//! sort, like any `CREATE INDEX`, in that claim's write transaction, once per file. Creating an
//! index changes the schema, which every connection of every process checks at each statement, so
//! from then on every process keeps it up to date: no process can queue a task it would miss.
//! (The weighted index's keys are random, so until then it was also the most expensive to keep:
//! every write landed on a random page.)

use crate::model::error::Result;
use crate::model::strategy::Strategy;
use crate::storage::sqlite::db::WriteTx;
use std::sync::atomic::{AtomicBool, Ordering};

/// A claim index a file gets at the first claim that needs it.
pub(crate) struct LazyIndex {
    pub name: &'static str,
    create: &'static str,
    /// Its place in `Seen`.
    slot: usize,
}

/// Which lazy claim indexes a queue handle has found on its file. Once there, an index stays:
/// this build never drops one (a newer build's migration might, and it is documented that older
/// processes stop first), and `restore` refuses a file another connection has open. So a handle
/// asks the schema only until it has seen the index, and a claim then pays one flag load.
#[derive(Default)]
pub(crate) struct Seen([AtomicBool; 2]);

impl Seen {
    fn get(&self, ix: &LazyIndex) -> bool {
        self.0[ix.slot].load(Ordering::Relaxed)
    }

    fn set(&self, ix: &LazyIndex) {
        self.0[ix.slot].store(true, Ordering::Relaxed);
    }
}

/// FIFO and LIFO: due time, then id, queued tasks only.
const TIME: LazyIndex = LazyIndex {
    name: "tasks_claim_time",
    create: "CREATE INDEX IF NOT EXISTS tasks_claim_time
             ON tasks (lane_id, run_after, id) WHERE status = 'queued'",
    slot: 0,
};

/// Weighted random: the race keys (see `race`); `run_after` lets the claim step over tasks not
/// yet due without visiting their rows.
const WEIGHTED: LazyIndex = LazyIndex {
    name: "tasks_claim_weighted",
    create: "CREATE INDEX IF NOT EXISTS tasks_claim_weighted
             ON tasks (lane_id, wkey, run_after) WHERE status = 'queued'",
    slot: 1,
};

/// The index `strategy` claims through, when it is one a file gets only once it is used.
pub(crate) fn lazy_index(strategy: Strategy) -> Option<&'static LazyIndex> {
    match strategy {
        Strategy::Priority => None,
        Strategy::Fifo | Strategy::Lifo => Some(&TIME),
        Strategy::WeightedRandom => Some(&WEIGHTED),
    }
}

/// Whether the file has the index `strategy` claims through (recorded in `seen` once it has).
pub(crate) fn has_index(c: &rusqlite::Connection, strategy: Strategy, seen: &Seen) -> Result<bool> {
    let Some(ix) = lazy_index(strategy) else {
        return Ok(true);
    };
    if seen.get(ix) {
        return Ok(true);
    }
    let found: bool = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1)",
        )?
        .query_row([ix.name], |r| r.get(0))?;
    if found {
        // Found in the committed schema (an index this transaction creates is not looked up
        // again before it commits), so it will still be there.
        seen.set(ix);
    }
    Ok(found)
}

/// Create the index `strategy` claims through if the file does not have it yet. Returns true
/// when it did.
pub(crate) fn ensure_index(tx: &WriteTx, strategy: Strategy, seen: &Seen) -> Result<bool> {
    match lazy_index(strategy) {
        Some(ix) if !has_index(tx, strategy, seen)? => {
            tx.execute_batch(ix.create)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::Lease;
    use crate::model::new_task::NewTask;
    use crate::storage::sqlite::testutil::file_driver;
    use crate::storage::sqlite::SqliteDriver;

    /// How many entries the index holds (it must exist).
    fn entries(q: &SqliteDriver, name: &str) -> i64 {
        q.db.read(|c| {
            Ok(c.query_row(
                &format!("SELECT count(*) FROM tasks INDEXED BY {name} WHERE status = 'queued'"),
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap()
    }

    fn claim_one(q: &SqliteDriver, strategy: Strategy) -> Lease {
        let mut req = ClaimRequest::new("w");
        req.strategy = strategy;
        let t = q.claim(&req).unwrap().remove(0);
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    #[test]
    fn each_lazy_index_is_created_by_its_strategys_first_claim_and_kept_from_then_on() {
        for (strategy, other) in [
            (Strategy::WeightedRandom, Strategy::Fifo),
            (Strategy::Fifo, Strategy::WeightedRandom),
            (Strategy::Lifo, Strategy::Priority),
        ] {
            let (_d, q) = file_driver();
            let name = lazy_index(strategy).unwrap().name;
            let tasks: Vec<NewTask> = (1..=30)
                .map(|p| {
                    let mut t = NewTask::new("t", "null");
                    t.priority = p * 10;
                    t
                })
                .collect();
            q.enqueue_many(&tasks).unwrap();
            // Priority claims, a retry and a hand-back: no index.
            let failed = claim_one(&q, Strategy::Priority);
            q.fail(failed, "x", true).unwrap();
            let released = claim_one(&q, Strategy::Priority);
            q.release(released).unwrap();
            assert!(
                !q.db
                    .read(|c| has_index(c, strategy, &Seen::default()))
                    .unwrap(),
                "{name}"
            );

            // The first claim of its strategy creates it, holding every other queued task.
            claim_one(&q, strategy);
            assert!(
                q.db.read(|c| has_index(c, strategy, &Seen::default()))
                    .unwrap(),
                "{name}"
            );
            assert_eq!(entries(&q, name), 29, "{name}");
            // And it is kept from then on: new tasks, retries, claims in another order.
            let failed = claim_one(&q, Strategy::Priority);
            q.fail(failed, "x", true).unwrap();
            q.enqueue(&NewTask::new("t", "null")).unwrap();
            claim_one(&q, other);
            assert_eq!(entries(&q, name), 29, "{name}");
            assert!(!q
                .db
                .write(|tx| ensure_index(tx, strategy, &q.claim_indexes))
                .unwrap());
        }
    }

    #[test]
    fn an_index_created_by_a_transaction_that_rolls_back_is_not_taken_as_there() {
        let (_d, q) = file_driver();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        let e = q.db.write(|tx| {
            assert!(ensure_index(tx, Strategy::Fifo, &q.claim_indexes)?);
            Err::<(), _>(crate::model::error::Error::invalid(
                "the claim failed after",
            ))
        });
        assert!(e.is_err());
        // Neither the file nor the handle's record has it, so the next FIFO claim creates it.
        assert!(!q
            .db
            .read(|c| has_index(c, Strategy::Fifo, &Seen::default()))
            .unwrap());
        assert!(!q.claim_indexes.get(lazy_index(Strategy::Fifo).unwrap()));
        claim_one(&q, Strategy::Fifo);
        assert!(q
            .db
            .read(|c| has_index(c, Strategy::Fifo, &Seen::default()))
            .unwrap());
    }

    #[test]
    fn the_priority_index_is_always_there() {
        let (_d, q) = file_driver();
        assert!(lazy_index(Strategy::Priority).is_none());
        assert!(q
            .db
            .read(|c| has_index(c, Strategy::Priority, &Seen::default()))
            .unwrap());
        assert_eq!(entries(&q, "tasks_claim_priority"), 0);
    }
}
