//! Task dependencies (`enqueue(..., after=[...])`): the checks on a task's list and the words of
//! a dependent cancelled because what it waited on will never complete.
//!
//! A held task stays `queued` with its due time at `HELD_UNTIL`, so no claim path, claim index
//! or count of due tasks needs to know about holds; the backend's `task_holds` row keeps how
//! many dependencies it still waits on and its own due time, restored when the last completes.

pub use crate::model::after::{check_after, OnFailure, MAX_AFTER};
use crate::model::error::{Error, Result};
use crate::model::new_task::NewTask;
use crate::model::time::MAX_TIME_MS;

/// The due time of a held task: later than any claim's `now`.
pub const HELD_UNTIL: i64 = MAX_TIME_MS;

/// How a task ended for good, as its dependents learn it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Completed,
    /// Dead-lettered, with its error.
    Failed(String),
    /// Cancelled; `Some(reason)` when a dependency of its own cancelled it.
    Cancelled(Option<String>),
}

impl Ending {
    /// The ending of a task whose row says `status` and `error` (for one already terminal when
    /// a dependent is enqueued); `None` while it may still complete.
    pub fn of_row(status: &str, error: Option<String>) -> Option<Ending> {
        match status {
            "completed" => Some(Ending::Completed),
            "failed" => Some(Ending::Failed(error.unwrap_or_default())),
            "cancelled" => Some(Ending::Cancelled(error)),
            _ => None,
        }
    }

    /// The error a dependent cancelled by this ending of task `dep` keeps.
    pub fn reason(&self, dep: i64) -> String {
        let reason = match self {
            Ending::Completed => return format!("dependency {dep} completed"),
            Ending::Failed(e) => format!("dependency {dep} failed: {}", first_line(e)),
            Ending::Cancelled(None) => format!("dependency {dep} was cancelled"),
            Ending::Cancelled(Some(why)) => format!("dependency {dep} was cancelled: {why}"),
        };
        // A long chain nests every reason: keep the start, which names the nearest dependency.
        truncate(reason, 1000)
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The refusal of a dependency on a task that does not exist.
pub fn unknown(dep: i64) -> Error {
    Error::invalid(format!(
        "after lists task {dep}, which does not exist (never enqueued, or purged): nothing was \
         enqueued"
    ))
}

/// The refusal of a task that would wait on itself (an idempotency key naming a task whose own
/// `after` lists it).
pub fn itself(id: i64) -> Error {
    Error::invalid(format!(
        "task {id} cannot wait on itself (after lists the task its idempotency key names): \
         nothing was enqueued"
    ))
}

/// What `hold_new` asks of a backend, inside the enqueue's transaction.
pub trait HoldStore {
    /// The status and error of task `dep` (locked as the backend's races need), or `None` when
    /// it does not exist.
    fn dependency(&mut self, dep: i64) -> Result<Option<(String, Option<String>)>>;
    /// Record that task `id` was enqueued after task `dep`.
    fn add_edge(&mut self, id: i64, dep: i64) -> Result<()>;
    /// Cancel the just enqueued task `id` with `reason` (a dependency will never complete).
    fn cancel(&mut self, id: i64, reason: &str) -> Result<()>;
    /// Hold task `id` until `waiting` dependencies end (`run_anyway`: however they end).
    fn hold(&mut self, id: i64, waiting: i64, run_anyway: bool) -> Result<()>;
}

/// Write the dependencies of the tasks just inserted as `ids` (`fresh[i]`: task i was inserted,
/// not found by its idempotency key). A dependency already completed is met; one failed or
/// cancelled cancels the new task (unless it runs anyway); an unknown one, or one enqueued
/// after the task itself, refuses the whole batch (the caller's transaction rolls back). Tasks
/// go in order, each written before the next is read: a later task of the batch may wait on an
/// earlier one, and must see it cancelled.
pub fn hold_new(
    store: &mut impl HoldStore,
    tasks: &[NewTask],
    ids: &[i64],
    fresh: &[bool],
) -> Result<()> {
    for (i, t) in tasks.iter().enumerate() {
        if t.after.is_empty() {
            continue;
        }
        let id = ids[i];
        if t.after.contains(&id) {
            return Err(itself(id));
        }
        if !fresh[i] {
            continue; // the existing task keeps what it waits on
        }
        let run_anyway = t.on_dependency_failure == OnFailure::Run;
        let mut waiting: i64 = 0;
        let mut doomed: Option<String> = None;
        for &dep in &t.after {
            let (status, error) = store.dependency(dep)?.ok_or_else(|| unknown(dep))?;
            if dep > id {
                return Err(Error::invalid(format!(
                    "after lists task {dep}, enqueued after task {id} itself: a task can wait \
                     only on tasks enqueued before it"
                )));
            }
            store.add_edge(id, dep)?;
            match Ending::of_row(&status, error) {
                None => waiting += 1,
                Some(Ending::Completed) => {}
                Some(_) if run_anyway => {}
                Some(ending) => {
                    doomed.get_or_insert_with(|| ending.reason(dep));
                }
            }
        }
        if let Some(reason) = doomed {
            store.cancel(id, &reason)?;
        } else if waiting > 0 {
            store.hold(id, waiting, run_anyway)?;
        }
    }
    Ok(())
}

/// What a task waits on, as `get` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waits {
    /// Every task it was enqueued after, in id order.
    pub after: Vec<i64>,
    /// Those it still waits on (empty once released, cancelled or never held).
    pub waiting_on: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lists_are_refused_with_what_to_fix() {
        assert!(check_after(&[1, 2, 3]).is_ok());
        let e = check_after(&[1, 2, 1]).unwrap_err().to_string();
        assert!(e.contains("task 1 twice"), "{e}");
        let e = check_after(&[0]).unwrap_err().to_string();
        assert!(e.contains("positive"), "{e}");
        let many: Vec<i64> = (1..=MAX_AFTER as i64 + 1).collect();
        assert!(check_after(&many).is_err());
        assert!(OnFailure::parse("sometimes").is_err());
        assert_eq!(OnFailure::parse("run").unwrap(), OnFailure::Run);
    }

    #[test]
    fn a_reason_names_the_dependency_and_its_error() {
        let failed = Ending::Failed("boom\nTraceback ...".into());
        assert_eq!(failed.reason(12), "dependency 12 failed: boom");
        let chained = Ending::Cancelled(Some(failed.reason(12)));
        assert_eq!(
            chained.reason(13),
            "dependency 13 was cancelled: dependency 12 failed: boom"
        );
        assert_eq!(
            Ending::Cancelled(None).reason(4),
            "dependency 4 was cancelled"
        );
        let long = Ending::Failed("é".repeat(2000)).reason(1);
        assert!(long.len() <= 1003 && long.ends_with("..."));
        assert_eq!(
            Ending::of_row("failed", Some("x".into())),
            Some(Ending::Failed("x".into()))
        );
        assert_eq!(Ending::of_row("running", None), None);
    }
}
