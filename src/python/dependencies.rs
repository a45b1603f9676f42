//! The dependency arguments of `enqueue` and `enqueue_many` (`after=`, `on_dependency_failure=`).

use super::convert::{int_arg, str_arg};
use super::errors::{invalid, ToPy};
use super::task::PyTask;
use crate::model::dependencies::OnFailure;
use crate::model::new_task::NewTask;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Set `t.after` from an iterable of task ids or `Task`s, and its failure policy.
pub(super) fn set_after(
    t: &mut NewTask,
    after: Option<&Bound<PyAny>>,
    on_failure: Option<&Bound<PyAny>>,
) -> PyResult<()> {
    if let Some(after) = after {
        let refuse = || invalid("after must be a list of task ids (ints) or Tasks");
        if after.is_instance_of::<PyString>() {
            return Err(refuse());
        }
        for item in after.try_iter().map_err(|_| refuse())? {
            let item = item?;
            t.after.push(match item.cast::<PyTask>() {
                Ok(task) => task.get().row.id,
                Err(_) => int_arg(&item, "each item of after")?,
            });
        }
    }
    if let Some(p) = on_failure {
        t.on_dependency_failure = OnFailure::parse(&str_arg(p, "on_dependency_failure")?).py()?;
    }
    Ok(())
}
