//! Task dependencies on SQLite (see `model::dependencies`): the edges and holds an enqueue
//! writes, and what a task's end for good does to the tasks held on it, in the transaction that
//! ends it. A task nothing waits on costs its acknowledgement one probe of `task_dependents`.

use crate::model::dependencies::{self, Ending, HoldStore, Waits, HELD_UNTIL};
use crate::model::error::Result;
use crate::model::new_task::NewTask;
use crate::storage::sqlite::db::WriteTx;
use crate::storage::sqlite::logs::log_in;
use rusqlite::{params, Connection, OptionalExtension};

/// Write the dependencies of the tasks just inserted as `ids` (see `model::dependencies`).
pub(crate) fn hold_new(
    tx: &WriteTx,
    tasks: &[NewTask],
    ids: &[i64],
    fresh: &[bool],
    now: i64,
) -> Result<()> {
    dependencies::hold_new(&mut Holds { tx, now }, tasks, ids, fresh)
}

/// `hold_new`'s reads and writes on SQLite.
struct Holds<'a, 'b> {
    tx: &'a WriteTx<'b>,
    now: i64,
}

impl HoldStore for Holds<'_, '_> {
    fn dependency(&mut self, dep: i64) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .tx
            .prepare_cached("SELECT status, error FROM tasks WHERE id = ?1")?
            .query_row([dep], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn add_edge(&mut self, id: i64, dep: i64) -> Result<()> {
        self.tx
            .prepare_cached("INSERT INTO task_dependencies (task_id, after_id) VALUES (?1, ?2)")?
            .execute([id, dep])?;
        Ok(())
    }

    fn cancel(&mut self, id: i64, reason: &str) -> Result<()> {
        cancel_held(self.tx, id, reason, self.now)?;
        Ok(())
    }

    fn hold(&mut self, id: i64, waiting: i64, run_anyway: bool) -> Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO task_holds (task_id, waiting, run_anyway, due)
                 SELECT id, ?2, ?3, run_after FROM tasks WHERE id = ?1",
            )?
            .execute(params![id, waiting, run_anyway])?;
        self.tx
            .prepare_cached("UPDATE tasks SET run_after = ?2 WHERE id = ?1")?
            .execute([id, HELD_UNTIL])?;
        Ok(())
    }
}

/// A held (or just enqueued) task cancelled because of a dependency; true when it was queued.
fn cancel_held(tx: &WriteTx, id: i64, reason: &str, now: i64) -> Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE tasks SET status = 'cancelled', error = ?2, finished_at = ?3, updated_at = ?3
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, reason, now])?;
    if n == 1 {
        log_in(tx, id, now, "warning", &format!("cancelled: {reason}"))?;
    }
    Ok(n == 1)
}

/// Task `id` ended for good as `ending`: release the tasks held on it whose last dependency
/// this was, and cancel those it dooms, and theirs in turn. True when any task changed (the
/// claim memory must then be forgotten, see `claim::heads`).
pub(crate) fn ended(tx: &WriteTx, id: i64, ending: Ending, now: i64) -> Result<bool> {
    let mut changed = false;
    let mut work = vec![(id, ending)];
    while let Some((id, ending)) = work.pop() {
        let dependents: Vec<i64> = tx
            .prepare_cached("SELECT task_id FROM task_dependencies WHERE after_id = ?1")?
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for d in dependents {
            let hold: Option<(i64, bool, i64)> = tx
                .prepare_cached(
                    "SELECT waiting, run_anyway, due FROM task_holds WHERE task_id = ?1",
                )?
                .query_row([d], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((waiting, run_anyway, due)) = hold else {
                continue; // released, cancelled, or never held
            };
            changed = true;
            if ending == Ending::Completed || run_anyway {
                if waiting > 1 {
                    tx.prepare_cached(
                        "UPDATE task_holds SET waiting = waiting - 1 WHERE task_id = ?1",
                    )?
                    .execute([d])?;
                } else {
                    release(tx, d, due, now)?;
                }
            } else {
                tx.prepare_cached("DELETE FROM task_holds WHERE task_id = ?1")?
                    .execute([d])?;
                let reason = ending.reason(id);
                if cancel_held(tx, d, &reason, now)? {
                    work.push((d, Ending::Cancelled(Some(reason))));
                }
            }
        }
    }
    Ok(changed)
}

/// Every dependency of `id` is met: due at its own time again (now, unless it was delayed).
fn release(tx: &WriteTx, id: i64, due: i64, now: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM task_holds WHERE task_id = ?1")?
        .execute([id])?;
    let n = tx
        .prepare_cached(
            "UPDATE tasks SET run_after = max(?2, ?3), updated_at = ?3
             WHERE id = ?1 AND status = 'queued'",
        )?
        .execute(params![id, due, now])?;
    if n == 1 {
        log_in(tx, id, now, "info", "released: every dependency is met")?;
    }
    Ok(())
}

/// A task cancelled by hand: it waits on nothing any more, and what waited on it follows.
pub(crate) fn cancelled(tx: &WriteTx, id: i64, now: i64) -> Result<bool> {
    tx.prepare_cached("DELETE FROM task_holds WHERE task_id = ?1")?
        .execute([id])?;
    ended(tx, id, Ending::Cancelled(None), now)
}

/// What task `id` waits on, for `get`: two probes of the primary keys.
pub(crate) fn waits(c: &Connection, id: i64) -> Result<Waits> {
    let held = c
        .prepare_cached("SELECT 1 FROM task_holds WHERE task_id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some();
    let rows: Vec<(i64, Option<String>)> = c
        .prepare_cached(
            "SELECT d.after_id, t.status FROM task_dependencies d
             LEFT JOIN tasks t ON t.id = d.after_id
             WHERE d.task_id = ?1 ORDER BY d.after_id",
        )?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let waiting_on = rows
        .iter()
        .filter(|(_, s)| held && matches!(s.as_deref(), Some("queued" | "running")))
        .map(|(a, _)| *a)
        .collect();
    Ok(Waits {
        after: rows.into_iter().map(|(a, _)| a).collect(),
        waiting_on,
    })
}

#[cfg(test)]
mod tests {
    use crate::model::claim::ClaimRequest;
    use crate::model::dependencies::{OnFailure, HELD_UNTIL};
    use crate::model::lease::Lease;
    use crate::model::new_task::NewTask;
    use crate::model::task::{Status, TaskRow};
    use crate::storage::sqlite::testutil::file_driver;
    use crate::storage::sqlite::SqliteDriver;

    fn after(ids: &[i64], priority: i64) -> NewTask {
        let mut t = NewTask::new("x", "null");
        t.after = ids.to_vec();
        t.priority = priority;
        t
    }

    fn claim(q: &SqliteDriver) -> Option<TaskRow> {
        q.claim(&ClaimRequest::new("w")).unwrap().pop()
    }

    fn lease(t: &TaskRow) -> Lease {
        Lease {
            task_id: t.id,
            token: t.lease_token.unwrap(),
        }
    }

    #[test]
    fn a_held_task_runs_once_its_last_dependency_completes() {
        let (_d, q) = file_driver();
        let a = q.enqueue(&NewTask::new("x", "1")).unwrap();
        let b = q.enqueue(&NewTask::new("x", "2")).unwrap();
        // Priority 200: behind a and b in the lane, where the claim memory remembers it.
        let c = q.enqueue(&after(&[a, b], 200)).unwrap();
        let held = q.get(c).unwrap();
        assert_eq!((held.status, held.run_after), (Status::Queued, HELD_UNTIL));
        assert_eq!(
            (held.after.clone(), held.waiting_on.clone()),
            (vec![a, b], vec![a, b])
        );
        assert_eq!(
            q.position(c, crate::model::strategy::Strategy::Priority)
                .unwrap(),
            None
        );
        let ta = claim(&q).unwrap();
        q.complete(lease(&ta), None).unwrap();
        assert_eq!(q.get(c).unwrap().waiting_on, vec![b]);
        let tb = claim(&q).unwrap();
        assert_eq!(tb.id, b);
        assert!(claim(&q).is_none(), "c waits on b, which runs");
        q.complete(lease(&tb), None).unwrap();
        // A single claim right after a completion trusts its memory: the release must show.
        let tc = claim(&q).expect("c is released by b's completion");
        assert_eq!(tc.id, c);
        let row = q.get(c).unwrap();
        assert_eq!((row.after, row.waiting_on), (vec![a, b], vec![]));
    }

    #[test]
    fn a_dead_letter_cancels_the_chain_with_its_reason_unless_it_runs_anyway() {
        let (_d, q) = file_driver();
        let mut first = NewTask::new("x", "1");
        first.max_attempts = 1;
        let a = q.enqueue(&first).unwrap();
        let b = q.enqueue(&after(&[a], 100)).unwrap();
        let c = q.enqueue(&after(&[b], 100)).unwrap();
        let mut anyway = after(&[a], 100);
        anyway.on_dependency_failure = OnFailure::Run;
        let d = q.enqueue(&anyway).unwrap();
        let ta = claim(&q).unwrap();
        q.fail(lease(&ta), "boom", true).unwrap();
        let (rb, rc) = (q.get(b).unwrap(), q.get(c).unwrap());
        assert_eq!(rb.status, Status::Cancelled);
        assert_eq!(
            rb.error.as_deref(),
            Some(&*format!("dependency {a} failed: boom"))
        );
        assert_eq!(rc.status, Status::Cancelled);
        assert_eq!(
            rc.error.unwrap(),
            format!("dependency {b} was cancelled: dependency {a} failed: boom")
        );
        assert_eq!(claim(&q).map(|t| t.id), Some(d), "d runs anyway");
        // A dependency that failed before the dependent was enqueued dooms it at once.
        let late = q.enqueue(&after(&[a], 100)).unwrap();
        assert_eq!(q.get(late).unwrap().status, Status::Cancelled);
    }

    #[test]
    fn cancel_propagates_and_completed_dependencies_count_as_met() {
        let (_d, q) = file_driver();
        let a = q.enqueue(&NewTask::new("x", "1")).unwrap();
        let b = q.enqueue(&after(&[a], 100)).unwrap();
        assert!(q.cancel(a).unwrap());
        let rb = q.get(b).unwrap();
        assert_eq!(rb.status, Status::Cancelled);
        assert_eq!(rb.error.unwrap(), format!("dependency {a} was cancelled"));

        let c = q.enqueue(&NewTask::new("x", "1")).unwrap();
        let tc = claim(&q).unwrap();
        q.complete_many(&[(lease(&tc), None)]).unwrap();
        let d = q.enqueue(&after(&[c], 100)).unwrap();
        assert_eq!(q.get(d).unwrap().waiting_on, Vec::<i64>::new());
        assert_eq!(claim(&q).map(|t| t.id), Some(d));
    }

    #[test]
    fn bad_dependencies_write_nothing() {
        let (_d, q) = file_driver();
        let a = q.enqueue(&NewTask::new("x", "1")).unwrap();
        let e = q
            .enqueue_many(&[NewTask::new("x", "2"), after(&[a, 999], 100)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("task 999, which does not exist"), "{e}");
        // An id of the same batch, after the task's own: refused (it could make a cycle).
        let e = q
            .enqueue_many(&[after(&[a + 2], 100), NewTask::new("x", "3")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only on tasks enqueued before it"), "{e}");
        let mut keyed = NewTask::new("x", "4");
        keyed.idempotency_key = Some("k".into());
        let k = q.enqueue(&keyed).unwrap();
        keyed.after = vec![k];
        let e = q.enqueue(&keyed).unwrap_err().to_string();
        assert!(e.contains("cannot wait on itself"), "{e}");
        assert_eq!(q.stats(None).unwrap().total, 2);
        let edges: i64 = q
            .db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM task_dependencies", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(edges, 0);
    }
}
