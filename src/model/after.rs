//! What a new task says about its dependencies (`enqueue(..., after=[...])`): the list and what
//! to do when one fails, checked before anything is written. Apart from `model::dependencies`,
//! which decides holds over `NewTask`s, so `new_task` and it do not import each other.

use crate::model::error::{Error, Result};

/// The most dependencies one task may list.
pub const MAX_AFTER: usize = 1000;

/// What a task does when a dependency ends without completing (failed for good or cancelled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Cancelled, with the reason in its error; its own dependents follow.
    #[default]
    Cancel,
    /// Counts the dependency as met and runs once the others are.
    Run,
}

impl OnFailure {
    pub fn parse(s: &str) -> Result<OnFailure> {
        match s {
            "cancel" => Ok(OnFailure::Cancel),
            "run" => Ok(OnFailure::Run),
            _ => Err(Error::invalid(format!(
                "on_dependency_failure must be \"cancel\" or \"run\", got {s:?}"
            ))),
        }
    }
}

/// `after` as given: positive ids, no duplicates, at most `MAX_AFTER`.
pub fn check_after(after: &[i64]) -> Result<()> {
    if after.len() > MAX_AFTER {
        return Err(Error::invalid(format!(
            "after lists {} tasks, above the limit of {MAX_AFTER}: make a task that waits on \
             groups of them instead",
            after.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for &id in after {
        if id < 1 {
            return Err(Error::invalid(format!(
                "after must list task ids (positive integers), got {id}"
            )));
        }
        if !seen.insert(id) {
            return Err(Error::invalid(format!(
                "after lists task {id} twice: list each dependency once"
            )));
        }
    }
    Ok(())
}
