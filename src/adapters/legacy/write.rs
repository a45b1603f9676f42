//! Writing: the import's batches, each one write transaction on the queue that inserts the
//! batch's tasks, their logs and their `legacy_imports` rows.

use super::plan::{prepare, problem, NewLog, Prepared};
use super::read::{as_int, open_source, read_workers, LogJoin, RawTask, Source, C_ID};
use super::report::{finish_report, merge, BatchOutcome, ImportReport};
use super::{DEFAULT_BATCH_SIZE, LOGS_PER_TASK_BUDGET};
use crate::model::claim::LaneKey;
use crate::model::error::{Error, Result};
use crate::model::paths::{canonical, shown};
use crate::model::task::Status;
use crate::model::time::now_ms;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::enqueue::{read_insert_meta, IdFloor};
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

/// One batch's write transaction: where it writes and what it has done so far.
struct BatchTx<'a, 't> {
    tx: &'a WriteTx<'t>,
    source: &'a str,
    now: i64,
    race: Race,
    floor: IdFloor,
    new_lanes: &'a mut Vec<(LaneKey, i64)>,
    out: BatchOutcome,
}

impl SqliteDriver {
    /// Import the older Python queue's file at `source_path` (see the module documentation).
    pub fn import_legacy(&self, source_path: &str) -> Result<ImportReport> {
        self.import_legacy_with(source_path, DEFAULT_BATCH_SIZE, &mut |_, _| Ok(()))
    }

    /// `import_legacy` with `batch_size` tasks per transaction, calling `progress(done, total)`
    /// once before the first batch and after every committed batch (`done` counts the rows of
    /// task_queue handled so far, whatever became of them). An error returned by `progress`
    /// stops the import there: the committed batches stay, and running it again resumes.
    pub fn import_legacy_with(
        &self,
        source_path: &str,
        batch_size: usize,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<ImportReport> {
        if batch_size == 0 {
            return Err(Error::invalid("batch_size must be at least 1"));
        }
        if let (Ok(own), Ok(given)) = (canonical(self.path()), canonical(source_path)) {
            if own == given {
                return Err(Error::invalid(format!(
                    "{source_path} is this queue's own file: give the old database, and open the queue on a new path",
                    source_path = shown(source_path)
                )));
            }
        }
        let src = open_source(source_path, self.opts.db.busy_timeout)?;
        // One snapshot of the old file for the whole import.
        src.conn.execute_batch("BEGIN")?;
        let mut report = ImportReport {
            source: src.identity.clone(),
            ..Default::default()
        };
        report.total = src
            .conn
            .query_row("SELECT count(*) FROM task_queue", [], |r| {
                r.get::<_, i64>(0)
            })? as u64;
        (report.legacy_workers, report.legacy_workers_total) = read_workers(&src)?;
        progress(0, report.total)?;
        let (totals, orphans) = self.import_batches(&src, batch_size, report.total, progress)?;
        src.conn.execute_batch("COMMIT")?;
        finish_report(&mut report, totals, &orphans, &src.missing_columns);
        Ok(report)
    }

    /// Read and write the old file's tasks batch by batch: the tally of what the batches did,
    /// and the `log_id`s of the lines that belong to no task.
    fn import_batches(
        &self,
        src: &Source,
        batch_size: usize,
        total: u64,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<(BatchOutcome, Vec<Option<i64>>)> {
        let mut task_stmt = src.conn.prepare(&src.task_sql)?;
        let mut task_rows = task_stmt.query([])?;
        let mut log_stmt = match &src.log_sql {
            Some(sql) => Some(src.conn.prepare(sql)?),
            None => None,
        };
        let mut log_rows = match &mut log_stmt {
            Some(s) => Some(s.query([])?),
            None => None,
        };
        let mut join = LogJoin::default();
        let mut done = 0u64;
        let mut totals = BatchOutcome::default();
        let mut new_lanes: Vec<(LaneKey, i64)> = Vec::new();
        let log_budget = batch_size.saturating_mul(LOGS_PER_TASK_BUDGET);
        loop {
            let batch =
                join.next_batch(&mut task_rows, log_rows.as_mut(), batch_size, log_budget)?;
            if batch.is_empty() {
                break;
            }
            let outcome = self.write_batch(&src.identity, &batch, &mut new_lanes)?;
            if !new_lanes.is_empty() {
                let mut cache = self.lanes.lock();
                for (key, id) in new_lanes.drain(..) {
                    cache.remember(key, id);
                }
            }
            merge(&mut totals, outcome);
            done += batch.len() as u64;
            progress(done, total)?;
        }
        join.finish(log_rows.as_mut())?;
        Ok((totals, join.orphans))
    }

    /// Write one batch in one transaction. Runs again from the start if the database was busy,
    /// so it only touches `tx` and returns what it did.
    fn write_batch(
        &self,
        source: &str,
        batch: &[RawTask],
        new_lanes: &mut Vec<(LaneKey, i64)>,
    ) -> Result<BatchOutcome> {
        self.db.write(|tx| {
            new_lanes.clear();
            let (race, floor) = read_insert_meta(tx)?;
            let mut b = BatchTx {
                tx,
                source,
                now: now_ms(),
                race,
                floor,
                new_lanes,
                out: BatchOutcome::default(),
            };
            for raw in batch {
                self.write_row(&mut b, raw)?;
            }
            Ok(b.out)
        })
    }

    /// One row of the old file: skipped (with its problems), already imported, mapped to the
    /// task with its idempotency key, or inserted as a new task.
    fn write_row(&self, b: &mut BatchTx, raw: &RawTask) -> Result<()> {
        let legacy_id = match as_int(&raw.vals[C_ID]) {
            Ok(Some(id)) => id,
            Ok(None) | Err(_) => {
                b.out.invalid += 1;
                b.out.problems.push(problem(
                    None,
                    "id",
                    &raw.vals[C_ID],
                    "the id is not an integer, so the row cannot be tracked as imported".into(),
                ));
                return Ok(());
            }
        };
        if raw.duplicate {
            b.out.invalid += 1;
            b.out.problems.push(problem(
                Some(legacy_id),
                "id",
                &raw.vals[C_ID],
                "this id appears more than once in task_queue: only its first row is imported"
                    .into(),
            ));
            return Ok(());
        }
        let already = b
            .tx
            .prepare_cached("SELECT 1 FROM legacy_imports WHERE source = ?1 AND legacy_id = ?2")?
            .exists(params![b.source, legacy_id])?;
        if already {
            b.out.already += 1;
            return Ok(());
        }
        let p = match prepare(raw, legacy_id, b.now) {
            Ok(p) => p,
            Err(problems) => {
                b.out.invalid += 1;
                b.out.problems.extend(problems);
                return Ok(());
            }
        };
        let existing: Option<i64> = match &p.idempotency_key {
            Some(key) => {
                b.tx.prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?
            }
            None => None,
        };
        let task_id = match existing {
            Some(task_id) => map_to_existing(b, &p, legacy_id, task_id)?,
            None => self.insert_task(b, &p)?,
        };
        b.out.logs += p.logs.len() as u64;
        b.out.problems.extend(p.log_problems.iter().cloned());
        b.tx.prepare_cached(
            "INSERT INTO legacy_imports (source, legacy_id, task_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![b.source, legacy_id, task_id])?;
        Ok(())
    }

    /// Insert the planned task with its old log lines and the import's notes; its id.
    fn insert_task(&self, b: &mut BatchTx, p: &Prepared) -> Result<i64> {
        let tx = b.tx;
        let lane_id = self.lane_id_in(tx, &p.lane_key, b.new_lanes)?;
        tx.prepare_cached(
            "INSERT INTO tasks (lane_id, type, queue, payload, priority, status, attempts, max_attempts,
                                run_after, wkey, created_at, started_at, finished_at, updated_at,
                                locked_by, error, result, progress, idempotency_key, requires)
             VALUES (?1, ?2, 'default', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19)",
        )?
        .execute(params![
            lane_id,
            p.task_type,
            p.payload,
            p.priority,
            p.status.as_str(),
            p.attempts,
            p.max_attempts,
            p.run_after,
            b.race.key(p.priority),
            p.created_at,
            p.started_at,
            p.finished_at,
            p.updated_at,
            p.locked_by,
            p.error,
            p.result,
            (p.status == Status::Completed).then_some(100.0),
            p.idempotency_key,
            p.requires.as_ref().map(|m| Value::Object(m.clone()).to_string()),
        ])?;
        let task_id = b.floor.place(tx, tx.last_insert_rowid())?;
        for l in p.logs.iter().chain(&p.notes) {
            insert_log(tx, task_id, l)?;
        }
        let out = &mut b.out;
        out.imported += 1;
        *out.by_status.entry(p.status.as_str().into()).or_default() += 1;
        *out.by_legacy_status
            .entry(p.legacy_status.clone())
            .or_default() += 1;
        out.requeued += p.from_lease as u64;
        out.clamped.extend(p.clamped_from);
        for d in &p.defaults {
            *out.defaults.entry(d).or_default() += 1;
        }
        Ok(task_id)
    }
}

/// A row whose idempotency key already belongs to `task_id`: its log lines go to that task, with
/// a line saying so, instead of a duplicate task.
fn map_to_existing(b: &mut BatchTx, p: &Prepared, legacy_id: i64, task_id: i64) -> Result<i64> {
    for l in &p.logs {
        insert_log(b.tx, task_id, l)?;
    }
    insert_log(
        b.tx,
        task_id,
        &NewLog {
            at: b.now,
            level: "info",
            message: format!(
                "task {legacy_id} of the older queue ({}) has this task's idempotency key: \
                 mapped to this task instead of importing a duplicate",
                p.legacy_status
            ),
            details: Some(
                serde_json::json!({ "legacy_source": b.source, "legacy_id": legacy_id })
                    .to_string(),
            ),
        },
    )?;
    b.out.mapped += 1;
    Ok(task_id)
}

fn insert_log(tx: &Connection, task_id: i64, l: &NewLog) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO task_logs (task_id, at, level, message, details) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![task_id, l.at, l.level, l.message, l.details])?;
    Ok(())
}
