//! The weighted-random race: the keys and the clock they start from.
//!
//! Weighted random uses an exponential race: each queued task holds a key
//! `clock + Exp(1) * priority`, and the claim takes the smallest key. The minimum of independent
//! exponentials with rates `1/priority` falls on task `i` with probability
//! `(1/p_i) / sum_j (1/p_j)`, exactly the distribution asked for, and by memorylessness this stays
//! true claim after claim as long as new keys start from the current `clock` (the last claimed
//! key), which the claim advances. Every key is finite and the clock only grows, so no task starves.
//!
//! Every task draws its key when it enters the queue (a random number in its row). The index of
//! the keys exists only on files that claim weighted random (see `indexes`).

use crate::model::error::Result;
use crate::storage::sqlite::db::WriteTx;

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
}
