//! The weighted-random race, and when a file starts running it.
//!
//! Weighted random uses an exponential race: each queued task holds a key
//! `clock + Exp(1) * priority`, and the claim takes the smallest key. The minimum of independent
//! exponentials with rates `1/priority` falls on task `i` with probability
//! `(1/p_i) / sum_j (1/p_j)`, exactly the distribution asked for, and by memorylessness this stays
//! true claim after claim as long as new keys start from the current `clock` (the last claimed
//! key), which the claim advances. Every key is finite and the clock only grows, so no task starves.
//!
//! The keys are random, so their index (`tasks_claim_weighted`) is written at a random page by
//! every enqueue and, when tasks are claimed in another order (priority, FIFO, LIFO), by every
//! claim: 100 of the 130 WAL frames of a 100-task priority claim, and 14% of batched
//! claim+complete throughput (benches/README.md, "The race starts at the first weighted claim").
//! A file pays for that only once it is used: until the first weighted-random claim (or weighted
//! `position`) on a file, tasks are queued with the key `NOT_RACING`, which keeps them out of the
//! index (its `WHERE` has `wkey >= 0`). That first claim sets the `race` flag in `meta` and draws a
//! fresh key for every queued task, in its own write transaction; from then on every task that
//! enters the queue draws one. The flag is read inside each writing transaction, under the write
//! lock, so a process that has not seen it yet cannot queue a task the race would never see.

use crate::db::WriteTx;
use crate::error::Result;
use rusqlite::OptionalExtension;

/// The key of a task queued while the file runs no race: outside the weighted claim index.
pub const NOT_RACING: f64 = -1.0;
const _: () = assert!(
    NOT_RACING < 0.0,
    "the index's `wkey >= 0` must exclude NOT_RACING"
);

/// A fresh race key for a task of `priority` entering the race at `clock`.
pub fn race_key(clock: f64, priority: i64) -> f64 {
    // 1 - U is in (0, 1], so ln is finite.
    let u: f64 = 1.0 - rand::random::<f64>();
    clock + (-u.ln()) * priority as f64
}

/// The race as a writing transaction sees it (read under the write lock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Race {
    pub clock: f64,
    pub on: bool,
}

impl Race {
    pub(crate) fn read(tx: &WriteTx) -> Result<Race> {
        Ok(tx
            .prepare_cached(
                "SELECT (SELECT value FROM meta WHERE key = 'wclock'),
                        (SELECT value FROM meta WHERE key = 'race')",
            )?
            .query_row([], |r| {
                Ok(Race {
                    clock: r.get::<_, Option<f64>>(0)?.unwrap_or(0.0),
                    on: r.get::<_, Option<i64>>(1)?.unwrap_or(0) != 0,
                })
            })?)
    }

    /// The key for a task of `priority` entering the queue now.
    pub(crate) fn key(&self, priority: i64) -> f64 {
        if self.on {
            race_key(self.clock, priority)
        } else {
            NOT_RACING
        }
    }
}

/// Start the race on this file if it is not running: every queued task draws a key from the
/// current clock, as if it had been queued with one. Returns true when it started it now.
pub(crate) fn start(tx: &WriteTx) -> Result<bool> {
    let race = Race::read(tx)?;
    if race.on {
        return Ok(false);
    }
    let queued: Vec<(i64, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT id, priority FROM tasks INDEXED BY tasks_claim_priority WHERE status = 'queued'",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut set = tx.prepare("UPDATE tasks SET wkey = ?2 WHERE id = ?1")?;
    for (id, priority) in queued {
        set.execute(rusqlite::params![id, race_key(race.clock, priority)])?;
    }
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('race', 1) ON CONFLICT (key) DO UPDATE SET value = 1",
    )?
    .execute([])?;
    Ok(true)
}

/// Whether the race runs on this file (for tests and `position`).
pub(crate) fn is_on(c: &rusqlite::Connection) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT value FROM meta WHERE key = 'race'")?
            .query_row([], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0)
            != 0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_key_is_in_the_index_range_and_a_file_without_race_gives_none() {
        for p in [1, 100, 1000] {
            for _ in 0..10_000 {
                assert!(race_key(0.0, p) >= 0.0);
            }
        }
        let off = Race {
            clock: 5.0,
            on: false,
        };
        assert_eq!(off.key(1), NOT_RACING);
        assert!(Race { on: true, ..off }.key(1) >= 5.0);
    }

    use crate::ack::Lease;
    use crate::claim::strategy::Strategy;
    use crate::claim::ClaimRequest;
    use crate::enqueue::NewTask;
    use crate::queue::testutil::file_queue;
    use crate::queue::Queue;

    /// (keys of the queued tasks, how many entries the weighted claim index holds)
    fn keys_and_index(q: &Queue) -> (Vec<f64>, i64) {
        q.db.read(|c| {
            let keys = c
                .prepare("SELECT wkey FROM tasks WHERE status = 'queued' ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<f64>>>()?;
            let indexed = c.query_row(
                "SELECT count(*) FROM tasks INDEXED BY tasks_claim_weighted
                 WHERE status = 'queued' AND wkey >= 0",
                [],
                |r| r.get(0),
            )?;
            Ok((keys, indexed))
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
    fn a_file_runs_no_race_until_its_first_weighted_claim_then_every_queued_task_races() {
        let (_d, q) = file_queue();
        let tasks: Vec<NewTask> = (1..=30)
            .map(|p| {
                let mut t = NewTask::new("t", "null");
                t.priority = p * 10;
                t
            })
            .collect();
        q.enqueue_many(&tasks).unwrap();
        // Other strategies, a retry and a hand-back leave the race off: no key, no index entry.
        let failed = claim_one(&q, Strategy::Priority);
        q.fail(failed, "x", true).unwrap();
        let released = claim_one(&q, Strategy::Fifo);
        q.release(released).unwrap();
        let (keys, indexed) = keys_and_index(&q);
        assert_eq!(keys.len(), 30);
        assert!(keys.iter().all(|&k| k == NOT_RACING), "{keys:?}");
        assert_eq!(indexed, 0);
        assert!(!q.db.read(is_on).unwrap());

        // The first weighted claim starts it: every queued task draws a key and is indexed.
        claim_one(&q, Strategy::WeightedRandom);
        assert!(q.db.read(is_on).unwrap());
        let (keys, indexed) = keys_and_index(&q);
        assert_eq!((keys.len(), indexed), (29, 29));
        assert!(keys.iter().all(|&k| k >= 0.0), "{keys:?}");

        // From then on a task entering the queue (new, retried) draws its key from the clock.
        let clock = |q: &Queue| {
            q.db.read(|c| {
                Ok(
                    c.query_row("SELECT value FROM meta WHERE key = 'wclock'", [], |r| {
                        r.get::<_, f64>(0)
                    })?,
                )
            })
            .unwrap()
        };
        let failed = claim_one(&q, Strategy::Priority);
        q.fail(failed, "x", true).unwrap();
        q.enqueue(&NewTask::new("t", "null")).unwrap();
        let (keys, indexed) = keys_and_index(&q);
        assert_eq!((keys.len(), indexed), (30, 30));
        let now = clock(&q);
        assert!(now > 0.0);
        assert!(keys.iter().all(|&k| k >= 0.0));
        assert!(keys.last().is_some_and(|&k| k >= now), "{keys:?} {now}");
        // Starting it again draws nothing new.
        assert!(!q.db.write(start).unwrap());
        assert_eq!(keys_and_index(&q).0, keys);
    }
}
