//! Fencing: an acknowledgement counts only from the claim that holds the task. A backend
//! reports what the row says when its fenced update matched nothing (`Error::NotHeld`); the
//! engine says why, and what the caller should do, once for every backend.

use crate::model::error::Error;

/// The error a caller sees for a fenced operation the backend refused: `NotHeld` becomes a
/// `LeaseLost` that explains it; every other error passes as it is.
pub fn explain(e: Error) -> Error {
    let Error::NotHeld {
        task_id,
        status,
        holder,
    } = e
    else {
        return e;
    };
    // Only a task taken over by another claim has a holder to name.
    let (why, then) = match (status.as_str(), holder) {
        ("running", Some(by)) => {
            let by = if by.is_empty() {
                "another worker".to_string()
            } else {
                by
            };
            (
                format!("its lease expired and it was claimed again by {by}"),
                format!("nothing was changed: {by} holds the task now"),
            )
        }
        ("queued", _) => (
            "its lease expired and it went back to the queue".to_string(),
            "nothing was changed: the task will run again".to_string(),
        ),
        ("completed", _) => (
            "it is already completed".to_string(),
            "the result recorded then stands, and nothing was changed".to_string(),
        ),
        ("cancelled", _) => (
            "it was cancelled".to_string(),
            "nothing was changed".to_string(),
        ),
        ("failed", _) => (
            "it already failed (dead letter)".to_string(),
            "nothing was changed (retry() would queue it again)".to_string(),
        ),
        (other, _) => (format!("it is {other}"), "nothing was changed".to_string()),
    };
    Error::LeaseLost(format!(
        "task {task_id} is no longer held by this claim: {why}; {then}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_held(status: &str, holder: Option<&str>) -> String {
        let e = explain(Error::NotHeld {
            task_id: 3,
            status: status.into(),
            holder: holder.map(str::to_string),
        });
        assert!(matches!(e, Error::LeaseLost(_)), "{e:?}");
        e.to_string()
    }

    #[test]
    fn a_task_taken_over_names_its_new_holder() {
        assert_eq!(
            not_held("running", Some("w2")),
            "task 3 is no longer held by this claim: its lease expired and it was claimed again by w2; \
             nothing was changed: w2 holds the task now"
        );
        assert!(not_held("running", Some("")).contains("claimed again by another worker"));
    }

    #[test]
    fn every_other_state_says_what_happened_and_that_nothing_changed() {
        for (status, why) in [
            ("queued", "went back to the queue"),
            ("completed", "already completed"),
            ("cancelled", "it was cancelled"),
            ("failed", "already failed (dead letter)"),
            ("paused", "it is paused"),
        ] {
            let text = not_held(status, None);
            assert!(
                text.contains(why) && text.contains("nothing was changed"),
                "{text}"
            );
        }
    }

    #[test]
    fn other_errors_pass_unchanged() {
        assert!(matches!(
            explain(Error::TaskNotFound(9)),
            Error::TaskNotFound(9)
        ));
    }
}
