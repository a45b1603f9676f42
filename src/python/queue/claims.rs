//! `Queue`'s claim side: claim, complete, fail, settle, renew, release, progress, the
//! workers' heartbeats and the sweep of expired leases.

use super::PyQueue;
use crate::model::lease::FailOutcome;
use crate::model::time::Least;
use crate::python::args::*;
use crate::python::convert::*;
use crate::python::errors::ToPy;
use crate::python::requests::*;
use crate::python::task::PyWorkerInfo;
use pyo3::prelude::*;
use pyo3::types::PyList;

/// What `lease_clock()` returns (see docs/architecture.md, "Leases, fencing and the rescuer").
#[derive(serde::Serialize)]
struct LeaseClockInfo {
    clock: &'static str,
    boot_id: String,
    boot_seq: Option<i64>,
}

#[pymethods]
impl PyQueue {
    #[pyo3(signature = (worker_id, *, strategy=None, queues=None, types=None, capabilities=None, lease=None, limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn claim<'py>(
        &self,
        py: Python<'py>,
        worker_id: &Bound<'py, PyAny>,
        strategy: Option<Bound<'py, PyAny>>,
        queues: Option<Bound<'py, PyAny>>,
        types: Option<Bound<'py, PyAny>>,
        capabilities: Option<Bound<'py, PyAny>>,
        lease: Option<Bound<'py, PyAny>>,
        limit: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let one = 1i64.into_pyobject(py)?.into_any();
        let limit = limit.filter(|l| !l.is_none()).unwrap_or(one);
        let req = claim_request(
            worker_id,
            strategy,
            queues,
            types,
            capabilities,
            lease,
            &limit,
        )?;
        let q = self.handle()?;
        let rows = py.detach(move || q.claim(&req)).py()?;
        tasks_to_py(py, rows)
    }

    #[pyo3(signature = (task, result=None))]
    fn complete(
        &self,
        py: Python<'_>,
        task: &Bound<PyAny>,
        result: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let (_, lease) = task_ref(task, "task")?;
        let result = result.map(|r| to_json(r, "result")).transpose()?;
        let q = self.handle()?;
        py.detach(move || q.complete(lease, result.as_deref())).py()
    }

    /// Items are Tasks or (Task, result) pairs. Returns, per item, whether it was completed
    /// (False: its lease was lost and nothing changed for it).
    fn complete_many(&self, py: Python<'_>, items: &Bound<PyAny>) -> PyResult<Vec<bool>> {
        let batch = completions(items)?;
        let q = self.handle()?;
        py.detach(move || q.complete_many(&batch)).py()
    }

    #[pyo3(signature = (task, error, *, retry=true, traceback=None))]
    fn fail(
        &self,
        py: Python<'_>,
        task: &Bound<PyAny>,
        error: &Bound<PyAny>,
        retry: bool,
        traceback: Option<&Bound<PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (_, lease) = task_ref(task, "task")?;
        let f = failure(lease, error, retry, traceback)?;
        let q = self.handle()?;
        let outcome = py.detach(move || q.fail_attempt(&f)).py()?;
        // The time of the next attempt, or None for the dead letter.
        match outcome {
            FailOutcome::Retrying { run_after } => Ok(Some(datetime(py, run_after)?)),
            FailOutcome::DeadLettered => Ok(None),
        }
    }

    /// Items are (Task, error) or (Task, error, retry). Returns, per item, whether it was recorded.
    fn fail_many(&self, py: Python<'_>, items: &Bound<PyAny>) -> PyResult<Vec<bool>> {
        let batch = failures(items)?;
        let q = self.handle()?;
        Ok(py
            .detach(move || q.fail_many(&batch))
            .py()?
            .into_iter()
            .map(|o| o.is_some())
            .collect())
    }

    /// A worker's whole exchange in one transaction: complete and fail finished tasks, then claim
    /// (when `worker_id` is given) with claim()'s options. Returns (completed flags, failed flags,
    /// claimed tasks); a False flag means that claim no longer held the task.
    #[pyo3(signature = (complete=None, fail=None, *, worker_id=None, strategy=None, queues=None, types=None,
                        capabilities=None, lease=None, limit=None))]
    #[allow(clippy::too_many_arguments)]
    fn settle<'py>(
        &self,
        py: Python<'py>,
        complete: Option<&Bound<'py, PyAny>>,
        fail: Option<&Bound<'py, PyAny>>,
        worker_id: Option<Bound<'py, PyAny>>,
        strategy: Option<Bound<'py, PyAny>>,
        queues: Option<Bound<'py, PyAny>>,
        types: Option<Bound<'py, PyAny>>,
        capabilities: Option<Bound<'py, PyAny>>,
        lease: Option<Bound<'py, PyAny>>,
        limit: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Vec<bool>, Vec<bool>, Bound<'py, PyList>)> {
        let one = 1i64.into_pyobject(py)?.into_any();
        let limit = limit.filter(|l| !l.is_none()).unwrap_or(one);
        let completes = match complete {
            Some(c) if !c.is_none() => completions(c)?,
            _ => Vec::new(),
        };
        let fails = match fail {
            Some(f) if !f.is_none() => failures(f)?,
            _ => Vec::new(),
        };
        let req = match worker_id.as_ref().filter(|w| !w.is_none()) {
            Some(w) => Some(claim_request(
                w,
                strategy,
                queues,
                types,
                capabilities,
                lease,
                &limit,
            )?),
            None => None,
        };
        let q = self.handle()?;
        let out = py
            .detach(move || q.settle(&completes, &fails, req.as_ref()))
            .py()?;
        Ok((
            out.completed,
            out.failed.into_iter().map(|o| o.is_some()).collect(),
            tasks_to_py(py, out.claimed)?,
        ))
    }

    /// Extend the lease; returns the new expiry (also visible as task.lease_until).
    #[pyo3(signature = (task, lease=None))]
    fn renew(
        &self,
        py: Python<'_>,
        task: &Bound<PyAny>,
        lease: Option<&Bound<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let (t, l) = task_ref(task, "task")?;
        let ms = match lease.filter(|v| !v.is_none()) {
            Some(v) => duration_arg(v, "lease", Least::Positive)?,
            None => 60_000,
        };
        let q = self.handle()?;
        let until = py.detach(move || q.renew(l, ms)).py()?;
        *t.get().lease_until.lock() = Some(until);
        datetime(py, until)
    }

    /// Hand the task back to the queue without counting the attempt (used on shutdown).
    fn release(&self, py: Python<'_>, task: &Bound<PyAny>) -> PyResult<bool> {
        let (_, l) = task_ref(task, "task")?;
        let q = self.handle()?;
        py.detach(move || q.release(l)).py()
    }

    #[pyo3(signature = (task, percent=None, *, step=None, message=None))]
    fn progress(
        &self,
        py: Python<'_>,
        task: &Bound<PyAny>,
        percent: Option<&Bound<PyAny>>,
        step: Option<&Bound<PyAny>>,
        message: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let (_, l) = task_ref(task, "task")?;
        let percent = opt_float(percent, "percent")?;
        let step = opt_text(step, "step")?;
        let message = opt_text(message, "message")?;
        let q = self.handle()?;
        py.detach(move || q.progress(l, percent, step.as_deref(), message.as_deref()))
            .py()
    }

    #[pyo3(signature = (worker_id, capabilities=None, *, queues=None, host=None, pid=None, tasks_done=None,
                        concurrency=None))]
    #[allow(clippy::too_many_arguments)]
    fn heartbeat(
        &self,
        py: Python<'_>,
        worker_id: &Bound<PyAny>,
        capabilities: Option<&Bound<PyAny>>,
        queues: Option<&Bound<PyAny>>,
        host: Option<&Bound<PyAny>>,
        pid: Option<&Bound<PyAny>>,
        tasks_done: Option<&Bound<PyAny>>,
        concurrency: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let hb = heartbeat_arg(
            py,
            worker_id,
            capabilities,
            queues,
            host,
            pid,
            tasks_done,
            concurrency,
        )?;
        let q = self.handle()?;
        py.detach(move || q.heartbeat(&hb)).py()
    }

    fn workers(&self, py: Python<'_>) -> PyResult<Vec<PyWorkerInfo>> {
        let q = self.handle()?;
        Ok(py
            .detach(move || q.workers())
            .py()?
            .into_iter()
            .map(|row| PyWorkerInfo { row })
            .collect())
    }

    fn remove_worker(&self, py: Python<'_>, worker_id: &Bound<PyAny>) -> PyResult<bool> {
        let worker_id = text_arg(worker_id, "worker_id")?;
        let q = self.handle()?;
        py.detach(move || q.remove_worker(&worker_id)).py()
    }

    /// Which clock this handle's leases end on: `{"clock": "monotonic" or "wall", "boot_id",
    /// "boot_seq"}` (None until a handle opened read-only writes; see docs/architecture.md).
    fn lease_clock<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (clock, boot_id, boot_seq) = self.handle()?.lease_clock();
        to_python(
            py,
            &LeaseClockInfo {
                clock,
                boot_id,
                boot_seq,
            },
        )
    }

    /// Expired leases back to queued (or to the dead letter when attempts are spent).
    fn sweep(&self, py: Python<'_>) -> PyResult<usize> {
        let q = self.handle()?;
        py.detach(move || q.sweep()).py()
    }
}
