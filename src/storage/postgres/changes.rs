//! The change feed on PostgreSQL (`events.watch`, the dashboard's live view), with the SQLite
//! feed's meaning (storage/sqlite/changes.rs) but not its method: ids from a sequence commit out
//! of order, so "ids above the highest seen" could pass over a task committed later.
//!
//! Instead, each statement that inserts tasks, and a trigger on `tasks` for each statement that
//! changes them in what the feed reports, add one row `(xid, task_ids, created)` to
//! `task_changes`, `xid` being the writing transaction's id (schema V4; one array row per
//! statement since V5; inserts write their own row since `V_FEED_BY_WRITERS`, see
//! `RECORD_CREATED`). A look runs in one REPEATABLE READ snapshot and takes the
//! rows of the transactions that snapshot sees and the previous look's did not: those that were
//! in flight then (`xip`) and those that began after it (`xid >= xmax`). A committed transaction
//! is visible to exactly one first snapshot, so its rows are taken exactly once, whatever order
//! the commits came in; a long transaction delays only its own rows. The tasks those rows name
//! are read in the same snapshot and reported as they are then, so what a look reports is exactly
//! what its snapshot holds, and a later row is a later change:
//!
//! - `task.created` for a task inserted since (and its status when it is no longer queued);
//!   the insert is visible to any snapshot that sees a change of the task, so it comes first;
//! - for a running task, `task.status` when it was not running at the last look or runs a new
//!   attempt, `task.progress` when its progress, step or message moved;
//! - `task.status` for any other changed task (finished, failed back, cancelled, retried, ...).
//!
//! Nothing on the hot path is shared: each statement appends its own rows (one insert per
//! statement), and the one-row `change_feed` is written by the pruner only. Rows are pruned once
//! older than `CHANGE_RETENTION_MS` (by every watching handle, once a minute, and by `sweep()`);
//! a cursor that has not looked for that long is told it fell behind instead of missing changes.

use crate::model::changes::{
    ChangeCursor, ChangeKind, ChangeToken, Changes, FeedRow, SnapshotMark,
};
use crate::model::error::{Error, Result};
use crate::model::task::Status;
use crate::storage::postgres::statements::Tx;
use crate::storage::postgres::PgDriver;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long change rows are kept: a cursor must look at least this often.
pub const CHANGE_RETENTION_MS: i64 = 10 * 60 * 1000;
/// How often one process's watchers prune.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows deleted per statement when pruning.
const PRUNE_BATCH: i64 = 50_000;

const COLS: &str = "id, type, queue, status, progress, step, message, created_at, updated_at, \
                    attempts, max_attempts, locked_by, error, started_at, finished_at";

/// The feed's row for tasks a transaction created, `$1` their ids (none: no row). Every
/// statement that inserts into `tasks` must record its new ids so, in its own transaction
/// (`tests::changes::every_insert_into_tasks_records_its_ids` holds the source to it): no
/// trigger does it since `V_FEED_BY_WRITERS`.
pub(crate) const RECORD_CREATED: &str = "INSERT INTO task_changes (xid, task_ids, created)
     SELECT pg_current_xact_id()::text::bigint, $1::bigint[], true
     WHERE cardinality($1::bigint[]) > 0";

/// Record in `tx` that it created the tasks `ids` (see `RECORD_CREATED`).
pub(crate) fn record_created(tx: &mut Tx, ids: &[i64]) -> Result<()> {
    if !ids.is_empty() {
        tx.execute(RECORD_CREATED, &[&ids])?;
    }
    Ok(())
}

/// The snapshot of the look's transaction; the first statement of it, so it is the one every
/// later read of the look uses.
const SNAPSHOT: &str =
    "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint,
        ARRAY(SELECT x::text::bigint FROM pg_snapshot_xip(s) AS x)
    FROM pg_current_snapshot() AS s";

/// A task's row as the feed reads it.
fn read_row(r: &postgres::Row) -> Result<FeedRow> {
    let status: String = r.try_get(3)?;
    Ok(FeedRow {
        id: r.try_get(0)?,
        task_type: r.try_get(1)?,
        queue: r.try_get(2)?,
        status: Status::parse(&status).unwrap_or(Status::Queued),
        progress: r.try_get(4)?,
        step: r.try_get(5)?,
        message: r.try_get(6)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
        attempts: r.try_get(9)?,
        max_attempts: r.try_get(10)?,
        worker: r.try_get(11)?,
        error: r.try_get(12)?,
        started_at: r.try_get(13)?,
        finished_at: None,
    })
}

/// The look's snapshot: (xmin, xmax, xip).
fn snapshot(tx: &mut Tx) -> Result<(i64, i64, Vec<i64>)> {
    let r = tx.query_one(SNAPSHOT, &[])?;
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
}

/// When this process's watchers last pruned each schema.
static LAST_PRUNE: Mutex<Option<HashMap<String, Instant>>> = Mutex::new(None);

impl PgDriver {
    /// A cursor at the present: the next look reports what changes from now on. `queues`
    /// restricts it to those queues (None: every queue).
    pub fn change_cursor(
        &self,
        queues: Option<Vec<String>>,
        token: ChangeToken,
    ) -> Result<ChangeCursor> {
        let queues = queues.map(|q| q.into_iter().collect::<HashSet<_>>());
        let (mark, running) = self.read(|tx| {
            let (xmin, xmax, xip) = snapshot(tx)?;
            let mut running = HashMap::new();
            let rows = tx.query(
                &format!("SELECT {COLS} FROM tasks WHERE status = 'running'"),
                &[],
            )?;
            for r in &rows {
                let row = read_row(r)?;
                if queues.as_ref().is_none_or(|qs| qs.contains(&row.queue)) {
                    running.insert(row.id, row.snap());
                }
            }
            let mark = SnapshotMark {
                xmin,
                xmax,
                xip,
                ..SnapshotMark::default()
            };
            Ok((mark, running))
        })?;
        Ok(ChangeCursor {
            queues,
            max_id: 0,
            max_log_id: 0,
            finished_floor: 0,
            seen_finished: HashMap::new(),
            running,
            token,
            last_look: None,
            snapshot: mark,
        })
    }

    /// One look: what changed since the cursor's last look (see the module doc), at most
    /// `limit` tasks of it (the rest is reported with `more` and comes next time).
    pub fn changes_since(
        &self,
        cursor: &mut ChangeCursor,
        limit: usize,
        token: ChangeToken,
    ) -> Result<Changes> {
        self.prune_now_and_then();
        let out = self.read(|tx| look(tx, cursor, limit))?;
        cursor.token = token;
        cursor.last_look = Some(Instant::now());
        Ok(out)
    }

    /// Prune when this process's watchers have not for `PRUNE_EVERY`; a failure only delays it.
    fn prune_now_and_then(&self) {
        {
            let mut last = LAST_PRUNE.lock();
            let map = last.get_or_insert_with(HashMap::new);
            let now = Instant::now();
            match map.get(&self.url.schema) {
                Some(t) if now.duration_since(*t) < PRUNE_EVERY => return,
                _ => map.insert(self.url.schema.clone(), now),
            };
        }
        if let Err(e) = self.prune_changes() {
            log::debug!("pruning the change feed failed ({e}); next time");
        }
    }

    /// Delete change rows of transactions that ended more than `CHANGE_RETENTION_MS` ago: mark
    /// now (every transaction below the snapshot's xmin has ended), then cut at the newest mark
    /// older than the retention. Returns the task entries deleted (a row holds a statement's).
    pub fn prune_changes(&self) -> Result<u64> {
        self.prune_changes_older_than(CHANGE_RETENTION_MS)
    }

    pub(crate) fn prune_changes_older_than(&self, retention_ms: i64) -> Result<u64> {
        let cut: Option<i64> = self.write(|tx| {
            tx.execute(
                "INSERT INTO change_marks (xid, at)
                 SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, now_ms()",
                &[],
            )?;
            let cut: Option<i64> = tx
                .query_one(
                    "SELECT max(xid) FROM change_marks WHERE at <= now_ms() - $1",
                    &[&retention_ms],
                )?
                .try_get(0)?;
            if let Some(cut) = cut {
                // Say so first: a reader that still needed rows below `cut` must not miss them.
                tx.execute(
                    "UPDATE change_feed SET pruned_below = greatest(pruned_below, $1)",
                    &[&cut],
                )?;
                tx.execute("DELETE FROM change_marks WHERE xid < $1", &[&cut])?;
            }
            Ok(cut)
        })?;
        let Some(cut) = cut else { return Ok(0) };
        let mut deleted = 0;
        loop {
            let (rows, n) = self.write(|tx| {
                let r = tx.query_one(
                    "WITH gone AS (
                         DELETE FROM task_changes WHERE ctid = ANY(ARRAY(
                             SELECT ctid FROM task_changes WHERE xid < $1 LIMIT $2))
                         RETURNING cardinality(task_ids) AS n)
                     SELECT count(*), coalesce(sum(n), 0)::bigint FROM gone",
                    &[&cut, &PRUNE_BATCH],
                )?;
                Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?))
            })?;
            deleted += n as u64;
            if rows < PRUNE_BATCH {
                return Ok(deleted);
            }
        }
    }
}

/// One look inside the caller's read transaction.
fn look(tx: &mut Tx, cur: &mut ChangeCursor, limit: usize) -> Result<Changes> {
    let (xmin, xmax, xip) = snapshot(tx)?;
    let pruned_below: i64 = tx
        .query_one("SELECT pruned_below FROM change_feed", &[])?
        .try_get(0)?;
    if pruned_below > cur.snapshot.xmin {
        return Err(Error::Database(format!(
            "the change feed's cursor fell behind: it did not look for more than {} minutes and \
             changes it had not read were pruned; watch again (a new cursor)",
            CHANGE_RETENTION_MS / 60_000
        )));
    }
    // Rows of transactions this snapshot sees and the last look's did not.
    let rows = tx.query(
        "SELECT t.id, bool_or(c.created) FROM task_changes c, unnest(c.task_ids) AS t (id)
         WHERE c.xid >= $1 OR c.xid = ANY($2)
         GROUP BY t.id ORDER BY min(c.xid), t.id",
        &[&cur.snapshot.xmax, &cur.snapshot.xip],
    )?;
    let mark = &mut cur.snapshot;
    for r in &rows {
        let (id, created): (i64, bool) = (r.try_get(0)?, r.try_get(1)?);
        match mark.pending.get_mut(&id) {
            Some(c) => *c |= created,
            None => {
                mark.pending.insert(id, created);
                mark.backlog.push_back(id);
            }
        }
    }
    (mark.xmin, mark.xmax, mark.xip) = (xmin, xmax, xip);
    let n = limit.min(mark.backlog.len());
    let batch: Vec<(i64, bool)> = mark
        .backlog
        .drain(..n)
        .map(|id| (id, mark.pending.remove(&id).unwrap_or(false)))
        .collect();
    let mut out = Changes {
        changes: Vec::new(),
        more: !mark.backlog.is_empty(),
    };
    let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
    let mut rows: HashMap<i64, FeedRow> = HashMap::with_capacity(ids.len());
    for r in tx.query(
        &format!("SELECT {COLS} FROM tasks WHERE id = ANY($1)"),
        &[&ids],
    )? {
        let row = read_row(&r)?;
        rows.insert(row.id, row);
    }
    for (id, created) in batch {
        match rows.get(&id) {
            Some(row) => report(cur, row, created, &mut out),
            None => {
                cur.running.remove(&id); // purged
            }
        }
    }
    Ok(out)
}

/// What one changed task's row says, against what the cursor saw of it.
fn report(cur: &mut ChangeCursor, row: &FeedRow, created: bool, out: &mut Changes) {
    if !cur.wants(&row.queue) {
        return;
    }
    let running = row.status == Status::Running;
    if created {
        out.changes.push(row.change(ChangeKind::Created));
        if row.status != Status::Queued {
            out.changes.push(row.change(ChangeKind::Status));
        }
    } else if running {
        let snap = row.snap();
        match cur.running.get(&row.id) {
            Some(old) if (old.started_at, old.attempts) == (snap.started_at, snap.attempts) => {
                if *old != snap {
                    out.changes.push(row.change(ChangeKind::Progress));
                }
            }
            _ => out.changes.push(row.change(ChangeKind::Status)),
        }
    } else {
        out.changes.push(row.change(ChangeKind::Status));
    }
    if running {
        cur.running.insert(row.id, row.snap());
    } else {
        cur.running.remove(&row.id);
    }
}
