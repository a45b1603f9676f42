//! Dependencies on PostgreSQL: holds and releases, the dead letter's and cancel's propagation,
//! the run-anyway flag, refusals that write nothing, and a release waking a listener's lane.

use super::util::pg_or_skip;
use super::{claim, lease};
use crate::model::dependencies::{OnFailure, HELD_UNTIL};
use crate::model::new_task::NewTask;
use crate::model::strategy::Strategy;
use crate::model::task::Status;

fn after(ids: &[i64]) -> NewTask {
    let mut t = NewTask::new("x", "null");
    t.after = ids.to_vec();
    t
}

#[test]
fn a_held_task_runs_once_every_dependency_completed() {
    let (_db, q) = pg_or_skip!();
    let a = q.enqueue(&NewTask::new("x", "1")).unwrap();
    let b = q.enqueue(&NewTask::new("x", "2")).unwrap();
    let c = q.enqueue(&after(&[a, b])).unwrap();
    let held = q.get(c).unwrap();
    assert_eq!((held.status, held.run_after), (Status::Queued, HELD_UNTIL));
    assert_eq!((held.after, held.waiting_on), (vec![a, b], vec![a, b]));
    assert_eq!(q.position(c, Strategy::Priority).unwrap(), None);
    let both = claim(&q, Strategy::Priority, 10, 60_000);
    assert_eq!(both.len(), 2, "c is held");
    q.complete(lease(&both[0]), None).unwrap();
    assert_eq!(q.get(c).unwrap().waiting_on, vec![b]);
    q.complete_many(&[(lease(&both[1]), Some("7".into()))])
        .unwrap();
    let tc = claim(&q, Strategy::Priority, 10, 60_000);
    assert_eq!(tc.iter().map(|t| t.id).collect::<Vec<_>>(), vec![c]);
}

#[test]
fn a_dead_letter_or_a_cancel_cancels_the_chain_unless_it_runs_anyway() {
    let (_db, q) = pg_or_skip!();
    let mut first = NewTask::new("x", "1");
    first.max_attempts = 1;
    let a = q.enqueue(&first).unwrap();
    let b = q.enqueue(&after(&[a])).unwrap();
    let c = q.enqueue(&after(&[b])).unwrap();
    let mut anyway = after(&[a]);
    anyway.on_dependency_failure = OnFailure::Run;
    let d = q.enqueue(&anyway).unwrap();
    let ta = claim(&q, Strategy::Priority, 1, 60_000).remove(0);
    q.fail_attempt(&crate::model::lease::Failure::new(lease(&ta), "boom", true))
        .unwrap();
    let rc = q.get(c).unwrap();
    assert_eq!(q.get(b).unwrap().status, Status::Cancelled);
    assert_eq!(
        (rc.status, rc.error.unwrap()),
        (
            Status::Cancelled,
            format!("dependency {b} was cancelled: dependency {a} failed: boom")
        )
    );
    let next = claim(&q, Strategy::Priority, 10, 60_000);
    assert_eq!(next.iter().map(|t| t.id).collect::<Vec<_>>(), vec![d]);

    let e = q.enqueue(&NewTask::new("x", "1")).unwrap();
    let f = q.enqueue(&after(&[e])).unwrap();
    assert!(q.cancel(e).unwrap());
    let rf = q.get(f).unwrap();
    assert_eq!(
        (rf.status, rf.error.unwrap()),
        (Status::Cancelled, format!("dependency {e} was cancelled"))
    );
}

#[test]
fn bad_dependencies_write_nothing() {
    let (_db, q) = pg_or_skip!();
    let a = q.enqueue(&NewTask::new("x", "1")).unwrap();
    let e = q
        .enqueue_many(&[NewTask::new("x", "2"), after(&[a, 999_999])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("which does not exist"), "{e}");
    let mut keyed = NewTask::new("x", "3");
    keyed.idempotency_key = Some("k".into());
    let k = q.enqueue(&keyed).unwrap();
    keyed.after = vec![k];
    let e = q.enqueue(&keyed).unwrap_err().to_string();
    assert!(e.contains("cannot wait on itself"), "{e}");
    assert_eq!(q.stats(None).unwrap().total, 2);
}

/// A large batch without keys goes in by COPY (see `enqueue`): its tasks are held as an
/// INSERT's would be.
#[test]
fn a_large_batch_with_dependencies_is_held_until_they_complete() {
    let (_db, q) = pg_or_skip!();
    let a = q.enqueue(&NewTask::new("x", "1")).unwrap();
    let batch: Vec<NewTask> = (0..40)
        .map(|i| {
            if i % 2 == 0 {
                after(&[a])
            } else {
                NewTask::new("y", "2")
            }
        })
        .collect();
    let ids = q.enqueue_many(&batch).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let t = q.get(*id).unwrap();
        let held = i % 2 == 0;
        assert_eq!(t.run_after == HELD_UNTIL, held, "task {i}");
        assert_eq!(t.waiting_on, if held { vec![a] } else { vec![] });
    }
    let first = claim(&q, Strategy::Fifo, 100, 60_000);
    assert_eq!(first.len(), 21, "a and the twenty without dependencies");
    let ta = first.iter().find(|t| t.id == a).unwrap();
    q.complete(lease(ta), None).unwrap();
    let released = claim(&q, Strategy::Fifo, 100, 60_000);
    assert_eq!(released.len(), 20);
}
