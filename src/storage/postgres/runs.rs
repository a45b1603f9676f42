//! The run registry of the task manager adapter, as on SQLite (storage/sqlite/runs.rs): each run
//! is one row of `runs`, the whole run as JSON plus the columns its queries use. The task row
//! that mirrors a run executed in-process is `run_tasks`.

use crate::model::error::Result;
use crate::model::runs::{RunFilter, RunQuery, RunRecord};
use crate::storage::postgres::PgDriver;
use postgres::types::ToSql;

/// The statement of `q`: $1 the limit (NULL: all), $2 the status or module it filters on. Each
/// form walks the index whose order is its ORDER BY (the EXPLAIN test checks it).
fn list_sql(q: &RunQuery) -> String {
    let filter = match &q.filter {
        RunFilter::All => "",
        RunFilter::Active => "WHERE status IN ('queued', 'running')",
        RunFilter::Status(_) => "WHERE status = $2",
        RunFilter::Module(_) => "WHERE module_id = $2",
    };
    let order = if q.newest_first {
        "created_at DESC, seq DESC"
    } else {
        "created_at, seq"
    };
    format!("SELECT data FROM runs {filter} ORDER BY {order} LIMIT $1")
}

fn list_args<'a>(q: &'a RunQuery, limit: &'a Option<i64>) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![limit];
    if let RunFilter::Status(s) | RunFilter::Module(s) = &q.filter {
        args.push(s);
    }
    args
}

impl PgDriver {
    /// Insert or replace a run (checked above: `RunRecord::validate`).
    pub fn save_run(&self, run: &RunRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO runs (run_id, module_id, status, created_at, completed_at, updated_at, data)
                 VALUES ($1, $2, $3, $4, $5, now_ms(), $6)
                 ON CONFLICT (run_id) DO UPDATE SET module_id = excluded.module_id, status = excluded.status,
                        created_at = excluded.created_at, completed_at = excluded.completed_at,
                        updated_at = excluded.updated_at, data = excluded.data",
                &[
                    &run.run_id,
                    &run.module_id,
                    &run.status,
                    &run.created_at,
                    &run.completed_at,
                    &run.data,
                ],
            )?;
            Ok(())
        })
    }

    /// The JSON of a run, or `None`.
    pub fn load_run(&self, run_id: &str) -> Result<Option<String>> {
        self.read(|tx| {
            Ok(tx
                .query_opt("SELECT data FROM runs WHERE run_id = $1", &[&run_id])?
                .map(|r| r.get(0)))
        })
    }

    /// The JSON of the runs `q` selects, ordered by creation time (`q` checked above:
    /// `RunQuery::validate`).
    pub fn list_runs(&self, q: &RunQuery) -> Result<Vec<String>> {
        let sql = list_sql(q);
        self.read(|tx| {
            let rows = tx.query(&sql, &list_args(q, &q.limit))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// `EXPLAIN` of the statement `list_runs` runs for `q` (a limit of 5).
    pub fn explain_list_runs(&self, q: &RunQuery) -> Result<Vec<String>> {
        let sql = format!("EXPLAIN {}", list_sql(q));
        self.read(|tx| {
            let rows = tx.query(&sql, &list_args(q, &Some(5)))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Delete one run; false when there was none.
    pub fn delete_run(&self, run_id: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM runs WHERE run_id = $1", &[&run_id])? == 1))
    }

    /// Delete runs that finished before `completed_before` (ms, checked above). Returns how many.
    pub fn purge_runs(&self, completed_before: i64) -> Result<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM runs WHERE completed_at IS NOT NULL AND completed_at < $1",
                &[&completed_before],
            )? as usize)
        })
    }
}
