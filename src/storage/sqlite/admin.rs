//! Reading and steering tasks: get, list (keyset paging), stats, cancel, set_priority, retry,
//! and per-queue retry policies.

use crate::model::error::{Error, Result};
use crate::model::listing::ListFilter;
use crate::model::listing::Stats;
use crate::model::retry::RetryOverrides;
use crate::model::task::{priority_changed, Status, TaskRow};
use crate::model::time::now_ms;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::logs::log_in;
use crate::storage::sqlite::rows::{COLUMNS, COLUMN_COUNT};
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, params_from_iter, OptionalExtension};
use std::collections::BTreeMap;

fn exists(tx: &rusqlite::Connection, id: i64) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// A task row and, after it, the traceback of its last failure: one statement, so both come
/// from one snapshot. Only a row with an error can have one, so a task that never failed costs no
/// second lookup.
fn detail_sql(filter: &str) -> String {
    format!(
        "SELECT {COLUMNS}, CASE WHEN error IS NOT NULL THEN
             (SELECT traceback FROM task_attempts WHERE task_id = tasks.id ORDER BY seq DESC LIMIT 1) END
         FROM tasks WHERE {filter}"
    )
}

fn detail_row(r: &rusqlite::Row) -> rusqlite::Result<TaskRow> {
    let mut row = TaskRow::from_row(r)?;
    row.traceback = r.get::<_, Option<String>>(COLUMN_COUNT).unwrap_or(None);
    Ok(row)
}

/// The condition that restricts a stats count to queue ?1. A queue is the set of its lanes and
/// every index the counts walk carries lane_id, so the queued counts are ranges of that queue's
/// lanes only and the finished counts never visit a table row. Two texts, not
/// `?1 IS NULL OR ...`: with the OR the planner scans the whole index instead of seeking lanes.
fn in_queue(by_queue: bool) -> &'static str {
    if by_queue {
        "lane_id IN (SELECT id FROM lanes WHERE queue = ?1)"
    } else {
        "?1 IS NULL"
    }
}

/// One count per status, each over the partial index that holds only its rows (?1: the queue).
fn stats_count_sql(by_queue: bool) -> [(&'static str, String); 5] {
    let q = in_queue(by_queue);
    [
        ("queued", format!("SELECT count(*) FROM tasks INDEXED BY tasks_claim_priority WHERE status = 'queued' AND {q}")),
        // running rows are few (one per busy worker slot): reading their table rows is cheap
        ("running", format!("SELECT count(*) FROM tasks INDEXED BY tasks_lease WHERE status = 'running' AND {q}")),
        ("failed", format!("SELECT count(*) FROM tasks INDEXED BY tasks_dead WHERE status IN ('failed', 'cancelled') AND status = 'failed' AND {q}")),
        ("cancelled", format!("SELECT count(*) FROM tasks INDEXED BY tasks_dead WHERE status IN ('failed', 'cancelled') AND status = 'cancelled' AND {q}")),
        ("completed", format!("SELECT count(*) FROM tasks INDEXED BY tasks_finished WHERE finished_at IS NOT NULL AND status = 'completed' AND {q}")),
    ]
}

/// The oldest due task's run_after and the number not yet due (?1: the queue, ?2: now).
fn stats_due_sql(by_queue: bool) -> String {
    format!(
        "SELECT min(CASE WHEN run_after <= ?2 THEN run_after END), count(CASE WHEN run_after > ?2 THEN 1 END)
         FROM tasks INDEXED BY tasks_claim_priority WHERE status = 'queued' AND {}",
        in_queue(by_queue)
    )
}

impl SqliteDriver {
    /// The task, with the traceback of its last failure.
    pub fn get(&self, id: i64) -> Result<TaskRow> {
        self.db.read(|c| {
            let mut row = c
                .prepare_cached(&detail_sql("id = ?1"))?
                .query_row([id], detail_row)
                .optional()?
                .ok_or(Error::TaskNotFound(id))?;
            let waits = crate::storage::sqlite::dependencies::waits(c, id)?;
            (row.after, row.waiting_on) = (waits.after, waits.waiting_on);
            Ok(row)
        })
    }

    pub fn find_by_idempotency_key(&self, key: &str) -> Result<Option<TaskRow>> {
        self.db.read(|c| {
            Ok(c.prepare_cached(&detail_sql("idempotency_key = ?1"))?
                .query_row([key], detail_row)
                .optional()?)
        })
    }

    /// `f` was checked above (`ListFilter::validate`).
    pub fn list(&self, f: &ListFilter) -> Result<Vec<TaskRow>> {
        // Running tasks are few (one per busy worker slot) but spread over the whole table: a
        // walk in id order would step over every finished row to find them. Their partial
        // index holds only them; sorting that handful by id is cheaper than the walk.
        let from = if f.status == Some(Status::Running) {
            "tasks INDEXED BY tasks_lease WHERE status = 'running'"
        } else {
            "tasks WHERE 1"
        };
        let mut sql = format!("SELECT {COLUMNS} FROM {from}");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = f.status {
            if matches!(s, Status::Failed | Status::Cancelled) {
                // Lets the planner use the partial index of dead letters and cancellations.
                sql.push_str(" AND status IN ('failed', 'cancelled')");
            }
            sql.push_str(" AND status = ?");
            args.push(s.as_str().to_string().into());
        }
        if let Some(t) = &f.task_type {
            sql.push_str(" AND type = ?");
            args.push(t.clone().into());
        }
        if let Some(q) = &f.queue {
            sql.push_str(" AND queue = ?");
            args.push(q.clone().into());
        }
        if let Some(a) = f.after_id {
            sql.push_str(if f.descending {
                " AND id < ?"
            } else {
                " AND id > ?"
            });
            args.push(a.into());
        }
        sql.push_str(if f.descending {
            " ORDER BY id DESC"
        } else {
            " ORDER BY id"
        });
        sql.push_str(" LIMIT ?");
        args.push(f.limit.into());
        self.db.read(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args.iter()), TaskRow::from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn stats(&self, queue: Option<&str>) -> Result<Stats> {
        let by_queue = queue.is_some();
        self.db.read(|c| {
            let tx = c.unchecked_transaction()?; // one snapshot for all the numbers
            let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
            for (name, sql) in stats_count_sql(by_queue) {
                let n: i64 = tx.prepare_cached(&sql)?.query_row([queue], |r| r.get(0))?;
                counts.insert(name, n);
            }
            let now = now_ms();
            let (oldest, scheduled): (Option<i64>, i64) = tx
                .prepare_cached(&stats_due_sql(by_queue))?
                .query_row(params![queue, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            tx.finish()?;
            Ok(Stats {
                total: counts.values().sum(),
                counts,
                oldest_queued_age_s: oldest.map(|t| now.saturating_sub(t).max(0) as f64 / 1000.0),
                scheduled,
                limits: Vec::new(),
            })
        })
    }

    /// Queued or running -> cancelled. False when the task had already finished.
    pub fn cancel(&self, id: i64) -> Result<bool> {
        self.db.write(|tx| {
            let now = now_ms();
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET status = 'cancelled', finished_at = ?2, updated_at = ?2,
                            lease_until = NULL, lease_token = NULL, lease_key = NULL
                     WHERE id = ?1 AND status IN ('queued', 'running')",
                )?
                .execute(params![id, now])?;
            if n == 1 {
                log_in(tx, id, now, "info", "cancelled")?;
                crate::storage::sqlite::dependencies::cancelled(tx, id, now)?;
                Ok(true)
            } else if exists(tx, id)? {
                Ok(false)
            } else {
                Err(Error::TaskNotFound(id))
            }
        })
    }

    /// Change the priority of a task that has not finished. False when it has. A change writes
    /// a log line: it reorders the queue, and the change feed sees it through that line.
    pub fn set_priority(&self, id: i64, priority: i64) -> Result<bool> {
        self.db.write(|tx| {
            let old: Option<i64> = tx
                .prepare_cached(
                    "SELECT priority FROM tasks WHERE id = ?1 AND status IN ('queued', 'running')",
                )?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let key = Race::read(tx)?.key(priority);
            let now = now_ms();
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET priority = ?2, wkey = ?3, updated_at = ?4
                     WHERE id = ?1 AND status IN ('queued', 'running')",
                )?
                .execute(params![id, priority, key, now])?;
            if n == 1 {
                if let Some(old) = old.filter(|&old| old != priority) {
                    log_in(tx, id, now, "info", &priority_changed(old, priority))?;
                }
                Ok(true)
            } else if exists(tx, id)? {
                Ok(false)
            } else {
                Err(Error::TaskNotFound(id))
            }
        })
    }

    /// A failed (dead-lettered) or cancelled task back to queued with fresh attempts.
    pub fn retry(&self, id: i64) -> Result<bool> {
        self.db.write(|tx| self.retry_in(tx, id))
    }

    fn retry_in(&self, tx: &WriteTx, id: i64) -> Result<bool> {
        let now = now_ms();
        let priority: Option<i64> = tx
            .prepare_cached(
                "SELECT priority FROM tasks WHERE id = ?1 AND status IN ('failed', 'cancelled')",
            )?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let Some(priority) = priority else {
            return if exists(tx, id)? {
                Ok(false)
            } else {
                Err(Error::TaskNotFound(id))
            };
        };
        tx.prepare_cached(
            "UPDATE tasks SET status = 'queued', attempts = 0, run_after = ?2, wkey = ?3, finished_at = NULL,
                    lease_until = NULL, lease_token = NULL, lease_key = NULL, updated_at = ?2
             WHERE id = ?1",
        )?
        .execute(params![id, now, Race::read(tx)?.key(priority)])?;
        log_in(tx, id, now, "info", "re-queued by retry()")?;
        Ok(true)
    }

    /// Set the retry policy of a queue for every process using this file. Keys not given keep
    /// the built-in defaults (base 1 s, factor 2, cap 3600 s, jitter 0.1). Both were checked
    /// above (`RetryOverrides::validate` and the queue name, by the engine).
    pub fn set_retry_policy(&self, queue: &str, policy: RetryOverrides) -> Result<()> {
        let text = serde_json::to_string(&policy).map_err(|e| Error::invalid(e.to_string()))?;
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO queue_config (queue, retry_policy) VALUES (?1, ?2)
                 ON CONFLICT (queue) DO UPDATE SET retry_policy = excluded.retry_policy",
                params![queue, text],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::testutil::file_driver;

    /// Counts of one queue stay inside that queue's lanes: the queued ones seek each lane of
    /// the claim index, the finished ones are answered by their index alone (lane_id is in it),
    /// so no count reads table rows of other queues' finished history.
    #[test]
    fn per_queue_stats_seek_lanes_and_cover_finished_counts() {
        let (_dir, q) = file_driver();
        let plans: Vec<(String, Vec<String>)> =
            q.db.read(|c| {
                let mut out = Vec::new();
                let mut all: Vec<(String, String)> = stats_count_sql(true)
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect();
                all.push(("due".into(), stats_due_sql(true)));
                for (name, sql) in all {
                    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let args: &[&dyn rusqlite::ToSql] =
                        if name == "due" { &[&"q", &0] } else { &[&"q"] };
                    let rows = stmt
                        .query_map(args, |r| r.get::<_, String>(3))?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    out.push((name, rows));
                }
                Ok(out)
            })
            .unwrap();
        for (name, plan) in &plans {
            let tasks: Vec<&String> = plan.iter().filter(|l| l.contains(" tasks ")).collect();
            assert_eq!(tasks.len(), 1, "{name}: {plan:?}");
            let line = tasks[0];
            match name.as_str() {
                "queued" | "due" => assert!(line.contains("(lane_id=?)"), "{name}: {plan:?}"),
                "running" => assert!(line.contains("tasks_lease"), "{name}: {plan:?}"),
                _ => assert!(line.contains("COVERING INDEX"), "{name}: {plan:?}"),
            }
        }
    }
}
