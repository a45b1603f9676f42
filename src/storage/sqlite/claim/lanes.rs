//! Lanes: one per (queue, type, requires). Every claim index leads with `lane_id`, so a claim
//! filtered by queues, types and capabilities probes only the lanes it may take from.
//! Lanes are never deleted, so ids cached in a process stay valid.

use crate::model::claim::Lane;
use crate::model::claim::LaneFilter;
use crate::model::claim::LaneKey;
use crate::model::error::Result;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::params;
use serde_json::{Map, Value};
use std::collections::HashMap;

// (queue, type, canonical requires or '')

#[derive(Default)]
pub struct LaneCache {
    by_key: HashMap<LaneKey, i64>,
    /// Every lane known in the file, in id order; refreshed by claims.
    pub list: Vec<Lane>,
    pub max_id: i64,
}

impl LaneCache {
    pub fn remember(&mut self, key: LaneKey, id: i64) {
        self.by_key.insert(key, id);
    }
}

impl SqliteDriver {
    /// The id of a lane, creating it inside `tx` when new. Lanes created here are reported in
    /// `created` and cached by the caller once `tx` has committed.
    pub(crate) fn lane_id_in(
        &self,
        tx: &WriteTx,
        key: &LaneKey,
        created: &mut Vec<(LaneKey, i64)>,
    ) -> Result<i64> {
        if let Some(id) = self.lanes.lock().by_key.get(key) {
            return Ok(*id);
        }
        if let Some((_, id)) = created.iter().find(|(k, _)| k == key) {
            return Ok(*id);
        }
        tx.prepare_cached(
            "INSERT INTO lanes (queue, type, requires) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![key.0, key.1, key.2])?;
        let id: i64 = tx
            .prepare_cached(
                "SELECT id FROM lanes WHERE queue = ?1 AND type = ?2 AND requires = ?3",
            )?
            .query_row(params![key.0, key.1, key.2], |r| r.get(0))?;
        created.push((key.clone(), id));
        Ok(id)
    }

    /// Lanes admitted by `filter`, after picking up lanes created since last time (by this
    /// handle or another process) when `refresh`. A claim whose memory is trusted passes false:
    /// nothing was committed since its previous claim, so no lane can be new (`claim::heads`).
    pub(crate) fn eligible_lanes(
        &self,
        conn: &rusqlite::Connection,
        filter: &LaneFilter,
        refresh: bool,
    ) -> Result<Vec<i64>> {
        let mut cache = self.lanes.lock();
        if refresh {
            let mut stmt = conn.prepare_cached(
                "SELECT id, queue, type, requires FROM lanes WHERE id > ?1 ORDER BY id",
            )?;
            let mut rows = stmt.query([cache.max_id])?;
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let requires_text: String = r.get(3)?;
                let requires = if requires_text.is_empty() {
                    None
                } else {
                    serde_json::from_str::<Map<String, Value>>(&requires_text).ok()
                };
                let lane = Lane {
                    id,
                    queue: r.get(1)?,
                    task_type: r.get(2)?,
                    requires,
                };
                cache.max_id = cache.max_id.max(id);
                cache.list.push(lane);
            }
        }
        Ok(cache
            .list
            .iter()
            .filter(|l| filter.admits(l))
            .map(|l| l.id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lane(queue: &str, t: &str, req: Option<Value>) -> Lane {
        Lane {
            id: 1,
            queue: queue.into(),
            task_type: t.into(),
            requires: req.and_then(|v| v.as_object().cloned()),
        }
    }

    #[test]
    fn capabilities_must_contain_every_requirement() {
        let l = lane(
            "default",
            "render",
            Some(json!({"gpu": true, "region": "eu"})),
        );
        let mut f = LaneFilter::default();
        assert!(
            !f.admits(&l),
            "a worker without capabilities never takes a task that requires some"
        );
        f.capabilities = json!({"gpu": true}).as_object().cloned();
        assert!(!f.admits(&l));
        f.capabilities = json!({"gpu": true, "region": "eu", "extra": 1})
            .as_object()
            .cloned();
        assert!(f.admits(&l));
        f.capabilities = json!({"gpu": false, "region": "eu"}).as_object().cloned();
        assert!(!f.admits(&l));
    }

    #[test]
    fn queue_and_type_filters() {
        let l = lane("mail", "send", None);
        let f = LaneFilter {
            queues: Some(vec!["mail".into()]),
            types: Some(vec!["send".into(), "other".into()]),
            capabilities: None,
        };
        assert!(f.admits(&l));
        let f = LaneFilter {
            queues: Some(vec!["default".into()]),
            ..Default::default()
        };
        assert!(!f.admits(&l));
    }
}
