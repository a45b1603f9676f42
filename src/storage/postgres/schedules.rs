//! Periodic tasks: the `schedules` table, and a due time's tasks inserted in the transaction
//! that moves the schedule past it, as on SQLite (storage/sqlite/schedules.rs). Two schedulers
//! firing the same row: the second's UPDATE waits for the first's row lock, then re-reads the
//! row (READ COMMITTED), finds next_run moved, and inserts nothing.

use crate::model::error::Result;
use crate::model::schedule::{ScheduleFire, ScheduleRow, ScheduleSpec};
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::PgDriver;

const COLUMNS: &str =
    "definition, paused, next_run, last_run, revision, created_at, updated_at FROM schedules";

fn rows(
    tx: &mut Tx,
    filter: &str,
    args: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<ScheduleRow>> {
    tx.query(&format!("SELECT {COLUMNS} {filter}"), args)?
        .iter()
        .map(|r| {
            let definition: String = r.try_get(0)?;
            Ok(ScheduleRow {
                spec: serde_json::from_str(&definition)?,
                paused: r.try_get(1)?,
                next_run: r.try_get(2)?,
                last_run: r.try_get(3)?,
                revision: r.try_get(4)?,
                created_at: r.try_get(5)?,
                updated_at: r.try_get(6)?,
            })
        })
        .collect()
}

fn one(tx: &mut Tx, name: &str) -> Result<Option<ScheduleRow>> {
    Ok(rows(tx, "WHERE name = $1", &[&name])?.into_iter().next())
}

impl PgDriver {
    /// Create or replace `spec`: the same definition changes nothing (not even next_run); a new
    /// one takes `next_run` and a new revision, and keeps the pause and last run.
    pub fn schedule_put(&self, spec: &ScheduleSpec, next_run: i64) -> Result<ScheduleRow> {
        let definition = serde_json::to_string(spec)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO schedules AS s (name, definition, next_run, created_at, updated_at)
                 VALUES ($1, $2, $3, now_ms(), now_ms())
                 ON CONFLICT (name) DO UPDATE SET definition = excluded.definition,
                    next_run = excluded.next_run, revision = s.revision + 1,
                    updated_at = excluded.updated_at
                 WHERE s.definition IS DISTINCT FROM excluded.definition",
                &[&spec.name, &definition, &next_run],
            )?;
            Ok(one(tx, &spec.name)?.expect("the row just written"))
        })
    }

    /// Every schedule by name, or the one named.
    pub fn schedule_list(&self, name: Option<&str>) -> Result<Vec<ScheduleRow>> {
        self.read(|tx| match name {
            Some(n) => Ok(one(tx, n)?.into_iter().collect()),
            None => rows(tx, "ORDER BY name", &[]),
        })
    }

    /// Unpaused schedules due at `now`, the most overdue first.
    pub fn schedule_due(&self, now: i64, limit: i64) -> Result<Vec<ScheduleRow>> {
        self.read(|tx| {
            rows(
                tx,
                "WHERE NOT paused AND next_run <= $1 ORDER BY next_run LIMIT $2",
                &[&now, &limit],
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
        self.write(|tx| {
            tx.execute(
                "UPDATE schedules SET paused = $2, revision = revision + 1, updated_at = now_ms(),
                    next_run = CASE WHEN paused AND NOT $2 THEN $3 ELSE next_run END
                 WHERE name = $1 AND paused IS DISTINCT FROM $2",
                &[&name, &paused, &resume_at],
            )?;
            one(tx, name)
        })
    }

    pub fn schedule_remove(&self, name: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM schedules WHERE name = $1", &[&name])? == 1))
    }

    /// Move the schedule to `fire.next_run` and insert its due tasks, in one transaction, only
    /// when it still has the revision and next run the scheduler read and is not paused (false
    /// otherwise: another scheduler fired it, or it changed).
    pub fn schedule_fire(&self, fire: &ScheduleFire) -> Result<bool> {
        let mut new_lanes = Vec::new();
        let fired = self.write(|tx| {
            new_lanes.clear();
            let moved = tx.execute(
                "UPDATE schedules SET next_run = $4, last_run = $5
                 WHERE name = $1 AND revision = $2 AND next_run = $3 AND NOT paused",
                &[
                    &fire.name,
                    &fire.revision,
                    &fire.expected_next_run,
                    &fire.next_run,
                    &fire.last_run,
                ],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            if !fire.tasks.is_empty() {
                self.insert_in(tx, &fire.tasks, &mut new_lanes)?;
            }
            Ok(true)
        })?;
        self.remember_lanes(new_lanes);
        Ok(fired)
    }
}
