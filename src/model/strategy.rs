//! Scheduling strategies. Each is one index range scan per lane, in the index's own order (no
//! sort of the queue), followed by a merge of the lanes' heads in memory.
//!
//! Weighted random is an exponential race over keys drawn when a task is queued: see `race`.

use crate::model::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fifo,
    Lifo,
    Priority,
    WeightedRandom,
}

impl Strategy {
    pub fn parse(s: &str) -> Result<Strategy> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "fifo" => Strategy::Fifo,
            "lifo" => Strategy::Lifo,
            "priority" => Strategy::Priority,
            "weighted_random" | "weighted" => Strategy::WeightedRandom,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown strategy {s:?}: use 'fifo', 'lifo', 'priority' or 'weighted_random'"
                )))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Fifo => "fifo",
            Strategy::Lifo => "lifo",
            Strategy::Priority => "priority",
            Strategy::WeightedRandom => "weighted_random",
        }
    }

    /// The per-lane candidate query: a lane's first `?3` queued rows due at `?2` in this
    /// strategy's order (with `?2` at `i64::MAX`, its first rows due or not: `heads`). `INDEXED BY` pins the index whose order is the ORDER BY, so
    /// the plan cannot drift into a temporary B-tree as the table's statistics change. Each reads
    /// only what its index holds (the columns `compare` uses; 0 for the others), so a candidate
    /// costs no visit to the table row: a claim over many lanes reads one index entry per lane.
    pub fn candidate_sql(self) -> &'static str {
        match self {
            Strategy::Priority => {
                "SELECT id, priority, run_after, 0.0 FROM tasks INDEXED BY tasks_claim_priority
                 WHERE lane_id = ?1 AND status = 'queued' AND run_after <= ?2
                 ORDER BY priority, run_after, id LIMIT ?3"
            }
            Strategy::Fifo => {
                "SELECT id, 0, run_after, 0.0 FROM tasks INDEXED BY tasks_claim_time
                 WHERE lane_id = ?1 AND status = 'queued' AND run_after <= ?2
                 ORDER BY run_after, id LIMIT ?3"
            }
            Strategy::Lifo => {
                "SELECT id, 0, run_after, 0.0 FROM tasks INDEXED BY tasks_claim_time
                 WHERE lane_id = ?1 AND status = 'queued' AND run_after <= ?2
                 ORDER BY run_after DESC, id DESC LIMIT ?3"
            }
            Strategy::WeightedRandom => {
                "SELECT id, 0, run_after, wkey FROM tasks INDEXED BY tasks_claim_weighted
                 WHERE lane_id = ?1 AND status = 'queued' AND run_after <= ?2
                 ORDER BY wkey LIMIT ?3"
            }
        }
    }

    /// Order two candidates from different lanes the way the index orders them within a lane.
    pub fn compare(self, a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
        match self {
            Strategy::Priority => {
                (a.priority, a.run_after, a.id).cmp(&(b.priority, b.run_after, b.id))
            }
            Strategy::Fifo => (a.run_after, a.id).cmp(&(b.run_after, b.id)),
            Strategy::Lifo => (b.run_after, b.id).cmp(&(a.run_after, a.id)),
            Strategy::WeightedRandom => a.wkey.total_cmp(&b.wkey).then(a.id.cmp(&b.id)),
        }
    }
}

/// A lane's head as its claim index holds it: the fields the strategy does not order by are 0.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: i64,
    pub priority: i64,
    pub run_after: i64,
    pub wkey: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_the_documented_names_only() {
        for s in ["fifo", "lifo", "priority", "weighted_random"] {
            assert_eq!(Strategy::parse(s).unwrap().as_str(), s);
        }
        let e = Strategy::parse("random").unwrap_err().to_string();
        assert!(e.contains("weighted_random"), "{e}");
    }
}
