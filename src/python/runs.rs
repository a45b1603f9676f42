//! The binding of `crate::storage::sqlite::runs` (run registry storage, in-process run rows, recovery). The
//! `#[pymethods]` of `Queue` in `queue/runs.rs` forward here; argument checks and conversions only.

use super::args::to_python;
use super::convert::{duration_arg, instant_ms, int_in, opt_text, str_arg, text_arg, to_json};
use super::errors::{invalid, ToPy};
use super::task::PyTask;
use crate::engine::queue::Queue;
use crate::model::runs::{RecoverRuns, RunFilter, RunQuery, RunRecord, StartRun};
use crate::model::time::Least;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use std::sync::Arc;

fn strings(obj: Option<&Bound<PyAny>>, what: &str) -> PyResult<Vec<String>> {
    match obj.filter(|o| !o.is_none()) {
        None => Ok(Vec::new()),
        Some(o) if o.is_instance_of::<PyString>() => Ok(vec![str_arg(o, what)?]),
        Some(o) => o
            .try_iter()
            .map_err(|_| invalid(format!("{what} must be a list of strings")))?
            .map(|item| str_arg(&item?, what))
            .collect(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn save_run(
    py: Python<'_>,
    q: Arc<Queue>,
    run_id: &Bound<PyAny>,
    module_id: &Bound<PyAny>,
    status: &Bound<PyAny>,
    created_at: &Bound<PyAny>,
    data: &Bound<PyAny>,
    completed_at: Option<&Bound<PyAny>>,
) -> PyResult<()> {
    let data = if data.is_instance_of::<PyString>() {
        data.extract::<String>()?
    } else {
        to_json(data, "data")?
    };
    let run = RunRecord {
        run_id: str_arg(run_id, "run_id")?,
        module_id: text_arg(module_id.str()?.as_any(), "module_id")?,
        status: str_arg(&status.str()?.into_any(), "status")?,
        created_at: instant_ms(created_at, "created_at")?,
        completed_at: completed_at
            .filter(|c| !c.is_none())
            .map(|c| instant_ms(c, "completed_at"))
            .transpose()?,
        data,
    };
    py.detach(move || q.save_run(&run)).py()
}

pub fn load_run(py: Python<'_>, q: Arc<Queue>, run_id: String) -> PyResult<Option<String>> {
    py.detach(move || q.load_run(&run_id)).py()
}

pub fn list_runs(
    py: Python<'_>,
    q: Arc<Queue>,
    status: Option<String>,
    module_id: Option<String>,
    active: bool,
    newest_first: bool,
    limit: Option<i64>,
) -> PyResult<Vec<String>> {
    let filter = match (status, module_id, active) {
        (None, None, false) => RunFilter::All,
        (None, None, true) => RunFilter::Active,
        (Some(s), None, false) => RunFilter::Status(s),
        (None, Some(m), false) => RunFilter::Module(m),
        _ => {
            return Err(invalid(
                "give at most one of status, module_id and active=True",
            ))
        }
    };
    let query = RunQuery {
        filter,
        newest_first,
        limit,
    };
    py.detach(move || q.list_runs(&query)).py()
}

pub fn delete_run(py: Python<'_>, q: Arc<Queue>, run_id: String) -> PyResult<bool> {
    py.detach(move || q.delete_run(&run_id)).py()
}

pub fn purge_runs(
    py: Python<'_>,
    q: Arc<Queue>,
    completed_before: &Bound<PyAny>,
) -> PyResult<usize> {
    let before = instant_ms(completed_before, "completed_before")?;
    py.detach(move || q.purge_runs(before)).py()
}

#[allow(clippy::too_many_arguments)]
pub fn start_run(
    py: Python<'_>,
    q: Arc<Queue>,
    run_id: &Bound<PyAny>,
    task_type: &Bound<PyAny>,
    payload: Option<&Bound<PyAny>>,
    worker_id: &Bound<PyAny>,
    queue: Option<&Bound<PyAny>>,
    lease: Option<&Bound<PyAny>>,
    rerun_attempts: Option<&Bound<PyAny>>,
    takeover_from: Option<&Bound<PyAny>>,
) -> PyResult<PyTask> {
    let queue =
        opt_text(queue, "queue")?.unwrap_or_else(|| crate::model::runs::DEFAULT_RUNS_QUEUE.into());
    let rerun_attempts = match rerun_attempts.filter(|r| !r.is_none()) {
        Some(r) => int_in(
            r,
            "rerun_attempts",
            0,
            crate::model::new_task::MAX_ATTEMPTS - 1,
        )?,
        None => 3,
    };
    let s = StartRun {
        run_id: str_arg(run_id, "run_id")?,
        task_type: str_arg(task_type, "type")?,
        payload: match payload {
            Some(p) => to_json(p, "payload")?,
            None => "null".into(),
        },
        queue,
        worker_id: str_arg(worker_id, "worker_id")?,
        lease_ms: match lease.filter(|l| !l.is_none()) {
            Some(l) => duration_arg(l, "lease", Least::Positive)?,
            None => 60_000,
        },
        rerun_attempts,
        takeover_from: strings(takeover_from, "takeover_from")?,
    };
    Ok(PyTask::new(py.detach(move || q.start_run(&s)).py()?))
}

pub fn recover_runs<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    queue: Option<&Bound<PyAny>>,
    rerun_types: Option<&Bound<PyAny>>,
    rerun_queue: Option<&Bound<PyAny>>,
    dead_holders: Option<&Bound<PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let r = RecoverRuns {
        queue: opt_text(queue, "queue")?
            .unwrap_or_else(|| crate::model::runs::DEFAULT_RUNS_QUEUE.into()),
        dead_holders: strings(dead_holders, "dead_holders")?,
        rerun_types: strings(rerun_types, "rerun_types")?,
        rerun_queue: opt_text(rerun_queue, "rerun_queue")?.unwrap_or_else(|| "default".into()),
    };
    let out = py.detach(move || q.recover_runs(&r)).py()?;
    Ok(to_python(py, &out)?.cast_into::<PyList>()?)
}
