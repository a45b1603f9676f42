//! The binding of `crate::runs` (run registry storage, in-process run rows, recovery). The
//! `#[pymethods]` of `Queue` in `queue.rs` forward here; argument checks and conversions only.

use super::convert::{instant_ms, seconds_ms, str_arg, to_json};
use super::errors::{invalid, ToPy};
use super::task::PyTask;
use crate::queue::Queue;
use crate::runs::{RecoverRuns, RunFilter, RunQuery, RunRecord, StartRun};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
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
        module_id: module_id.str()?.to_string(),
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
    queue: &str,
    lease: Option<&Bound<PyAny>>,
    rerun_attempts: i64,
    takeover_from: Option<&Bound<PyAny>>,
) -> PyResult<PyTask> {
    let s = StartRun {
        run_id: str_arg(run_id, "run_id")?,
        task_type: str_arg(task_type, "type")?,
        payload: match payload {
            Some(p) => to_json(p, "payload")?,
            None => "null".into(),
        },
        queue: queue.to_string(),
        worker_id: str_arg(worker_id, "worker_id")?,
        lease_ms: match lease.filter(|l| !l.is_none()) {
            Some(l) => seconds_ms(l, "lease")?,
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
    queue: &str,
    rerun_types: Option<&Bound<PyAny>>,
    rerun_queue: &str,
    dead_holders: Option<&Bound<PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let r = RecoverRuns {
        queue: queue.to_string(),
        dead_holders: strings(dead_holders, "dead_holders")?,
        rerun_types: strings(rerun_types, "rerun_types")?,
        rerun_queue: rerun_queue.to_string(),
    };
    let out = py.detach(move || q.recover_runs(&r)).py()?;
    let list = PyList::empty(py);
    for o in out {
        let d = PyDict::new(py);
        d.set_item("task_id", o.task_id)?;
        d.set_item("run_id", o.run_id)?;
        d.set_item("type", o.task_type)?;
        d.set_item("holder", o.holder)?;
        d.set_item("requeued", o.requeued)?;
        d.set_item("error", o.error)?;
        list.append(d)?;
    }
    Ok(list)
}
