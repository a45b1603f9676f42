//! Limits on PostgreSQL: concurrent limited claims on separate connections never exceed a
//! limit (they serialise on the limit's row), per-key claims step over full keys, and the
//! bucket is written back.

use super::util::pg_or_skip;
use super::{lease, task};
use crate::model::claim::ClaimRequest;
use crate::model::limits::LimitSpec;
use crate::model::new_task::NewTask;

fn claim_n(q: &crate::storage::postgres::PgDriver, n: usize) -> Vec<i64> {
    let mut req = ClaimRequest::new("w");
    req.limit = n;
    q.claim(&req).unwrap().iter().map(|t| t.id).collect()
}

#[test]
fn concurrent_limited_claims_never_exceed_the_limit() {
    let (db, q) = pg_or_skip!();
    let tasks: Vec<NewTask> = (0..200).map(|i| task(&format!("t{}", i % 3), 1)).collect();
    q.enqueue_many(&tasks).unwrap();
    q.limit_set(&LimitSpec::new("default", None, Some(7), None, None).unwrap())
        .unwrap();
    // Eight claimers on four pools take what they can at once and hold it: without the lock
    // on the limit's row, several would count the same free slots.
    let handles = [db.open(), db.open(), db.open(), db.open()];
    let got: usize = std::thread::scope(|s| {
        let ws: Vec<_> = (0..8)
            .map(|i| {
                let h = &handles[i % 4];
                s.spawn(move || (0..5).map(|_| claim_n(h, 3).len()).sum::<usize>())
            })
            .collect();
        ws.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(got, 7);
    assert_eq!(q.limit_list(None).unwrap()[0].running, 7);
}

#[test]
fn per_key_claims_step_over_full_keys_and_slots_free_on_complete() {
    let (_db, q) = pg_or_skip!();
    let mut tasks: Vec<NewTask> = (0..30)
        .map(|_| NewTask::new("t", r#"{"project": "a"}"#))
        .collect();
    tasks.push(NewTask::new("t", r#"{"project": "b"}"#));
    let ids = q.enqueue_many(&tasks).unwrap();
    q.limit_set(&LimitSpec::new("default", None, Some(1), Some("project"), None).unwrap())
        .unwrap();
    let mut req = ClaimRequest::new("w");
    let first = q.claim(&req).unwrap();
    let second = q.claim(&req).unwrap();
    assert_eq!((first[0].id, second[0].id), (ids[0], ids[30]));
    assert!(q.claim(&req).unwrap().is_empty());
    q.complete(lease(&first[0]), None).unwrap();
    req.limit = 10;
    assert_eq!(q.claim(&req).unwrap().len(), 1);
}

#[test]
fn a_rate_limit_spends_and_keeps_its_tokens() {
    let (_db, q) = pg_or_skip!();
    let tasks: Vec<NewTask> = (0..10).map(|_| task("t", 1)).collect();
    q.enqueue_many(&tasks).unwrap();
    q.limit_set(&LimitSpec::new("default", Some("t"), None, None, Some("4/h")).unwrap())
        .unwrap();
    assert_eq!(claim_n(&q, 3).len(), 3);
    assert_eq!(claim_n(&q, 3).len(), 1);
    assert!(claim_n(&q, 3).is_empty());
    let info = &q.limit_list(None).unwrap()[0];
    assert_eq!((info.running, info.waiting), (4, 6));
    assert!(info.tokens.unwrap() < 0.1, "{info:?}");
}
