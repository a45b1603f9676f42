//! Reading and steering tasks: get, list (keyset paging), stats, cancel, set_priority, retry,
//! per-queue retry policies and the task's log, as on SQLite (storage/sqlite/admin.rs, logs.rs).

use crate::model::error::{Error, Result};
use crate::model::listing::{ListFilter, Stats};
use crate::model::observe::LogRow;
use crate::model::retry::RetryOverrides;
use crate::model::task::{priority_changed, Status, TaskRow};
use crate::storage::postgres::logs::log_in;
use crate::storage::postgres::rows::{task_row, task_rows, COLUMNS, COLUMN_COUNT};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::{db_now, PgDriver};
use postgres::types::ToSql;
use std::collections::BTreeMap;

fn exists(tx: &mut Tx, id: i64) -> Result<bool> {
    Ok(tx
        .query_opt("SELECT 1 FROM tasks WHERE id = $1", &[&id])?
        .is_some())
}

/// A task row and, after it, the traceback of its last failure (only a row with an error can
/// have one).
fn detail_sql(filter: &str) -> String {
    format!(
        "SELECT {COLUMNS}, CASE WHEN error IS NOT NULL THEN
             (SELECT traceback FROM task_attempts WHERE task_id = tasks.id ORDER BY seq DESC LIMIT 1) END
         FROM tasks WHERE {filter}"
    )
}

fn detail_row(r: &postgres::Row) -> Result<TaskRow> {
    let mut row = task_row(r)?;
    row.traceback = r.try_get(COLUMN_COUNT)?;
    Ok(row)
}

/// Every count of `stats` in one statement (one snapshot), each over the partial index that
/// holds only its rows; `{q}` restricts it to the lanes of queue $2.
const STATS_TEMPLATE: &str = "
    SELECT (SELECT count(*) FROM tasks WHERE status = 'queued' AND {q}),
           (SELECT count(*) FROM tasks WHERE status = 'running' AND {q}),
           (SELECT count(*) FROM tasks WHERE status IN ('failed', 'cancelled') AND status = 'failed' AND {q}),
           (SELECT count(*) FROM tasks WHERE status IN ('failed', 'cancelled') AND status = 'cancelled' AND {q}),
           (SELECT count(*) FROM tasks WHERE finished_at IS NOT NULL AND status = 'completed' AND {q}),
           (SELECT min(run_after) FROM tasks WHERE status = 'queued' AND run_after <= $1 AND {q}),
           (SELECT count(*) FROM tasks WHERE status = 'queued' AND run_after > $1 AND {q})";

fn stats_sql(by_queue: bool) -> String {
    // Two texts, not `$2 IS NULL OR ...`, which would keep the planner from seeking lanes.
    let q = if by_queue {
        "lane_id IN (SELECT id FROM lanes WHERE queue = $2)"
    } else {
        "$2::text IS NULL"
    };
    STATS_TEMPLATE.replace("{q}", q)
}

impl PgDriver {
    /// The task, with the traceback of its last failure.
    pub fn get(&self, id: i64) -> Result<TaskRow> {
        self.read(|tx| match tx.query_opt(&detail_sql("id = $1"), &[&id])? {
            Some(r) => {
                let mut row = detail_row(&r)?;
                let waits = crate::storage::postgres::dependencies::waits(tx, id)?;
                (row.after, row.waiting_on) = (waits.after, waits.waiting_on);
                Ok(row)
            }
            None => Err(Error::TaskNotFound(id)),
        })
    }

    pub fn find_by_idempotency_key(&self, key: &str) -> Result<Option<TaskRow>> {
        self.read(|tx| {
            tx.query_opt(&detail_sql("idempotency_key = $1"), &[&key])?
                .map(|r| detail_row(&r))
                .transpose()
        })
    }

    /// `f` was checked above (`ListFilter::validate`).
    pub fn list(&self, f: &ListFilter) -> Result<Vec<TaskRow>> {
        let mut sql = format!("SELECT {COLUMNS} FROM tasks WHERE true");
        let status = f.status.map(|s| s.as_str());
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(s) = &status {
            if matches!(f.status, Some(Status::Failed | Status::Cancelled)) {
                // Lets the planner use the partial index of dead letters and cancellations.
                sql.push_str(" AND status IN ('failed', 'cancelled')");
            }
            args.push(s);
            sql.push_str(&format!(" AND status = ${}", args.len()));
        }
        if let Some(t) = &f.task_type {
            args.push(t);
            sql.push_str(&format!(" AND type = ${}", args.len()));
        }
        if let Some(q) = &f.queue {
            args.push(q);
            sql.push_str(&format!(" AND queue = ${}", args.len()));
        }
        if let Some(a) = &f.after_id {
            args.push(a);
            let op = if f.descending { "<" } else { ">" };
            sql.push_str(&format!(" AND id {op} ${}", args.len()));
        }
        args.push(&f.limit);
        sql.push_str(&format!(
            " ORDER BY id{} LIMIT ${}",
            if f.descending { " DESC" } else { "" },
            args.len()
        ));
        self.read(|tx| task_rows(&tx.query(&sql, &args)?))
    }

    pub fn stats(&self, queue: Option<&str>) -> Result<Stats> {
        self.read(|tx| {
            let now = db_now(tx)?;
            let r = tx.query_one(&stats_sql(queue.is_some()), &[&now, &queue])?;
            let mut counts: BTreeMap<&'static str, i64> = BTreeMap::new();
            for (i, name) in ["queued", "running", "failed", "cancelled", "completed"]
                .into_iter()
                .enumerate()
            {
                counts.insert(name, r.try_get(i)?);
            }
            let oldest: Option<i64> = r.try_get(5)?;
            Ok(Stats {
                total: counts.values().sum(),
                counts,
                oldest_queued_age_s: oldest.map(|t| now.saturating_sub(t).max(0) as f64 / 1000.0),
                scheduled: r.try_get(6)?,
                limits: Vec::new(),
            })
        })
    }

    /// Queued or running -> cancelled. False when the task had already finished.
    pub fn cancel(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            let now = db_now(tx)?;
            let n = tx.execute(
                "UPDATE tasks SET status = 'cancelled', finished_at = $2, updated_at = $2,
                        lease_until = NULL, lease_token = NULL
                 WHERE id = $1 AND status IN ('queued', 'running')",
                &[&id, &now],
            )?;
            if n == 1 {
                log_in(tx, id, now, "info", "cancelled")?;
                crate::storage::postgres::dependencies::cancelled(tx, id, now)?;
                Ok(true)
            } else if exists(tx, id)? {
                Ok(false)
            } else {
                Err(Error::TaskNotFound(id))
            }
        })
    }

    /// Change the priority of a task that has not finished. False when it has.
    pub fn set_priority(&self, id: i64, priority: i64) -> Result<bool> {
        self.write(|tx| {
            let old = tx.query_opt(
                "SELECT priority FROM tasks WHERE id = $1 AND status IN ('queued', 'running') FOR UPDATE",
                &[&id],
            )?;
            let now = db_now(tx)?;
            let n = tx.execute(
                "UPDATE tasks SET priority = $2, updated_at = $3
                 WHERE id = $1 AND status IN ('queued', 'running')",
                &[&id, &priority, &now],
            )?;
            if n == 1 {
                let old: i64 = old.map_or(priority, |r| r.get(0));
                if old != priority {
                    // The feed's trigger records the change (schema `V_FEED_ARRAYS`).
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
        self.write(|tx| {
            let now = db_now(tx)?;
            let lane = tx.query_opt(
                "UPDATE tasks SET status = 'queued', attempts = 0, run_after = $2, finished_at = NULL,
                        lease_until = NULL, lease_token = NULL, updated_at = $2
                 WHERE id = $1 AND status IN ('failed', 'cancelled')
                 RETURNING lane_id",
                &[&id, &now],
            )?;
            if let Some(lane) = lane {
                log_in(tx, id, now, "info", "re-queued by retry()")?;
                self.notify_in(tx, lane.get(0))?;
                Ok(true)
            } else if exists(tx, id)? {
                Ok(false)
            } else {
                Err(Error::TaskNotFound(id))
            }
        })
    }

    /// Set the retry policy of a queue for every process using this database. Both were
    /// checked above (`RetryOverrides::validate` and the queue name, by the engine).
    pub fn set_retry_policy(&self, queue: &str, policy: RetryOverrides) -> Result<()> {
        let text = serde_json::to_string(&policy).map_err(|e| Error::invalid(e.to_string()))?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO queue_config (queue, retry_policy) VALUES ($1, $2)
                 ON CONFLICT (queue) DO UPDATE SET retry_policy = excluded.retry_policy",
                &[&queue, &text],
            )?;
            Ok(())
        })
    }

    /// `level` is one of `LEVELS` (lower case), checked above (`observe::log_level`).
    pub fn log(
        &self,
        task_id: i64,
        level: &str,
        message: &str,
        details: Option<&str>,
    ) -> Result<i64> {
        self.write(|tx| {
            if !exists(tx, task_id)? {
                return Err(Error::TaskNotFound(task_id));
            }
            Ok(tx
                .query_one(
                    "INSERT INTO task_logs (task_id, at, level, message, details)
                     VALUES ($1, now_ms(), $2, $3, $4) RETURNING id",
                    &[&task_id, &level, &message, &details],
                )?
                .get(0))
        })
    }

    /// The task's log lines, oldest first, at most `limit` (checked above: `check_log_limit`).
    pub fn logs(&self, task_id: i64, limit: i64) -> Result<Vec<LogRow>> {
        self.read(|tx| {
            if !exists(tx, task_id)? {
                return Err(Error::TaskNotFound(task_id));
            }
            let rows = tx.query(
                "SELECT id, at, level, message, details FROM task_logs WHERE task_id = $1 ORDER BY id LIMIT $2",
                &[&task_id, &limit],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(LogRow {
                        id: r.try_get(0)?,
                        task_id,
                        at: r.try_get(1)?,
                        level: r.try_get(2)?,
                        message: r.try_get(3)?,
                        details: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }
}
