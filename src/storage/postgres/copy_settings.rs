//! `copy` on PostgreSQL of limits, schedules and default execution timeouts, as on SQLite (see
//! `storage::sqlite::copy_settings`): a handful of rows each, looked up one by one. A limit's
//! rate bucket starts full on the destination at the server's `now_ms()`.

use crate::model::copy::{conflict, full_bucket, limit_key, CopyRows, CopySchedule, CopyTable};
use crate::model::error::Result;
use crate::model::limits::{LimitSpec, Rate};
use crate::storage::postgres::statements::Tx;
use postgres::Row;

const LIMIT_COLUMNS: &str = "queue, type, concurrency, per, rate_count, rate_period";
const SCHEDULE_COLUMNS: &str =
    "name, definition, paused, next_run, last_run, revision, created_at, updated_at";

fn limit_spec(r: &Row) -> Result<LimitSpec> {
    let rate = match (
        r.try_get::<_, Option<i64>>(4)?,
        r.try_get::<_, Option<i64>>(5)?,
    ) {
        (Some(count), Some(period_ms)) => Some(Rate { count, period_ms }),
        _ => None,
    };
    Ok(LimitSpec {
        queue: r.try_get(0)?,
        task_type: r.try_get(1)?,
        concurrency: r.try_get(2)?,
        per: r.try_get(3)?,
        rate,
    })
}

fn schedule(r: &Row) -> Result<CopySchedule> {
    Ok(CopySchedule {
        name: r.try_get(0)?,
        definition: r.try_get(1)?,
        paused: r.try_get(2)?,
        next_run: r.try_get(3)?,
        last_run: r.try_get(4)?,
        revision: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
    })
}

/// Limits after (queue, type) = (`name`, `name2`).
pub(super) fn export_limits(tx: &mut Tx, name: &str, name2: &str, limit: i64) -> Result<CopyRows> {
    let sql = format!(
        "SELECT {LIMIT_COLUMNS} FROM limits WHERE (queue, type) > ($1, $2)
         ORDER BY queue, type LIMIT $3"
    );
    let rows = tx.query(&sql, &[&name, &name2, &limit])?;
    Ok(CopyRows::Limits(
        rows.iter().map(limit_spec).collect::<Result<_>>()?,
    ))
}

pub(super) fn export_schedules(tx: &mut Tx, name: &str, limit: i64) -> Result<CopyRows> {
    let sql =
        format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > $1 ORDER BY name LIMIT $2");
    let rows = tx.query(&sql, &[&name, &limit])?;
    Ok(CopyRows::Schedules(
        rows.iter().map(schedule).collect::<Result<_>>()?,
    ))
}

pub(super) fn export_timeouts(tx: &mut Tx, name: &str, limit: i64) -> Result<CopyRows> {
    let rows = tx.query(
        "SELECT queue, timeout_ms FROM queue_timeouts WHERE queue > $1 ORDER BY queue LIMIT $2",
        &[&name, &limit],
    )?;
    let timeouts = rows
        .iter()
        .map(|r| -> Result<(String, Option<i64>)> { Ok((r.try_get(0)?, r.try_get(1)?)) });
    Ok(CopyRows::QueueTimeouts(timeouts.collect::<Result<_>>()?))
}

pub(super) fn import_limits(
    tx: &mut Tx,
    writing: bool,
    limits: &[LimitSpec],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    let sql = format!("SELECT {LIMIT_COLUMNS} FROM limits WHERE queue = $1 AND type = $2");
    for l in limits {
        let held = tx
            .query_opt(&sql, &[&l.queue, &l.task_type])?
            .map(|r| limit_spec(&r))
            .transpose()?;
        match &held {
            Some(h) if h != l => {
                let what = "its concurrency, per or rate";
                return Err(conflict(CopyTable::Limits, limit_key(l), what));
            }
            None if writing => {
                tx.execute(
                    "INSERT INTO limits (queue, type, concurrency, per, rate_count, rate_period,
                         tokens, refilled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now_ms())",
                    &[
                        &l.queue,
                        &l.task_type,
                        &l.concurrency,
                        &l.per,
                        &l.rate.map(|r| r.count),
                        &l.rate.map(|r| r.period_ms),
                        &full_bucket(l),
                    ],
                )?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}

pub(super) fn import_schedules(
    tx: &mut Tx,
    writing: bool,
    schedules: &[CopySchedule],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    let sql = format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1");
    for s in schedules {
        let held = tx
            .query_opt(&sql, &[&s.name])?
            .map(|r| schedule(&r))
            .transpose()?;
        match &held {
            Some(h) if h != s => {
                let (key, what) = (format!("{:?}", s.name), "its definition or state");
                return Err(conflict(CopyTable::Schedules, key, what));
            }
            None if writing => {
                tx.execute(
                    &format!(
                        "INSERT INTO schedules ({SCHEDULE_COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    ),
                    &[
                        &s.name,
                        &s.definition,
                        &s.paused,
                        &s.next_run,
                        &s.last_run,
                        &s.revision,
                        &s.created_at,
                        &s.updated_at,
                    ],
                )?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}

pub(super) fn import_timeouts(
    tx: &mut Tx,
    writing: bool,
    timeouts: &[(String, Option<i64>)],
    count: &mut dyn FnMut(bool),
) -> Result<()> {
    for (queue, timeout_ms) in timeouts {
        let held: Option<Option<i64>> = tx
            .query_opt(
                "SELECT timeout_ms FROM queue_timeouts WHERE queue = $1",
                &[queue],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        match &held {
            Some(h) if h != timeout_ms => {
                return Err(conflict(CopyTable::QueueTimeouts, queue, "its timeout"));
            }
            None if writing => {
                tx.execute(
                    "INSERT INTO queue_timeouts (queue, timeout_ms) VALUES ($1, $2)",
                    &[queue, timeout_ms],
                )?;
            }
            _ => {}
        }
        count(held.is_some());
    }
    Ok(())
}
