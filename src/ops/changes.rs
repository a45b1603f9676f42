//! The change feed for event streams: cursors, looks and waits (see `model::changes`).

use crate::engine::queue::Queue;
use crate::model::changes::check_changes_limit;
use crate::model::changes::ChangeCursor;
use crate::model::changes::ChangeToken;
use crate::model::changes::Changes;
use crate::model::changes::WAIT_POLL;
use crate::model::error::Result;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

impl Queue {
    /// Queued and running counts of each of `queues` (queued: one covering range of the claim
    /// index per lane of the queue; running: the running rows).
    pub fn queue_depths(&self, queues: &[String]) -> Result<BTreeMap<String, (i64, i64)>> {
        self.driver.queue_depths(queues)
    }

    /// The database's position now (see `ChangeToken`).
    pub fn change_token(&self) -> Result<ChangeToken> {
        Ok(ChangeToken {
            generation: self.wakeup.generation(),
            data_version: self.driver.data_version()?,
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
                let ready = last.checked_add(min_gap).unwrap_or(last);
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
        let deadline =
            crate::model::time::deadline(crate::model::time::check_wait("timeout", timeout)?);
        let mut waiter = self.waiter();
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

    /// A cursor at the present: the next look reports what changes from now on. `queues`
    /// restricts it to those queues (None: every queue).
    pub fn change_cursor(&self, queues: Option<Vec<String>>) -> Result<ChangeCursor> {
        let token = self.change_token()?;
        self.driver.change_cursor(queues, token)
    }

    /// One look: what changed since the cursor's last look (see `storage::sqlite::changes`),
    /// at most `limit` new tasks of it (the rest is reported with `more` and comes next time).
    pub fn changes_since(&self, cursor: &mut ChangeCursor, limit: usize) -> Result<Changes> {
        check_changes_limit(limit)?;
        let token = self.change_token()?;
        self.driver.changes_since(cursor, limit, token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::queue::testutil::file_queue;
    use crate::model::changes::Changes;
    use crate::model::claim::ClaimRequest;
    use crate::model::lease::Lease;
    use crate::model::new_task::NewTask;

    fn kinds(ch: &Changes) -> Vec<(&'static str, i64, &'static str)> {
        ch.changes
            .iter()
            .map(|c| (c.kind.as_str(), c.id, c.status.as_str()))
            .collect()
    }

    fn lease(t: &crate::model::task::TaskRow) -> Lease {
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

    /// What `events.watch` relies on: a token taken before a commit of this very handle is
    /// behind it, whether the commit lands before the wait starts or during it (from another
    /// thread), and one taken after it is not. A stream's waiter takes its token before
    /// `watch()` returns (events.py) and counts on exactly this.
    #[test]
    fn a_token_is_passed_by_this_handles_own_commits_on_each_backend() {
        let never = AtomicBool::new(false);
        for (backend, q, _guard) in crate::engine::queue::testutil::each_backend() {
            let q = std::sync::Arc::new(q);
            let token = q.change_token().unwrap();
            q.enqueue(&NewTask::new("x", "null")).unwrap();
            assert!(
                q.wait_past(token, Duration::ZERO, &never).unwrap(),
                "{backend}: a commit before the wait"
            );
            let after = q.change_token().unwrap();
            // PostgreSQL's position moves with any write on the server (other tests' too).
            if backend == "sqlite" {
                let moved = q.wait_past(after, Duration::from_millis(20), &never);
                assert!(!moved.unwrap(), "nothing committed since");
            }
            let writer = {
                let q = q.clone();
                std::thread::spawn(move || q.enqueue(&NewTask::new("x", "null")).unwrap())
            };
            // Only this handle writes: a wait that missed its commit would time out.
            assert!(
                q.wait_past(after, Duration::from_secs(30), &never).unwrap(),
                "{backend}: a commit during the wait"
            );
            writer.join().unwrap();
        }
    }

    /// A priority change reorders the queue, so the feed reports it (a status event, the task
    /// still queued) on each backend, with a log line saying what changed; a priority set to the
    /// value it had changes nothing and reports nothing.
    #[test]
    fn a_priority_change_is_seen_on_each_backend() {
        for (backend, q, _guard) in crate::engine::queue::testutil::each_backend() {
            let mut t = NewTask::new("x", "null");
            t.queue = "prio-feed".into();
            let id = q.enqueue(&t).unwrap();
            let mut cur = q.change_cursor(Some(vec!["prio-feed".into()])).unwrap();
            assert!(q.set_priority(id, 7).unwrap());
            assert_eq!(
                kinds(&q.changes_since(&mut cur, 100).unwrap()),
                vec![("task.status", id, "queued")],
                "{backend}"
            );
            assert!(q.set_priority(id, 7).unwrap());
            assert!(
                q.changes_since(&mut cur, 100).unwrap().changes.is_empty(),
                "{backend}"
            );
            let logs = q.logs(id, 100).unwrap();
            let lines: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
            assert_eq!(
                lines,
                vec!["priority changed from 100 to 7 by set_priority()"],
                "{backend}"
            );
        }
    }

    #[test]
    fn a_look_limit_out_of_range_is_refused() {
        let (_d, q) = file_queue();
        let mut cur = q.change_cursor(None).unwrap();
        for limit in [0, crate::model::changes::MAX_CHANGES_LIMIT + 1] {
            let e = q.changes_since(&mut cur, limit).unwrap_err();
            assert!(
                matches!(&e, crate::model::error::Error::InvalidArgument(m)
                    if *m == format!("limit must be between 1 and 100000, got {limit}")),
                "{e:?}"
            );
        }
        assert!(q.changes_since(&mut cur, 1).is_ok());
    }
}
