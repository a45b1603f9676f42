//! Listing and counting tasks: the filter of `list` and what `stats` returns.

use crate::model::error::{Error, Result};
use crate::model::task::Status;
use serde::Serialize;
use std::collections::BTreeMap;

pub const MAX_LIST_LIMIT: i64 = 10_000;

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub task_type: Option<String>,
    pub queue: Option<String>,
    pub limit: i64,
    /// Keyset paging: rows after this id in the listing order.
    pub after_id: Option<i64>,
    /// Newest first (ids descending) instead of oldest first.
    pub descending: bool,
}

impl ListFilter {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_LIST_LIMIT).contains(&self.limit) {
            return Err(Error::invalid(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}, got {}",
                self.limit
            )));
        }
        Ok(())
    }
}

/// Serialised as `stats()` returns it: the count of each status, then the other figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub counts: BTreeMap<&'static str, i64>,
    pub total: i64,
    /// Queued tasks whose run_after is still in the future.
    pub scheduled: i64,
    /// Seconds the longest-waiting due task has been claimable; None when nothing is due.
    #[serde(rename = "oldest_queued_age_seconds")]
    pub oldest_queued_age_s: Option<f64>,
    /// The limits of the queue asked for (or all), as `limits()` gives them; filled by the
    /// operations layer.
    pub limits: Vec<crate::model::limits::LimitInfo>,
}
