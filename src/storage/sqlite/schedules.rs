//! Periodic tasks: the `schedules` table, and a due time's tasks inserted in the transaction
//! that moves the schedule past it (model/schedule.rs says when a schedule is due).

use crate::model::error::Result;
use crate::model::schedule::{ScheduleFire, ScheduleRow, ScheduleSpec};
use crate::model::time::now_ms;
use crate::storage::sqlite::enqueue::Batch;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{params, Connection};

const COLUMNS: &str =
    "definition, paused, next_run, last_run, revision, created_at, updated_at FROM schedules";

fn row(r: &rusqlite::Row) -> rusqlite::Result<ScheduleRow> {
    let definition: String = r.get(0)?;
    Ok(ScheduleRow {
        spec: serde_json::from_str(&definition).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })?,
        paused: r.get(1)?,
        next_run: r.get(2)?,
        last_run: r.get(3)?,
        revision: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn select(c: &Connection, filter: &str, args: impl rusqlite::Params) -> Result<Vec<ScheduleRow>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {COLUMNS} {filter}"))?;
    let rows = stmt.query_map(args, row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn one(c: &Connection, name: &str) -> Result<Option<ScheduleRow>> {
    Ok(select(c, "WHERE name = ?1", [name])?.into_iter().next())
}

impl SqliteDriver {
    /// Create or replace `spec`: the same definition changes nothing (not even next_run); a new
    /// one takes `next_run` and a new revision, and keeps the pause and last run.
    pub fn schedule_put(&self, spec: &ScheduleSpec, next_run: i64) -> Result<ScheduleRow> {
        let definition = serde_json::to_string(spec)?;
        self.db.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO schedules (name, definition, next_run, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                    next_run = excluded.next_run, revision = revision + 1,
                    updated_at = excluded.updated_at
                 WHERE definition IS NOT excluded.definition",
            )?
            .execute(params![spec.name, definition, next_run, now_ms()])?;
            Ok(one(tx, &spec.name)?.expect("the row just written"))
        })
    }

    /// Every schedule by name, or the one named.
    pub fn schedule_list(&self, name: Option<&str>) -> Result<Vec<ScheduleRow>> {
        self.db.read(|c| match name {
            Some(n) => Ok(one(c, n)?.into_iter().collect()),
            None => select(c, "ORDER BY name", []),
        })
    }

    /// Unpaused schedules due at `now`, the most overdue first.
    pub fn schedule_due(&self, now: i64, limit: i64) -> Result<Vec<ScheduleRow>> {
        self.db.read(|c| {
            select(
                c,
                "WHERE paused = 0 AND next_run <= ?1 ORDER BY next_run LIMIT ?2",
                params![now, limit],
            )
        })
    }

    /// Pause or resume; a resumed schedule that was paused is next due at `resume_at`. `None`
    /// when no schedule has the name.
    pub fn schedule_set_paused(
        &self,
        name: &str,
        paused: bool,
        resume_at: i64,
    ) -> Result<Option<ScheduleRow>> {
        self.db.write(|tx| {
            tx.prepare_cached(
                "UPDATE schedules SET paused = ?2, revision = revision + 1, updated_at = ?4,
                    next_run = CASE WHEN paused = 1 AND ?2 = 0 THEN ?3 ELSE next_run END
                 WHERE name = ?1 AND paused IS NOT ?2",
            )?
            .execute(params![name, paused, resume_at, now_ms()])?;
            one(tx, name)
        })
    }

    pub fn schedule_remove(&self, name: &str) -> Result<bool> {
        self.db
            .write(|tx| Ok(tx.execute("DELETE FROM schedules WHERE name = ?1", [name])? == 1))
    }

    /// Move the schedule to `fire.next_run` and insert its due tasks, in one transaction, only
    /// when it still has the revision and next run the scheduler read and is not paused (false
    /// otherwise: another scheduler fired it, or it changed).
    pub fn schedule_fire(&self, fire: &ScheduleFire) -> Result<bool> {
        let batch = Batch::of(&fire.tasks);
        let mut new_lanes = Vec::new();
        let fired = self.db.write(|tx| {
            new_lanes.clear();
            let moved = tx
                .prepare_cached(
                    "UPDATE schedules SET next_run = ?4, last_run = ?5
                     WHERE name = ?1 AND revision = ?2 AND next_run = ?3 AND paused = 0",
                )?
                .execute(params![
                    fire.name,
                    fire.revision,
                    fire.expected_next_run,
                    fire.next_run,
                    fire.last_run
                ])?;
            if moved == 0 {
                return Ok(false);
            }
            if !fire.tasks.is_empty() {
                self.insert_in(tx, &batch, &mut new_lanes)?;
            }
            Ok(true)
        })?;
        self.remember_lanes(new_lanes);
        Ok(fired)
    }
}
