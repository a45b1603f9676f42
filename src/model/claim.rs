//! A claim request, and which lanes a worker may take from (its queues, types and capabilities).

use crate::model::error::{Error, Result};
use crate::model::strategy::Strategy;
use serde_json::{Map, Value};

pub const MAX_CLAIM_BATCH: usize = 10_000;

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub worker_id: String,
    pub strategy: Strategy,
    pub filter: LaneFilter,
    pub lease_ms: i64,
    pub limit: usize,
}

impl ClaimRequest {
    pub fn new(worker_id: impl Into<String>) -> ClaimRequest {
        ClaimRequest {
            worker_id: worker_id.into(),
            strategy: Strategy::Priority,
            filter: LaneFilter::default(),
            lease_ms: 60_000,
            limit: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.worker_id.trim().is_empty() {
            return Err(Error::invalid("worker_id must be a non-empty string"));
        }
        crate::model::time::check_duration(
            "lease",
            self.lease_ms,
            crate::model::time::Least::Positive,
        )?;
        if self.limit == 0 || self.limit > MAX_CLAIM_BATCH {
            return Err(Error::invalid(format!(
                "limit must be between 1 and {MAX_CLAIM_BATCH}, got {}",
                self.limit
            )));
        }
        Ok(())
    }
}

pub type LaneKey = (String, String, String);
#[derive(Debug, Clone)]
pub struct Lane {
    pub id: i64,
    pub queue: String,
    pub task_type: String,
    pub requires: Option<Map<String, Value>>,
}

/// The claim filters, already validated.
#[derive(Debug, Clone, Default)]
pub struct LaneFilter {
    pub queues: Option<Vec<String>>,
    pub types: Option<Vec<String>>,
    pub capabilities: Option<Map<String, Value>>,
}

impl LaneFilter {
    pub fn admits(&self, lane: &Lane) -> bool {
        if let Some(qs) = &self.queues {
            if !qs.contains(&lane.queue) {
                return false;
            }
        }
        if let Some(ts) = &self.types {
            if !ts.contains(&lane.task_type) {
                return false;
            }
        }
        match &lane.requires {
            None => true,
            Some(req) => match &self.capabilities {
                None => false,
                Some(caps) => req.iter().all(|(k, v)| caps.get(k) == Some(v)),
            },
        }
    }
}
