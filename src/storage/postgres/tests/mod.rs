//! Tests of the PostgreSQL backend against a real server (see `util`): each test opens the
//! driver on a schema of its own, with the engine's rules.

mod acks;
mod changes;
mod claims;
mod copy;
mod dependencies;
mod errors;
mod faults;
mod limits;
mod listen;
mod observe;
mod open;
mod plans;
mod runs;
mod statements;
mod tls;
pub(crate) mod util;
mod weighted;

use crate::model::claim::ClaimRequest;
use crate::model::lease::Lease;
use crate::model::new_task::NewTask;
use crate::model::strategy::Strategy;
use crate::model::task::TaskRow;
use crate::storage::postgres::PgDriver;

fn task(t: &str, priority: i64) -> NewTask {
    let mut task = NewTask::new(t, "null");
    task.priority = priority;
    task
}

fn claim(q: &PgDriver, s: Strategy, n: usize, lease_ms: i64) -> Vec<TaskRow> {
    let mut req = ClaimRequest::new("w1");
    req.strategy = s;
    req.limit = n;
    req.lease_ms = lease_ms;
    q.claim(&req).unwrap()
}

fn ids(rows: &[TaskRow]) -> Vec<i64> {
    rows.iter().map(|t| t.id).collect()
}

fn lease(t: &TaskRow) -> Lease {
    Lease {
        task_id: t.id,
        token: t.lease_token.expect("a claimed task has a token"),
    }
}
