//! A change feed for event streams (`prismq_queue.events.watch`), made of what the queue keeps
//! anyway: nothing is written on the hot paths for it.
//!
//! A `ChangeCursor` remembers what a stream has already seen; each `changes_since` is one look,
//! in one read snapshot, that diffs the database against it:
//!
//! - new tasks: ids above the highest id seen (the rowid B-tree; ids only grow, because every
//!   insert happens under the write lock and takes the largest id plus one);
//! - the running set, through the partial `tasks_lease` index: a task that appears was claimed,
//!   one whose attempt or start time changed was claimed again, one whose progress, step or
//!   message changed reported progress, and one that left it finished, failed back to the queue
//!   or was handed back (its row tells which);
//! - transitions that write a log line (failures, retries, dead letters, cancellations,
//!   `retry()`, hand-backs, rescued leases, priority changes): task_logs ids above the highest
//!   seen;
//! - tasks that finished without being seen running (claimed and finished between two looks, or
//!   cancelled while queued): a covering range of `tasks_finished` from a little before the last
//!   look. "A little" (`FINISHED_MARGIN_MS`) covers a transaction that read the clock before the
//!   last look and committed after it; ids already reported are remembered for that long.
//!
//! Each look reports a task's state as it is at that look: transitions in between collapse (two
//! progress reports between looks give the second; a task claimed and completed between looks
//! gives one status event, `completed`). What is never seen: a change that undoes itself between
//! two looks (a progress value set and set back), and a completion whose transaction stayed
//! open longer than `FINISHED_MARGIN_MS` for a task never seen running.

use crate::model::changes::ChangeCursor;
use crate::model::changes::ChangeKind;
use crate::model::changes::ChangeToken;
use crate::model::changes::Changes;
use crate::model::changes::FeedRow;
use crate::model::changes::FINISHED_MARGIN_MS;
use crate::model::error::Result;
use crate::model::task::Status;
use crate::model::time::now_ms;
use crate::storage::sqlite::SqliteDriver;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

/// Log lines read per look; more are left for the next look (which then comes at once).
const LOGS_PER_LOOK: i64 = 5_000;
/// Finished tasks fetched per look; likewise.
const FINISHED_PER_LOOK: usize = 5_000;

const COLS: &str = "id, type, queue, status, progress, step, message, created_at, updated_at, \
                    attempts, max_attempts, locked_by, error, started_at, finished_at";

/// Leniently: a damaged row (a column of the wrong type) must not stop the feed, so a value
/// that is not what the column should hold reads as a neutral one.
fn read_row(r: &rusqlite::Row) -> rusqlite::Result<FeedRow> {
    use rusqlite::types::ValueRef;
    let int = |i: usize| match r.get_ref(i) {
        Ok(ValueRef::Integer(n)) => Some(n),
        _ => None,
    };
    let text = |i: usize| match r.get_ref(i) {
        Ok(ValueRef::Text(t)) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    };
    let status = text(3).unwrap_or_default();
    Ok(FeedRow {
        id: r.get(0)?,
        task_type: text(1).unwrap_or_default(),
        queue: text(2).unwrap_or_default(),
        status: Status::parse(&status).unwrap_or(Status::Queued),
        progress: match r.get_ref(4)? {
            ValueRef::Real(f) => Some(f),
            ValueRef::Integer(n) => Some(n as f64),
            _ => None,
        },
        step: text(5),
        message: text(6),
        created_at: int(7).unwrap_or(0),
        updated_at: int(8).unwrap_or(0),
        attempts: int(9).unwrap_or(0),
        max_attempts: int(10).unwrap_or(0),
        worker: text(11),
        error: text(12),
        started_at: int(13),
        finished_at: int(14),
    })
}

fn fetch(c: &Connection, id: i64) -> Result<Option<FeedRow>> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLS} FROM tasks WHERE id = ?1"))?
            .query_row([id], read_row)
            .optional()?,
    )
}

impl SqliteDriver {
    /// A cursor at the present: the next look reports what changes from now on. `queues`
    /// restricts it to those queues (None: every queue).
    pub fn change_cursor(
        &self,
        queues: Option<Vec<String>>,
        token: ChangeToken,
    ) -> Result<ChangeCursor> {
        let now = now_ms();
        let floor = now - FINISHED_MARGIN_MS;
        let queues = queues.map(|q| q.into_iter().collect::<HashSet<_>>());
        self.db.read(|c| {
            let tx = c.unchecked_transaction()?;
            let max_id: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM tasks", [], |r| r.get(0))?;
            let max_log_id: i64 =
                tx.query_row("SELECT coalesce(max(id), 0) FROM task_logs", [], |r| r.get(0))?;
            let mut seen_finished = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, finished_at FROM tasks INDEXED BY tasks_finished WHERE finished_at BETWEEN ?1 AND ?2",
                )?;
                let mut rows = stmt.query([floor, crate::model::time::MAX_TIME_MS])?;
                while let Some(r) = rows.next()? {
                    seen_finished.insert(r.get(0)?, r.get(1)?);
                }
            }
            let mut running = HashMap::new();
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "SELECT {COLS} FROM tasks INDEXED BY tasks_lease WHERE status = 'running'"
                ))?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let row = read_row(r)?;
                    if queues.as_ref().is_none_or(|qs| qs.contains(&row.queue)) {
                        running.insert(row.id, row.snap());
                    }
                }
            }
            tx.finish()?;
            Ok(ChangeCursor {
                queues: queues.clone(),
                max_id,
                max_log_id,
                finished_floor: floor,
                seen_finished,
                running,
                token,
                last_look: None,
                snapshot: Default::default(),
            })
        })
    }

    /// One look: what changed since the cursor's last look (see the module doc), at most
    /// `limit` new tasks of it (the rest is reported with `more` and comes next time); `limit`
    /// was checked above (`check_changes_limit`).
    pub fn changes_since(
        &self,
        cursor: &mut ChangeCursor,
        limit: usize,
        token: ChangeToken,
    ) -> Result<Changes> {
        let look_at = now_ms();
        let out = self.db.read(|c| {
            let tx = c.unchecked_transaction()?;
            let out = diff_since(&tx, cursor, limit, look_at)?;
            tx.finish()?;
            Ok(out)
        })?;
        cursor.token = token;
        cursor.last_look = Some(Instant::now());
        Ok(out)
    }

    /// Queued and running counts of each of `queues` (queued: one covering range of the claim
    /// index per lane of the queue; running: the running rows).
    pub fn queue_depths(&self, queues: &[String]) -> Result<BTreeMap<String, (i64, i64)>> {
        self.db.read(|c| {
            let tx = c.unchecked_transaction()?;
            let mut out = BTreeMap::new();
            for q in queues {
                let lanes: Vec<i64> = tx
                    .prepare_cached("SELECT id FROM lanes WHERE queue = ?1")?
                    .query_map([q], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut queued = 0i64;
                let mut stmt = tx.prepare_cached(
                    "SELECT count(*) FROM tasks INDEXED BY tasks_claim_priority WHERE lane_id = ?1 AND status = 'queued'",
                )?;
                for lane in lanes {
                    queued += stmt.query_row([lane], |r| r.get::<_, i64>(0))?;
                }
                let running: i64 = tx
                    .prepare_cached(
                        "SELECT count(*) FROM tasks INDEXED BY tasks_lease WHERE status = 'running' AND queue = ?1",
                    )?
                    .query_row([q], |r| r.get(0))?;
                out.insert(q.clone(), (queued, running));
            }
            drop(tx);
            Ok(out)
        })
    }
}

/// The diff itself, inside the caller's read transaction, in five steps (new tasks, the running
/// set, tasks that left it, transitions that wrote a log line, tasks that finished unseen).
fn diff_since(
    c: &Connection,
    cur: &mut ChangeCursor,
    limit: usize,
    look_at: i64,
) -> Result<Changes> {
    let mut d = Diff {
        c,
        out: Changes::default(),
        reported: HashSet::new(),
        now_running: HashSet::new(),
        horizon: cur.max_id,
    };
    d.new_tasks(cur, limit)?;
    d.running_set(cur)?;
    d.logged_transitions(cur)?;
    d.finished_unseen(cur, look_at)?;
    Ok(d.out)
}

/// One diff in progress.
struct Diff<'c> {
    c: &'c Connection,
    out: Changes,
    /// One status event per task per diff: the latest.
    reported: HashSet<i64>,
    now_running: HashSet<i64>,
    /// Tasks above this id are left for a later diff, in every step.
    horizon: i64,
}

impl Diff<'_> {
    fn status(&mut self, row: &FeedRow, cur: &mut ChangeCursor) {
        if let Some(f) = row.finished_at {
            cur.seen_finished.insert(row.id, f);
        }
        if self.reported.insert(row.id) {
            self.out.changes.push(row.change(ChangeKind::Status));
        }
    }

    /// 1. New tasks, a page at a time.
    fn new_tasks(&mut self, cur: &mut ChangeCursor, limit: usize) -> Result<()> {
        let mut new_rows = Vec::new();
        {
            let mut stmt = self.c.prepare_cached(&format!(
                "SELECT {COLS} FROM tasks WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let mut rows = stmt.query(rusqlite::params![cur.max_id, limit as i64 + 1])?;
            while let Some(r) = rows.next()? {
                new_rows.push(read_row(r)?);
            }
        }
        if new_rows.len() > limit {
            new_rows.truncate(limit);
            self.out.more = true;
        }
        self.horizon = new_rows.last().map_or(cur.max_id, |r| r.id);
        for row in &new_rows {
            if !cur.wants(&row.queue) {
                continue;
            }
            self.out.changes.push(row.change(ChangeKind::Created));
            if row.status != Status::Queued {
                self.status(row, cur);
            }
            if row.status == Status::Running {
                cur.running.insert(row.id, row.snap());
            }
        }
        cur.max_id = self.horizon;
        Ok(())
    }

    /// 2. The running set, then 3. the tasks that left it: their row says where they went.
    fn running_set(&mut self, cur: &mut ChangeCursor) -> Result<()> {
        {
            let mut stmt = self.c.prepare_cached(&format!(
                "SELECT {COLS} FROM tasks INDEXED BY tasks_lease WHERE status = 'running'"
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let row = read_row(r)?;
                if row.id > self.horizon || !cur.wants(&row.queue) {
                    continue;
                }
                self.now_running.insert(row.id);
                let snap = row.snap();
                match cur.running.get(&row.id) {
                    None => self.status(&row, cur),
                    Some(old)
                        if (old.started_at, old.attempts) != (snap.started_at, snap.attempts) =>
                    {
                        self.status(&row, cur)
                    }
                    Some(old) if *old != snap => {
                        self.out.changes.push(row.change(ChangeKind::Progress))
                    }
                    Some(_) => {}
                }
                cur.running.insert(row.id, snap);
            }
        }
        let left: Vec<i64> = cur
            .running
            .keys()
            .filter(|id| !self.now_running.contains(id))
            .copied()
            .collect();
        for id in left {
            cur.running.remove(&id);
            if let Some(row) = fetch(self.c, id)? {
                self.status(&row, cur);
            }
        }
        Ok(())
    }

    /// 4. Transitions that wrote a log line.
    fn logged_transitions(&mut self, cur: &mut ChangeCursor) -> Result<()> {
        let mut touched: Vec<i64> = Vec::new();
        {
            let mut stmt = self.c.prepare_cached(
                "SELECT id, task_id FROM task_logs WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut rows = stmt.query(rusqlite::params![cur.max_log_id, LOGS_PER_LOOK])?;
            let mut n = 0;
            while let Some(r) = rows.next()? {
                let (log_id, task_id): (i64, i64) = (r.get(0)?, r.get(1)?);
                if task_id > self.horizon {
                    break; // its task is not reported yet: read its lines after it
                }
                cur.max_log_id = log_id;
                touched.push(task_id);
                n += 1;
            }
            if n == LOGS_PER_LOOK {
                self.out.more = true;
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            // Running tasks were diffed above (a handler's own log lines land here too).
            if self.reported.contains(&id) || self.now_running.contains(&id) {
                continue;
            }
            if let Some(row) = fetch(self.c, id)? {
                let already = row
                    .finished_at
                    .is_some_and(|f| cur.seen_finished.get(&id) == Some(&f));
                if cur.wants(&row.queue) && !already && row.status != Status::Running {
                    self.status(&row, cur);
                }
            }
        }
        Ok(())
    }

    /// 5. Tasks that finished without being seen: the recent range of the finished index.
    fn finished_unseen(&mut self, cur: &mut ChangeCursor, look_at: i64) -> Result<()> {
        let mut unseen: Vec<(i64, i64)> = Vec::new();
        {
            let mut stmt = self.c.prepare_cached(
                "SELECT id, finished_at FROM tasks INDEXED BY tasks_finished WHERE finished_at BETWEEN ?1 AND ?2",
            )?;
            // BETWEEN keeps out a damaged row's text or blob, which SQLite sorts after every number.
            let mut rows = stmt.query([cur.finished_floor, crate::model::time::MAX_TIME_MS])?;
            while let Some(r) = rows.next()? {
                let (id, finished_at): (i64, i64) = (r.get(0)?, r.get(1)?);
                if id <= self.horizon
                    && cur.seen_finished.get(&id) != Some(&finished_at)
                    && !self.reported.contains(&id)
                {
                    unseen.push((id, finished_at));
                }
            }
        }
        let capped = unseen.len() > FINISHED_PER_LOOK;
        if capped {
            unseen.sort_unstable_by_key(|&(id, f)| (f, id));
            unseen.truncate(FINISHED_PER_LOOK);
            self.out.more = true;
        }
        for (id, finished_at) in unseen {
            cur.seen_finished.insert(id, finished_at);
            if let Some(row) = fetch(self.c, id)? {
                if cur.wants(&row.queue) {
                    self.status(&row, cur);
                }
            }
        }
        if !capped {
            // Next time, read again from a little before this look (see FINISHED_MARGIN_MS).
            cur.finished_floor = look_at - FINISHED_MARGIN_MS;
            let floor = cur.finished_floor;
            cur.seen_finished.retain(|_, f| *f >= floor);
        }
        Ok(())
    }
}
