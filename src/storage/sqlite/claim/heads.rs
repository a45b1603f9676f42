//! Lane heads a handle remembers from one claim to the next.
//!
//! Why: a claim of one task looks up the head of every lane it may take from (one index search
//! per lane: eight in the benchmark, one per task type in general), although when nothing else
//! wrote to the file since its previous claim only the lane it took from has changed. Those
//! searches were a sixth of a one-task claim+complete cycle.
//!
//! When the memory is trusted: SQLite's data version of the writer connection (`db::data_version`)
//! changes with every commit to the file, this connection's own and any other connection's, of
//! this process or another. The memory holds the version it is exact for, read right after the
//! commit of the transaction that left it exact; a transaction that finds another version starts
//! from nothing. Only a single-task claim (which updates the memory) and acknowledgements that
//! cannot put a task back in the queue (`complete`, `complete_many`, `settle` without failures)
//! carry the memory over their commit; every other write, ours or another process's, leaves a
//! newer version behind. So a write path that does not know about this memory costs the next
//! claim a full search, never a wrong answer.
//!
//! Time: a claim takes the first *due* row of a lane in the strategy's order. A lane's head is
//! remembered only when the first row of the lane in that order, due or not, is due (or the lane
//! has no queued row): a row that becomes due later comes after it in that order, so the passing
//! of time cannot change the answer. A lane whose first row is delayed is searched at every claim.
//!
//! A search reads the lane's first `KEPT` rows in that order, not one: while the memory is
//! trusted, the rows after a claimed head are the lane's next heads, each the answer as soon as it
//! is due, so a run of claims from one lane searches it once per `KEPT` claims.
//!
//! Leases: the memory also keeps when the earliest running lease ends, as the rescue of expired
//! leases that opens a claim last saw it, lowered by every lease the handle's claims hand out
//! since (a completion only removes leases). Until then that rescue cannot find anything, and a
//! trusted claim skips it.

use crate::model::error::Result;
use crate::model::strategy::{Candidate, Strategy};
use crate::storage::sqlite::db::data_version;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::SqliteDriver;
use parking_lot::{Mutex, MutexGuard};
use rusqlite::{params, Connection};
use std::collections::{HashMap, VecDeque};

#[cfg(test)]
thread_local! {
    /// Lane searches this thread's claims made because the memory did not know the lane.
    static SEARCHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many of a lane's first rows one search reads (see the module comment).
pub const KEPT: usize = 16;

/// What a claim knows of a lane without searching it.
#[derive(Debug, Clone)]
enum Known {
    /// No queued row at all.
    Empty,
    /// The lane's first queued rows in the strategy's order, due or not, never empty; the first
    /// was due when they were read. `whole`: they are all of the lane's queued rows.
    Heads {
        rows: VecDeque<Candidate>,
        whole: bool,
    },
    /// The lane's first queued row is not due before this time (ms): until then a claim
    /// searches the lane for its first due row directly, as without this memory.
    Delayed(i64),
}

#[derive(Debug)]
struct State {
    /// The writer connection (its epoch) and its data version the memory is exact for; `None`:
    /// not trusted.
    version: Option<(u64, u32)>,
    /// A transaction is using the memory: set `version` after its commit (`committed`).
    pending: bool,
    strategy: Strategy,
    lanes: HashMap<i64, Known>,
    /// No running task's lease ends before this lease key (`i64::MAX`: none running); `None`:
    /// unknown.
    lease_floor: Option<i64>,
}

impl State {
    fn clear(&mut self) {
        self.lanes.clear();
        self.lease_floor = None;
    }

    /// A transaction takes the memory: whether it is exact for `tx` (forgotten otherwise), and
    /// untrusted from here until that transaction commits (a rollback or error leaves it so).
    fn take(&mut self, tx: &WriteTx) -> bool {
        let now = data_version(tx).map(|v| (tx.epoch, v));
        let exact = now.is_some() && self.version == now;
        if !exact {
            self.clear();
        }
        self.version = None;
        exact
    }
}

/// The memory of one `Queue` handle.
#[derive(Debug)]
pub struct Heads(Mutex<State>);

impl Default for Heads {
    fn default() -> Heads {
        Heads(Mutex::new(State {
            version: None,
            pending: false,
            strategy: Strategy::Priority,
            lanes: HashMap::new(),
            lease_floor: None,
        }))
    }
}

/// The memory, open for one single-task claim inside its write transaction; `trusted` when it
/// was exact for this transaction (nothing committed since the previous claim or completion).
pub struct Open<'a> {
    s: MutexGuard<'a, State>,
    trusted: bool,
}

impl Heads {
    /// Open the memory for a single-task claim by `strategy` in `tx`.
    pub fn open(&self, tx: &WriteTx, strategy: Strategy) -> Open<'_> {
        let mut s = self.0.lock();
        let trusted = s.take(tx);
        if s.strategy != strategy {
            s.lanes.clear();
            s.strategy = strategy;
        }
        s.pending = true;
        Open { s, trusted }
    }

    /// A transaction that cannot make any queued task claimable earlier or add one (completions)
    /// keeps the memory exact, if it was exact when the transaction began.
    pub fn carry(&self, tx: &WriteTx) {
        let mut s = self.0.lock();
        s.pending = s.take(tx);
    }

    /// This transaction changes the queue in ways the memory does not follow (a batch claim, a
    /// failure that may queue its task again, before a claim in the same transaction): forget
    /// everything.
    pub fn forget(&self) {
        let mut s = self.0.lock();
        s.version = None;
        s.pending = false;
        s.clear();
    }

    /// After the commit of a transaction that opened or carried the memory: it is exact for the
    /// connection's new data version. (`Db::write_then` runs this before any other thread of the
    /// process can write; see `Queue::write_keeping_heads`.)
    fn committed(&self, conn: &Connection, epoch: u64) {
        let mut s = self.0.lock();
        if s.pending {
            s.version = data_version(conn).map(|v| (epoch, v));
            s.pending = false;
        }
    }
}

impl SqliteDriver {
    /// `Db::write` for the transactions that use the memory (claims, completions): after a
    /// successful commit the memory is recorded exact for the state that commit left.
    pub(crate) fn write_keeping_heads<T>(&self, f: impl FnMut(&WriteTx) -> Result<T>) -> Result<T> {
        self.db
            .write_then(f, |conn, epoch| self.heads.committed(conn, epoch))
    }
}

/// The lane's first `limit` queued rows in the strategy's order that are due at `due_by` (the
/// claim's search before this memory, with `now`; a lane's first rows due or not, with `i64::MAX`).
fn first_rows(
    tx: &WriteTx,
    strategy: Strategy,
    lane: i64,
    due_by: i64,
    limit: usize,
) -> Result<VecDeque<Candidate>> {
    Ok(tx
        .prepare_cached(strategy.candidate_sql())?
        .query_map(params![lane, due_by, limit as i64], Candidate::from_row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// The lane's first due row in the strategy's order.
fn first_due(tx: &WriteTx, strategy: Strategy, lane: i64, now: i64) -> Result<Option<Candidate>> {
    Ok(first_rows(tx, strategy, lane, now, 1)?.pop_front())
}

impl Open<'_> {
    /// Whether the memory was exact when this transaction opened it.
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// The claim candidate of `lane` (its first due row in the strategy's order), from memory
    /// when it is known, else from the index.
    pub fn candidate(&mut self, tx: &WriteTx, lane: i64, now: i64) -> Result<Option<Candidate>> {
        let strategy = self.s.strategy;
        match self.s.lanes.get(&lane) {
            Some(Known::Empty) => return Ok(None),
            Some(Known::Heads { .. }) => {}
            Some(Known::Delayed(until)) if now < *until => {
                return first_due(tx, strategy, lane, now)
            }
            _ => {
                #[cfg(test)]
                SEARCHES.with(|n| n.set(n.get() + 1));
                let rows = first_rows(tx, strategy, lane, i64::MAX, KEPT)?;
                if rows.is_empty() {
                    self.s.lanes.insert(lane, Known::Empty);
                    return Ok(None);
                }
                let whole = rows.len() < KEPT;
                self.s.lanes.insert(lane, Known::Heads { rows, whole });
            }
        }
        // The lane's first row now, due or not (the remembered ones before it were claimed).
        let head = match self.s.lanes.get(&lane) {
            Some(Known::Heads { rows, .. }) => rows.front().cloned(),
            _ => None,
        }
        .expect("a lane's remembered rows are never empty");
        if head.run_after <= now {
            return Ok(Some(head));
        }
        // Not due yet: search for the first due row. That one is not remembered (a row skipped
        // for not being due may become due and overtake it); the delay is.
        self.s.lanes.insert(lane, Known::Delayed(head.run_after));
        first_due(tx, strategy, lane, now)
    }

    /// The claim took task `id` from `lane`, leased until the lease key `lease_until`. A lane with remembered
    /// rows gave its first one (`candidate`), and the next is the head now; a delayed lane gave a
    /// row from a search past its head, and is searched again next time.
    pub fn taken(&mut self, lane: i64, id: i64, lease_until: i64) {
        match self.s.lanes.get_mut(&lane) {
            Some(Known::Heads { rows, whole }) => {
                let head = rows.pop_front();
                debug_assert_eq!(head.map(|c| c.id), Some(id));
                if rows.is_empty() {
                    if *whole {
                        self.s.lanes.insert(lane, Known::Empty);
                    } else {
                        self.s.lanes.remove(&lane);
                    }
                }
            }
            _ => {
                self.s.lanes.remove(&lane);
            }
        }
        if let Some(f) = self.s.lease_floor.as_mut() {
            *f = (*f).min(lease_until);
        }
    }

    /// Whether a rescue of expired leases can find anything at the lease key `now`: not while
    /// the memory knows that no lease ends before a later one.
    pub fn may_rescue(&self, now: i64) -> bool {
        self.s.lease_floor.is_none_or(|f| now >= f)
    }

    /// A rescue ran: it moved `moved` tasks back to their lanes (forget the lanes then), and the
    /// earliest lease still running ends at `next_end`.
    pub fn rescued(&mut self, moved: usize, next_end: i64) {
        if moved > 0 {
            self.s.lanes.clear();
        }
        self.s.lease_floor = Some(next_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::Lease;
    use crate::model::new_task::NewTask;
    use crate::model::options::QueueOptions;
    use crate::model::retry::RetryOverrides;
    use crate::model::task::TaskRow;
    use crate::storage::sqlite::SqliteDriver;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn searches() -> u64 {
        SEARCHES.with(|n| n.get())
    }

    fn rescues() -> u64 {
        crate::storage::sqlite::rescuer::RESCUE_PROBES.with(|n| n.get())
    }

    fn open(path: &str) -> SqliteDriver {
        SqliteDriver::open(
            path,
            QueueOptions::default(),
            Box::new(|| {}),
            crate::testutil::RULES,
        )
        .unwrap()
    }

    fn claim(q: &SqliteDriver, s: Strategy) -> Option<TaskRow> {
        let mut req = ClaimRequest::new("w");
        req.strategy = s;
        q.claim(&req).unwrap().pop()
    }

    fn lease(t: &TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    /// The task a claim by `s` must take now, from all queued due rows, without any memory.
    fn expected(q: &SqliteDriver, s: Strategy) -> Option<i64> {
        let mut all: Vec<Candidate> =
            q.db.read(|c| {
                let mut st = c.prepare(
                    "SELECT id, priority, run_after, wkey FROM tasks
                     WHERE status = 'queued' AND run_after <= ?1",
                )?;
                let rows = st.query_map([crate::model::time::now_ms()], Candidate::from_row)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .unwrap();
        all.sort_by(|a, b| s.compare(a, b));
        all.first().map(|c| c.id)
    }

    fn task(t: &str, priority: i64) -> NewTask {
        let mut n = NewTask::new(t, "null");
        n.priority = priority;
        n
    }

    #[test]
    fn a_claim_searches_no_lane_while_nothing_else_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let path = path.to_str().unwrap();
        let (a, b) = (open(path), open(path));
        let tasks: Vec<NewTask> = (0..80).map(|i| task(&format!("t{}", i % 8), 100)).collect();
        a.enqueue_many(&tasks).unwrap();
        let s = Strategy::Priority;
        let n0 = searches();
        let t = claim(&a, s).unwrap();
        assert_eq!(searches() - n0, 8, "the first claim searches every lane");
        a.complete(lease(&t), None).unwrap();
        let n1 = searches();
        let r1 = rescues();
        claim(&a, s).unwrap();
        assert_eq!(
            searches() - n1,
            0,
            "then none: the rows after the lane's head were read with it"
        );
        assert_eq!(
            rescues() - r1,
            0,
            "and no lease can have ended: no rescue probe"
        );
        // Another connection's commit (here a new task) makes the next claim search them all.
        let newest = b.enqueue(&task("t5", 1)).unwrap();
        let n2 = searches();
        let r2 = rescues();
        assert_eq!(claim(&a, s).unwrap().id, newest);
        assert_eq!(searches() - n2, 8);
        assert_eq!(rescues() - r2, 1);
        // So does any write of this handle that is not a claim or a completion.
        let n3 = searches();
        claim(&a, s).unwrap();
        assert_eq!(searches() - n3, 0);
        a.set_priority(tasks.len() as i64, 1).unwrap();
        let n4 = searches();
        assert_eq!(claim(&a, s).unwrap().id, tasks.len() as i64);
        assert_eq!(searches() - n4, 8);
        // And a claim by another strategy.
        let n5 = searches();
        claim(&a, Strategy::Fifo).unwrap();
        assert_eq!(searches() - n5, 8);
    }

    #[test]
    fn a_lane_is_searched_once_per_kept_rows() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path().join("q.db").to_str().unwrap());
        let n = KEPT + 3;
        let ids = q
            .enqueue_many(&(0..n).map(|_| task("t", 100)).collect::<Vec<_>>())
            .unwrap();
        let mut per_claim = Vec::new();
        for id in &ids {
            let before = searches();
            assert_eq!(claim(&q, Strategy::Fifo).unwrap().id, *id);
            per_claim.push(searches() - before);
        }
        let before = searches();
        assert!(claim(&q, Strategy::Fifo).is_none());
        per_claim.push(searches() - before);
        // The first search reads KEPT rows, the one after them the last three (the whole lane
        // then), and the claim after the last row knows the lane is empty.
        let mut want = vec![0; n + 1];
        want[0] = 1;
        want[KEPT] = 1;
        assert_eq!(per_claim, want);
    }

    #[test]
    fn a_remembered_row_that_is_not_due_yet_is_stepped_over() {
        // Priority order: A (1, due), B (2, due in an hour), C (3, due). After A, the remembered
        // head is B, which must not be taken: C is.
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path().join("q.db").to_str().unwrap());
        let mut b = task("t", 2);
        b.delay_ms = Some(3_600_000);
        let ids = q.enqueue_many(&[task("t", 1), b, task("t", 3)]).unwrap();
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, ids[0]);
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, ids[2]);
        assert!(claim(&q, Strategy::Priority).is_none());
    }

    #[test]
    fn claims_take_what_a_fresh_search_would_through_every_kind_of_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let path = path.to_str().unwrap();
        // Two handles on one file, as two processes: each one's writes are the other's news.
        let qs = [open(path), open(path)];
        let mut rng = StdRng::seed_from_u64(7);
        let mut held: Vec<(usize, TaskRow)> = Vec::new();
        let strategies = [
            Strategy::Priority,
            Strategy::Fifo,
            Strategy::Lifo,
            Strategy::WeightedRandom,
        ];
        let mut claims = 0;
        for step in 0..3000 {
            let h = rng.random_range(0..2);
            let q = &qs[h];
            match rng.random_range(0..10) {
                0..=2 => {
                    let mut t = task(
                        &format!("t{}", rng.random_range(0..5)),
                        rng.random_range(1..20),
                    );
                    if rng.random_range(0..6) == 0 {
                        t.delay_ms = Some(3_600_000);
                    }
                    t.retry = Some(RetryOverrides {
                        base: Some(0.0),
                        jitter: Some(0.0),
                        ..Default::default()
                    });
                    q.enqueue(&t).unwrap();
                }
                3..=5 => {
                    // Mostly one strategy per handle, as a worker runs, sometimes another.
                    let s = if rng.random_range(0..5) == 0 {
                        strategies[rng.random_range(0..4)]
                    } else {
                        strategies[h]
                    };
                    let want = expected(q, s);
                    let got = claim(q, s);
                    assert_eq!(got.as_ref().map(|t| t.id), want, "step {step}, {s:?}");
                    claims += 1;
                    if let Some(t) = got {
                        held.push((h, t));
                    }
                }
                6 if !held.is_empty() => {
                    let (h, t) = held.swap_remove(rng.random_range(0..held.len()));
                    // A cancelled task answers LeaseLost, which changes nothing.
                    let _ = qs[h].complete(lease(&t), None);
                }
                7 if !held.is_empty() => {
                    // Retried at once (zero backoff): back in its lane, due now.
                    let (h, t) = held.swap_remove(rng.random_range(0..held.len()));
                    let _ = qs[h].fail(lease(&t), "boom", true);
                }
                8 => {
                    let id = rng.random_range(1..=(step as i64 / 3 + 1));
                    let _ = q.set_priority(id, rng.random_range(1..20));
                }
                9 => {
                    let id = rng.random_range(1..=(step as i64 / 3 + 1));
                    let _ = q.cancel(id);
                }
                _ => {}
            }
        }
        assert!(claims > 500, "{claims}");
    }

    fn at_once(t: &mut NewTask) {
        t.retry = Some(RetryOverrides {
            base: Some(0.0),
            jitter: Some(0.0),
            ..Default::default()
        });
    }

    #[test]
    fn settle_after_a_failure_sees_the_task_it_queued_again() {
        let (_dir, q) = crate::storage::sqlite::testutil::file_driver();
        let mut first = task("a", 1);
        at_once(&mut first);
        let first = q.enqueue(&first).unwrap();
        let later = q.enqueue(&task("a", 50)).unwrap();
        let other = q.enqueue(&task("b", 40)).unwrap();
        let t = claim(&q, Strategy::Priority).unwrap();
        assert_eq!(t.id, first);
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, other);
        // The memory holds lane a's head (`later`); the failure puts `first` back ahead of it,
        // in the very transaction of the claim.
        let out = q
            .settle(
                &[],
                &[crate::model::lease::Failure::new(lease(&t), "boom", true)],
                Some(&ClaimRequest::new("w")),
            )
            .unwrap();
        assert_eq!((out.claimed[0].id, out.claimed[0].attempts), (first, 2));
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, later);
    }

    #[test]
    fn a_delayed_first_row_is_searched_again_once_due() {
        let (_dir, q) = crate::storage::sqlite::testutil::file_driver();
        let mut soon = task("a", 1);
        soon.delay_ms = Some(300); // long enough to still be ahead at the first claim on a slow machine
        let soon = q.enqueue(&soon).unwrap();
        let due = q.enqueue(&task("a", 50)).unwrap();
        let other = q.enqueue(&task("b", 10)).unwrap();
        // Lane a's first due row is `due`, behind the delayed `soon`: it must not be remembered.
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, other);
        while crate::model::time::now_ms() <= q.get(soon).unwrap().run_after {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, soon);
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, due);
    }

    /// Sleep until task `id`'s lease has ended on the lease clock too. The wait reads the wall
    /// clock (`lease_until`); the lease key is on the monotonic clock, whose milliseconds tick at
    /// another phase, so the key can end up to a millisecond later: one more is waited (without it
    /// a claim right after the wait could still see the lease running, once in a loaded run).
    fn wait_out_lease(q: &SqliteDriver, id: i64) {
        while crate::model::time::now_ms() <= q.get(id).unwrap().lease_until.unwrap() + 1 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_lease_handed_out_by_a_trusted_claim_is_rescued_once_it_ends() {
        let (_dir, q) = crate::storage::sqlite::testutil::file_driver();
        let old = q.enqueue(&task("a", 1)).unwrap();
        let others: Vec<i64> = (0..3).map(|_| q.enqueue(&task("b", 40)).unwrap()).collect();
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, old);
        q.release(lease(&q.get(old).unwrap())).unwrap();
        // Memory rebuilt by this claim (after the release), which leases `old` for 200 ms (long
        // enough to outlast the next claim on a slow machine)...
        let mut req = ClaimRequest::new("w");
        req.lease_ms = 200;
        assert_eq!(q.claim(&req).unwrap()[0].id, old);
        // ...a trusted claim before it ends skips the rescue...
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, others[0]);
        wait_out_lease(&q, old);
        // ...and the first one after it puts `old` back and takes it.
        let again = claim(&q, Strategy::Priority).unwrap();
        assert_eq!((again.id, again.attempts), (old, 2));
    }

    #[test]
    fn an_expired_lease_rescued_by_the_claim_is_seen_by_it() {
        let (_dir, q) = crate::storage::sqlite::testutil::file_driver();
        let old = q.enqueue(&task("a", 1)).unwrap();
        q.enqueue(&task("a", 50)).unwrap();
        let other = q.enqueue(&task("b", 40)).unwrap();
        // A lease that outlasts the next claim even on a slow machine (a 1 ms one could end
        // before it, which then rescued `old`), waited out before the claim that must rescue it.
        let mut req = ClaimRequest::new("w");
        req.lease_ms = 200;
        assert_eq!(q.claim(&req).unwrap()[0].id, old);
        assert_eq!(claim(&q, Strategy::Priority).unwrap().id, other);
        wait_out_lease(&q, old);
        // This claim puts `old` back in lane a, whose head the memory holds, then chooses.
        let again = claim(&q, Strategy::Priority).unwrap();
        assert_eq!((again.id, again.attempts), (old, 2));
    }
}
