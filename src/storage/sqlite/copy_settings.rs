//! `copy` on SQLite of the settings kept per queue beyond retry policies: limits, schedules and
//! default execution timeouts (a handful of rows each, looked up one by one). A limit is
//! compared and written by its settings; its rate bucket starts full on the destination, on
//! this file's clock (see `model::copy`). A schedule keeps its state (next and last run,
//! revision, pause), so the destination fires each due time the source had not.

use crate::model::copy::{conflict, full_bucket, limit_key, CopyRows, CopySchedule, CopyTable};
use crate::model::error::Result;
use crate::model::limits::{LimitSpec, Rate};
use crate::storage::sqlite::copy_batch::{all, Writing};
use rusqlite::{params, Connection, OptionalExtension, Row};

const LIMIT_COLUMNS: &str = "queue, type, concurrency, per, rate_count, rate_period";
const SCHEDULE_COLUMNS: &str =
    "name, definition, paused, next_run, last_run, revision, created_at, updated_at";

fn limit_spec(r: &Row) -> rusqlite::Result<LimitSpec> {
    let rate = match (r.get::<_, Option<i64>>(4)?, r.get::<_, Option<i64>>(5)?) {
        (Some(count), Some(period_ms)) => Some(Rate { count, period_ms }),
        _ => None,
    };
    Ok(LimitSpec {
        queue: r.get(0)?,
        task_type: r.get(1)?,
        concurrency: r.get(2)?,
        per: r.get(3)?,
        rate,
    })
}

fn schedule(r: &Row) -> rusqlite::Result<CopySchedule> {
    Ok(CopySchedule {
        name: r.get(0)?,
        definition: r.get(1)?,
        paused: r.get(2)?,
        next_run: r.get(3)?,
        last_run: r.get(4)?,
        revision: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

/// Limits after (queue, type) = (`name`, `name2`).
pub(super) fn export_limits(
    c: &Connection,
    name: &str,
    name2: &str,
    limit: i64,
) -> Result<CopyRows> {
    let sql = format!(
        "SELECT {LIMIT_COLUMNS} FROM limits WHERE (queue, type) > (?1, ?2)
         ORDER BY queue, type LIMIT ?3"
    );
    Ok(CopyRows::Limits(all(
        c,
        &sql,
        params![name, name2, limit],
        limit_spec,
    )?))
}

pub(super) fn export_schedules(c: &Connection, name: &str, limit: i64) -> Result<CopyRows> {
    let sql =
        format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > ?1 ORDER BY name LIMIT ?2");
    Ok(CopyRows::Schedules(all(
        c,
        &sql,
        params![name, limit],
        schedule,
    )?))
}

pub(super) fn export_timeouts(c: &Connection, name: &str, limit: i64) -> Result<CopyRows> {
    Ok(CopyRows::QueueTimeouts(all(
        c,
        "SELECT queue, timeout_ms FROM queue_timeouts WHERE queue > ?1 ORDER BY queue LIMIT ?2",
        params![name, limit],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?))
}

pub(super) fn import_limits(
    c: &Connection,
    w: Option<&Writing>,
    limits: &[LimitSpec],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    let sql = format!("SELECT {LIMIT_COLUMNS} FROM limits WHERE queue = ?1 AND type = ?2");
    for l in limits {
        let held = c
            .prepare_cached(&sql)?
            .query_row([&l.queue, &l.task_type], limit_spec)
            .optional()?;
        match (&held, w) {
            (Some(h), _) if h != l => {
                let what = "its concurrency, per or rate";
                return Err(conflict(CopyTable::Limits, limit_key(l), what));
            }
            (None, Some(w)) => {
                w.tx.prepare_cached(
                    "INSERT INTO limits (queue, type, concurrency, per, rate_count, rate_period,
                         tokens, refilled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    l.queue,
                    l.task_type,
                    l.concurrency,
                    l.per,
                    l.rate.map(|r| r.count),
                    l.rate.map(|r| r.period_ms),
                    full_bucket(l),
                    w.now.wall,
                ])?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}

pub(super) fn import_schedules(
    c: &Connection,
    w: Option<&Writing>,
    schedules: &[CopySchedule],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1");
    for s in schedules {
        let held = c
            .prepare_cached(&sql)?
            .query_row([&s.name], schedule)
            .optional()?;
        match (&held, w) {
            (Some(h), _) if h != s => {
                let (key, what) = (format!("{:?}", s.name), "its definition or state");
                return Err(conflict(CopyTable::Schedules, key, what));
            }
            (None, Some(w)) => {
                w.tx.prepare_cached(&format!(
                    "INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ))?
                .execute(params![
                    s.name,
                    s.definition,
                    s.paused,
                    s.next_run,
                    s.last_run,
                    s.revision,
                    s.created_at,
                    s.updated_at
                ])?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}

pub(super) fn import_timeouts(
    c: &Connection,
    w: Option<&Writing>,
    timeouts: &[(String, Option<i64>)],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    for (queue, timeout_ms) in timeouts {
        let held: Option<Option<i64>> = c
            .prepare_cached("SELECT timeout_ms FROM queue_timeouts WHERE queue = ?1")?
            .query_row([queue], |r| r.get(0))
            .optional()?;
        match (&held, w) {
            (Some(h), _) if h != timeout_ms => {
                return Err(conflict(CopyTable::QueueTimeouts, queue, "its timeout"));
            }
            (None, Some(w)) => {
                w.tx.prepare_cached(
                    "INSERT INTO queue_timeouts (queue, timeout_ms) VALUES (?1, ?2)",
                )?
                .execute(params![queue, timeout_ms])?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}
