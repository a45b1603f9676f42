//! Lanes: one per (queue, type, requires), as on SQLite (see storage/sqlite/claim/lanes.rs).
//! Lanes are never deleted, so the ids a handle caches stay valid; a claim picks up the lanes
//! other processes created since, and filters them by queue, type and capabilities here.

use crate::model::claim::{Lane, LaneFilter, LaneKey};
use crate::model::error::Result;
use crate::model::limits::NamedLane;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::PgDriver;
use serde_json::{Map, Value};
use std::collections::HashMap;

#[derive(Default)]
pub struct LaneCache {
    by_key: HashMap<LaneKey, i64>,
    /// Every lane this handle has seen, in the order it saw them.
    list: Vec<Lane>,
    /// Whether this handle has seen the schema's weighted claim index (see `claim`): indexes
    /// are never dropped, so once seen it is not looked up again.
    pub weighted_index: bool,
}

impl LaneCache {
    pub fn remember(&mut self, key: LaneKey, id: i64) {
        self.by_key.insert(key, id);
    }
}

impl PgDriver {
    /// The id of a lane, creating it inside `tx` when new. Lanes created here are reported in
    /// `created` and cached by the caller once `tx` has committed.
    pub(crate) fn lane_id_in(
        &self,
        tx: &mut Tx,
        key: &LaneKey,
        created: &mut Vec<(LaneKey, i64)>,
    ) -> Result<i64> {
        if let Some(id) = self.lanes.lock().by_key.get(key) {
            return Ok(*id);
        }
        if let Some((_, id)) = created.iter().find(|(k, _)| k == key) {
            return Ok(*id);
        }
        // Two statements: when another transaction inserts the same lane first, this insert
        // waits for it and does nothing, and only a new statement sees the committed row.
        tx.execute(
            "INSERT INTO lanes (queue, type, requires) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&key.0, &key.1, &key.2],
        )?;
        let id: i64 = tx
            .query_one(
                "SELECT id FROM lanes WHERE queue = $1 AND type = $2 AND requires = $3",
                &[&key.0, &key.1, &key.2],
            )?
            .get(0);
        created.push((key.clone(), id));
        Ok(id)
    }

    /// Lanes admitted by `filter`, after reading the lanes this handle has not seen yet. Ids
    /// of a sequence commit out of order, so "newer than the highest seen" could miss one:
    /// the query names what is known instead (lanes are few).
    /// With them, the admitted lanes' (id, queue, type) when a limit covers one of them
    /// (limits.rs): the limits' keys come in the same round trip as the new lanes (id 0), so a
    /// claim no limit covers pays nothing more.
    pub(crate) fn eligible_lanes_limited(
        &self,
        tx: &mut Tx,
        filter: &LaneFilter,
    ) -> Result<(Vec<i64>, Option<Vec<NamedLane>>)> {
        let known: Vec<i64> = self.lanes.lock().list.iter().map(|l| l.id).collect();
        let rows = tx.query(
            "SELECT id, queue, type, requires FROM lanes WHERE id <> ALL($1)
             UNION ALL SELECT 0, queue, type, '' FROM limits ORDER BY 1",
            &[&known],
        )?;
        let mut limit_keys: Vec<(String, String)> = Vec::new();
        let mut cache = self.lanes.lock();
        for r in rows {
            let id: i64 = r.get(0);
            if id == 0 {
                limit_keys.push((r.get(1), r.get(2)));
                continue;
            }
            if cache.list.iter().any(|l| l.id == id) {
                continue; // another thread of this handle read it meanwhile
            }
            let requires: String = r.get(3);
            cache.list.push(Lane {
                id,
                queue: r.get(1),
                task_type: r.get(2),
                requires: if requires.is_empty() {
                    None
                } else {
                    serde_json::from_str::<Map<String, Value>>(&requires).ok()
                },
            });
        }
        let admitted: Vec<i64> = cache
            .list
            .iter()
            .filter(|l| filter.admits(l))
            .map(|l| l.id)
            .collect();
        // What this handle's waiters wait for, for its listener (see `listener::Interest`).
        self.interest
            .lock()
            .note(&admitted, cache.list.iter().map(|l| l.id));
        let covered = |l: &Lane| {
            limit_keys
                .iter()
                .any(|(q, t)| *q == l.queue && (t.is_empty() || *t == l.task_type))
        };
        let limited = cache
            .list
            .iter()
            .any(|l| filter.admits(l) && covered(l))
            .then(|| {
                cache
                    .list
                    .iter()
                    .filter(|l| filter.admits(l))
                    .map(|l| (l.id, l.queue.clone(), l.task_type.clone()))
                    .collect()
            });
        Ok((admitted, limited))
    }
}
