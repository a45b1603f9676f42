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
//!   `retry()`, hand-backs, rescued leases): task_logs ids above the highest seen;
//! - tasks that finished without being seen running (claimed and finished between two looks, or
//!   cancelled while queued): a covering range of `tasks_finished` from a little before the last
//!   look. "A little" (`FINISHED_MARGIN_MS`) covers a transaction that read the clock before the
//!   last look and committed after it; ids already reported are remembered for that long.
//!
//! Each look reports a task's state as it is at that look: transitions in between collapse (two
//! progress reports between looks give the second; a task claimed and completed between looks
//! gives one status event, `completed`). What is never seen: a change that undoes itself between
//! two looks (a progress value set and set back), priority changes (`set_priority` writes no
//! status and no log line), and a completion whose transaction stayed open longer than
//! `FINISHED_MARGIN_MS` for a task never seen running.

use crate::error::Result;
use crate::queue::Queue;
use crate::task::Status;
use crate::time::now_ms;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How far back of the last look the finished index is read again.
pub const FINISHED_MARGIN_MS: i64 = 2_000;
/// How often a waiting stream checks for commits (this process's and others').
pub const WAIT_POLL: Duration = Duration::from_millis(20);
/// Log lines read per look; more are left for the next look (which then comes at once).
const LOGS_PER_LOOK: i64 = 5_000;
/// Finished tasks fetched per look; likewise.
const FINISHED_PER_LOOK: usize = 5_000;

const COLS: &str = "id, type, queue, status, progress, step, message, created_at, updated_at, \
                    attempts, max_attempts, locked_by, error, started_at, finished_at";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A task that did not exist at the previous look.
    Created,
    /// The task's status as of this look (or a new attempt of a running task).
    Status,
    /// New progress, step or message of a running task.
    Progress,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "task.created",
            ChangeKind::Status => "task.status",
            ChangeKind::Progress => "task.progress",
        }
    }
}

/// One change, with the task's state at the look that saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskChange {
    pub kind: ChangeKind,
    pub id: i64,
    pub task_type: String,
    pub queue: String,
    pub status: Status,
    pub progress: Option<f64>,
    pub step: Option<String>,
    pub message: Option<String>,
    /// When it happened as far as the row tells (created_at for `Created`, else updated_at), ms.
    pub at: i64,
    pub attempts: i64,
    pub max_attempts: i64,
    pub worker: Option<String>,
    pub error: Option<String>,
}

struct Row {
    id: i64,
    task_type: String,
    queue: String,
    status: Status,
    progress: Option<f64>,
    step: Option<String>,
    message: Option<String>,
    created_at: i64,
    updated_at: i64,
    attempts: i64,
    max_attempts: i64,
    worker: Option<String>,
    error: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl Row {
    fn read(r: &rusqlite::Row) -> rusqlite::Result<Row> {
        let status: String = r.get(3)?;
        Ok(Row {
            id: r.get(0)?,
            task_type: r.get(1)?,
            queue: r.get(2)?,
            status: Status::parse(&status).unwrap_or(Status::Queued),
            progress: r.get(4)?,
            step: r.get(5)?,
            message: r.get(6)?,
            created_at: r.get(7)?,
            updated_at: r.get(8)?,
            attempts: r.get(9)?,
            max_attempts: r.get(10)?,
            worker: r.get(11)?,
            error: r.get(12)?,
            started_at: r.get(13)?,
            finished_at: r.get(14)?,
        })
    }

    fn change(&self, kind: ChangeKind) -> TaskChange {
        TaskChange {
            kind,
            id: self.id,
            task_type: self.task_type.clone(),
            queue: self.queue.clone(),
            status: self.status,
            progress: self.progress,
            step: self.step.clone(),
            message: self.message.clone(),
            at: if kind == ChangeKind::Created {
                self.created_at
            } else {
                self.updated_at
            },
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            worker: self.worker.clone(),
            error: self.error.clone(),
        }
    }

    fn snap(&self) -> Running {
        Running {
            started_at: self.started_at,
            attempts: self.attempts,
            progress: self.progress,
            step: self.step.clone(),
            message: self.message.clone(),
        }
    }
}

/// A running task as a stream last saw it.
#[derive(Debug, Clone, PartialEq)]
struct Running {
    started_at: Option<i64>,
    attempts: i64,
    progress: Option<f64>,
    step: Option<String>,
    message: Option<String>,
}

/// Where the database stands: this process's commit counter and the read connection's
/// `PRAGMA data_version` (which moves when any other connection commits). Two tokens differ when
/// some process committed between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeToken {
    pub generation: u64,
    pub data_version: i64,
}

/// What one event stream has seen. Create it with `Queue::change_cursor`.
pub struct ChangeCursor {
    queues: Option<HashSet<String>>,
    max_id: i64,
    max_log_id: i64,
    finished_floor: i64,
    /// Finished tasks already reported (or finished before the cursor), id -> finished_at, for
    /// those that finished after `finished_floor`.
    seen_finished: HashMap<i64, i64>,
    running: HashMap<i64, Running>,
    token: ChangeToken,
    last_look: Option<Instant>,
}

/// The outcome of one look.
#[derive(Debug, Default)]
pub struct Changes {
    pub changes: Vec<TaskChange>,
    /// True when a look left work for the next one (a burst larger than one look takes).
    pub more: bool,
}

fn fetch(c: &Connection, id: i64) -> Result<Option<Row>> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLS} FROM tasks WHERE id = ?1"))?
            .query_row([id], Row::read)
            .optional()?,
    )
}

impl ChangeCursor {
    fn wants(&self, queue: &str) -> bool {
        self.queues.as_ref().is_none_or(|qs| qs.contains(queue))
    }
}

impl Queue {
    /// The database's position now (see `ChangeToken`).
    pub fn change_token(&self) -> Result<ChangeToken> {
        Ok(ChangeToken {
            generation: self.db.notifier.generation(),
            data_version: self.db.data_version()?,
        })
    }

    /// A cursor at the present: the next look reports what changes from now on. `queues`
    /// restricts it to those queues (None: every queue).
    pub fn change_cursor(&self, queues: Option<Vec<String>>) -> Result<ChangeCursor> {
        let token = self.change_token()?;
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
                    "SELECT id, finished_at FROM tasks INDEXED BY tasks_finished WHERE finished_at >= ?1",
                )?;
                let mut rows = stmt.query([floor])?;
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
                    let row = Row::read(r)?;
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
            })
        })
    }

    /// Block (call it without the GIL) until a commit of any process may have changed the
    /// database since the cursor's last look, `timeout` passes, or `stop` is set; then wait out
    /// the rest of `min_gap` since that look (so a busy queue is looked at no more often than
    /// that). True when something may have changed. Polls every `WAIT_POLL`: a commit of this
    /// process moves a counter, another process's moves `PRAGMA data_version` (a read of the
    /// shared-memory WAL index, no I/O).
    pub fn wait_for_changes(
        &self,
        cursor: &ChangeCursor,
        timeout: Duration,
        min_gap: Duration,
        stop: &AtomicBool,
    ) -> Result<bool> {
        let changed = self.wait_past(cursor.token, timeout, stop)?;
        if changed {
            if let Some(last) = cursor.last_look {
                let ready = last + min_gap;
                while Instant::now() < ready && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(WAIT_POLL.min(ready - Instant::now()));
                }
            }
        }
        Ok(changed)
    }

    /// Block (call it without the GIL) until the database moved past `token` (a commit of any
    /// process since it was taken), `timeout` passes or `stop` is set. True on a change. Unlike
    /// `wait_for_change`, a commit made after the token was taken but before this call counts,
    /// so a caller that takes a token, reads, then waits can never sleep through a change.
    pub fn wait_past(
        &self,
        token: ChangeToken,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut waiter = self.db.notifier.waiter(&self.db.path);
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            if self.change_token()? != token {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            // Wakes on commits of any process (see `notify`); `stop` is seen within a poll.
            waiter.nap(deadline);
        }
    }

    /// One look: what changed since the cursor's last look (see the module doc), at most
    /// `limit` new tasks of it (the rest is reported with `more` and comes next time).
    pub fn changes_since(&self, cursor: &mut ChangeCursor, limit: usize) -> Result<Changes> {
        let limit = limit.max(1);
        let token = self.change_token()?;
        let look_at = now_ms();
        let out = self.db.read(|c| {
            let tx = c.unchecked_transaction()?;
            let out = look(&tx, cursor, limit, look_at)?;
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

/// The diff itself, inside the caller's read transaction.
fn look(c: &Connection, cur: &mut ChangeCursor, limit: usize, look_at: i64) -> Result<Changes> {
    let mut out = Changes::default();
    // One status event per task per look: the latest.
    let mut reported: HashSet<i64> = HashSet::new();
    let status_of =
        |row: &Row, cur: &mut ChangeCursor, reported: &mut HashSet<i64>, out: &mut Changes| {
            if let Some(f) = row.finished_at {
                cur.seen_finished.insert(row.id, f);
            }
            if reported.insert(row.id) {
                out.changes.push(row.change(ChangeKind::Status));
            }
        };

    // 1. New tasks, a page at a time.
    let mut new_rows = Vec::new();
    {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {COLS} FROM tasks WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let mut rows = stmt.query(rusqlite::params![cur.max_id, limit as i64 + 1])?;
        while let Some(r) = rows.next()? {
            new_rows.push(Row::read(r)?);
        }
    }
    if new_rows.len() > limit {
        new_rows.truncate(limit);
        out.more = true;
    }
    // Tasks above this id are left for a later look, in every step below.
    let horizon = new_rows.last().map_or(cur.max_id, |r| r.id);
    for row in &new_rows {
        if !cur.wants(&row.queue) {
            continue;
        }
        out.changes.push(row.change(ChangeKind::Created));
        if row.status != Status::Queued {
            status_of(row, cur, &mut reported, &mut out);
        }
        if row.status == Status::Running {
            cur.running.insert(row.id, row.snap());
        }
    }
    cur.max_id = horizon;

    // 2. The running set.
    let mut now_running: HashSet<i64> = HashSet::new();
    {
        let mut stmt = c.prepare_cached(&format!(
            "SELECT {COLS} FROM tasks INDEXED BY tasks_lease WHERE status = 'running'"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let row = Row::read(r)?;
            if row.id > horizon || !cur.wants(&row.queue) {
                continue;
            }
            now_running.insert(row.id);
            let snap = row.snap();
            match cur.running.get(&row.id) {
                None => status_of(&row, cur, &mut reported, &mut out),
                Some(old) if (old.started_at, old.attempts) != (snap.started_at, snap.attempts) => {
                    status_of(&row, cur, &mut reported, &mut out)
                }
                Some(old) if *old != snap => out.changes.push(row.change(ChangeKind::Progress)),
                Some(_) => {}
            }
            cur.running.insert(row.id, snap);
        }
    }
    // 3. Tasks that left it: their row says where they went.
    let left: Vec<i64> = cur
        .running
        .keys()
        .filter(|id| !now_running.contains(id))
        .copied()
        .collect();
    for id in left {
        cur.running.remove(&id);
        if let Some(row) = fetch(c, id)? {
            status_of(&row, cur, &mut reported, &mut out);
        }
    }

    // 4. Transitions that wrote a log line.
    let mut touched: Vec<i64> = Vec::new();
    {
        let mut stmt = c.prepare_cached(
            "SELECT id, task_id FROM task_logs WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let mut rows = stmt.query(rusqlite::params![cur.max_log_id, LOGS_PER_LOOK])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let (log_id, task_id): (i64, i64) = (r.get(0)?, r.get(1)?);
            if task_id > horizon {
                break; // its task is not reported yet: read its lines after it
            }
            cur.max_log_id = log_id;
            touched.push(task_id);
            n += 1;
        }
        if n == LOGS_PER_LOOK {
            out.more = true;
        }
    }
    touched.sort_unstable();
    touched.dedup();
    for id in touched {
        // Running tasks were diffed above (a handler's own log lines land here too).
        if reported.contains(&id) || now_running.contains(&id) {
            continue;
        }
        if let Some(row) = fetch(c, id)? {
            let already = row
                .finished_at
                .is_some_and(|f| cur.seen_finished.get(&id) == Some(&f));
            if cur.wants(&row.queue) && !already && row.status != Status::Running {
                status_of(&row, cur, &mut reported, &mut out);
            }
        }
    }

    // 5. Tasks that finished without being seen: the recent range of the finished index.
    let mut unseen: Vec<(i64, i64)> = Vec::new();
    {
        let mut stmt = c.prepare_cached(
            "SELECT id, finished_at FROM tasks INDEXED BY tasks_finished WHERE finished_at >= ?1",
        )?;
        let mut rows = stmt.query([cur.finished_floor])?;
        while let Some(r) = rows.next()? {
            let (id, finished_at): (i64, i64) = (r.get(0)?, r.get(1)?);
            if id <= horizon
                && cur.seen_finished.get(&id) != Some(&finished_at)
                && !reported.contains(&id)
            {
                unseen.push((id, finished_at));
            }
        }
    }
    let capped = unseen.len() > FINISHED_PER_LOOK;
    if capped {
        unseen.sort_unstable_by_key(|&(id, f)| (f, id));
        unseen.truncate(FINISHED_PER_LOOK);
        out.more = true;
    }
    for (id, finished_at) in unseen {
        cur.seen_finished.insert(id, finished_at);
        if let Some(row) = fetch(c, id)? {
            if cur.wants(&row.queue) {
                status_of(&row, cur, &mut reported, &mut out);
            }
        }
    }
    if !capped {
        // Next time, read again from a little before this look (see FINISHED_MARGIN_MS).
        cur.finished_floor = look_at - FINISHED_MARGIN_MS;
        let floor = cur.finished_floor;
        cur.seen_finished.retain(|_, f| *f >= floor);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Lease;
    use crate::claim::ClaimRequest;
    use crate::enqueue::NewTask;
    use crate::queue::testutil::file_queue;

    fn kinds(ch: &Changes) -> Vec<(&'static str, i64, &'static str)> {
        ch.changes
            .iter()
            .map(|c| (c.kind.as_str(), c.id, c.status.as_str()))
            .collect()
    }

    fn lease(t: &crate::task::TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    #[test]
    fn a_task_seen_through_its_life() {
        let (_d, q) = file_queue();
        let old = q.enqueue(&NewTask::new("x", "null")).unwrap();
        let mut cur = q.change_cursor(None).unwrap();
        assert!(q.changes_since(&mut cur, 100).unwrap().changes.is_empty());

        let id = q.enqueue(&NewTask::new("x", "null")).unwrap();
        assert_eq!(
            kinds(&q.changes_since(&mut cur, 100).unwrap()),
            vec![("task.created", id, "queued")]
        );
        let t = q.claim(&ClaimRequest::new("w")).unwrap().pop().unwrap();
        assert_eq!(t.id, old);
        assert_eq!(
            kinds(&q.changes_since(&mut cur, 100).unwrap()),
            vec![("task.status", old, "running")]
        );
        q.progress(lease(&t), Some(10.0), Some("a"), None).unwrap();
        q.progress(lease(&t), Some(20.0), Some("b"), None).unwrap();
        let ch = q.changes_since(&mut cur, 100).unwrap();
        assert_eq!(kinds(&ch), vec![("task.progress", old, "running")]);
        assert_eq!(
            (ch.changes[0].progress, ch.changes[0].step.as_deref()),
            (Some(20.0), Some("b"))
        );
        q.fail(lease(&t), "boom", true).unwrap();
        assert_eq!(
            kinds(&q.changes_since(&mut cur, 100).unwrap()),
            vec![("task.status", old, "queued")]
        );
        // Claimed and completed between two looks: one event, the outcome.
        let t = q.claim(&ClaimRequest::new("w")).unwrap().pop().unwrap();
        q.complete(lease(&t), None).unwrap();
        assert_eq!(
            kinds(&q.changes_since(&mut cur, 100).unwrap()),
            vec![("task.status", t.id, "completed")]
        );
        // Cancelled while queued, then retried: each seen once.
        let other = if t.id == id { old } else { id };
        q.cancel(other).unwrap();
        assert_eq!(
            kinds(&q.changes_since(&mut cur, 100).unwrap()),
            vec![("task.status", other, "cancelled")]
        );
        q.retry(other).unwrap();
        assert_eq!(
            kinds(&q.changes_since(&mut cur, 100).unwrap()),
            vec![("task.status", other, "queued")]
        );
        assert!(q.changes_since(&mut cur, 100).unwrap().changes.is_empty());
    }

    #[test]
    fn bursts_are_paged_and_queues_filtered() {
        let (_d, q) = file_queue();
        let mut all = q.change_cursor(None).unwrap();
        let mut mail = q.change_cursor(Some(vec!["mail".into()])).unwrap();
        for i in 0..25 {
            let mut t = NewTask::new("x", "null");
            t.queue = if i % 5 == 0 {
                "mail".into()
            } else {
                "default".into()
            };
            q.enqueue(&t).unwrap();
        }
        let mut seen = 0;
        loop {
            let ch = q.changes_since(&mut all, 10).unwrap();
            seen += ch.changes.len();
            if !ch.more {
                break;
            }
        }
        assert_eq!(seen, 25);
        let ch = q.changes_since(&mut mail, 100).unwrap();
        assert_eq!(ch.changes.len(), 5);
        assert!(ch.changes.iter().all(|c| c.queue == "mail"));
        let d = q.queue_depths(&["mail".into(), "none".into()]).unwrap();
        assert_eq!(d["mail"], (5, 0));
        assert_eq!(d["none"], (0, 0));
    }

    #[test]
    fn waiting_wakes_on_a_commit_and_stops_on_request() {
        let (_d, q) = file_queue();
        let q = std::sync::Arc::new(q);
        let mut cur = q.change_cursor(None).unwrap();
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(!q
            .wait_for_changes(&cur, Duration::from_millis(50), Duration::ZERO, &stop)
            .unwrap());
        assert!(t0.elapsed() >= Duration::from_millis(50));
        // A commit made before the wait starts still counts: the token is the last look's.
        q.enqueue(&NewTask::new("x", "null")).unwrap();
        assert!(q
            .wait_for_changes(&cur, Duration::from_secs(5), Duration::ZERO, &stop)
            .unwrap());
        q.changes_since(&mut cur, 10).unwrap();
        stop.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        assert!(!q
            .wait_for_changes(&cur, Duration::from_secs(5), Duration::ZERO, &stop)
            .unwrap());
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
