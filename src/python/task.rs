//! Read-only Python views of a task, a worker and a log line.

use super::convert::{datetime, from_json, opt_datetime};
use crate::logs::LogRow;
use crate::task::TaskRow;
use crate::workers::WorkerRow;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

#[pyclass(name = "Task", module = "prismq_queue", frozen)]
pub struct PyTask {
    pub row: TaskRow,
    /// Renewed leases move the expiry; everything else is a snapshot.
    pub lease_until: Mutex<Option<i64>>,
    payload: PyOnceLock<Py<PyAny>>,
    result: PyOnceLock<Py<PyAny>>,
}

impl PyTask {
    pub fn new(row: TaskRow) -> PyTask {
        PyTask {
            lease_until: Mutex::new(row.lease_until),
            row,
            payload: PyOnceLock::new(),
            result: PyOnceLock::new(),
        }
    }

    /// A task read with `get`, `find` or `list`: the lease token stays with the claim that holds
    /// it, so a reader can never complete, fail or renew a task it did not claim.
    pub fn snapshot(mut row: TaskRow) -> PyTask {
        row.lease_token = None;
        PyTask::new(row)
    }

    pub fn lease(&self) -> Option<crate::ack::Lease> {
        self.row.lease_token.map(|token| crate::ack::Lease {
            task_id: self.row.id,
            token,
        })
    }
}

#[pymethods]
impl PyTask {
    #[getter]
    fn id(&self) -> i64 {
        self.row.id
    }
    #[getter]
    fn r#type(&self) -> &str {
        &self.row.task_type
    }
    #[getter]
    fn queue(&self) -> &str {
        &self.row.queue
    }
    #[getter]
    fn payload(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .payload
            .get_or_try_init(py, || from_json(py, &self.row.payload))?
            .clone_ref(py))
    }
    #[getter]
    fn priority(&self) -> i64 {
        self.row.priority
    }
    #[getter]
    fn status(&self) -> &'static str {
        self.row.status.as_str()
    }
    #[getter]
    fn attempts(&self) -> i64 {
        self.row.attempts
    }
    #[getter]
    fn max_attempts(&self) -> i64 {
        self.row.max_attempts
    }
    #[getter]
    fn run_after(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.run_after)
    }
    #[getter]
    fn created_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.created_at)
    }
    #[getter]
    fn started_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.row.started_at)
    }
    #[getter]
    fn finished_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.row.finished_at)
    }
    #[getter]
    fn updated_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.updated_at)
    }
    #[getter]
    fn locked_by(&self) -> Option<&str> {
        self.row.locked_by.as_deref()
    }
    #[getter]
    fn lease_until(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, *self.lease_until.lock())
    }
    #[getter]
    fn lease_token(&self) -> Option<i64> {
        self.row.lease_token
    }
    #[getter]
    fn error(&self) -> Option<&str> {
        self.row.error.as_deref()
    }
    #[getter]
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.row.result {
            None => Ok(None),
            Some(text) => Ok(Some(
                self.result
                    .get_or_try_init(py, || from_json(py, text))?
                    .clone_ref(py),
            )),
        }
    }
    #[getter]
    fn progress(&self) -> Option<f64> {
        self.row.progress
    }
    #[getter]
    fn step(&self) -> Option<&str> {
        self.row.step.as_deref()
    }
    #[getter]
    fn message(&self) -> Option<&str> {
        self.row.message.as_deref()
    }
    #[getter]
    fn idempotency_key(&self) -> Option<&str> {
        self.row.idempotency_key.as_deref()
    }
    #[getter]
    fn requires(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.row
            .requires
            .as_deref()
            .map(|t| from_json(py, t))
            .transpose()
    }
    /// Seconds an attempt may run, or None.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.row.timeout_ms.map(|ms| ms as f64 / 1000.0)
    }

    /// Every field as a dict (datetimes stay datetimes).
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let d = PyDict::new(py);
        for name in [
            "id",
            "type",
            "queue",
            "payload",
            "priority",
            "status",
            "attempts",
            "max_attempts",
            "run_after",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
            "locked_by",
            "lease_until",
            "error",
            "result",
            "progress",
            "step",
            "message",
            "idempotency_key",
            "requires",
            "timeout",
        ] {
            d.set_item(name, slf.getattr(name)?)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Task(id={}, type={:?}, queue={:?}, status={:?}, priority={}, attempts={}/{})",
            self.row.id,
            self.row.task_type,
            self.row.queue,
            self.row.status.as_str(),
            self.row.priority,
            self.row.attempts,
            self.row.max_attempts
        )
    }
}

#[pyclass(name = "WorkerInfo", module = "prismq_queue", frozen)]
pub struct PyWorkerInfo {
    pub row: WorkerRow,
}

#[pymethods]
impl PyWorkerInfo {
    #[getter]
    fn id(&self) -> &str {
        &self.row.id
    }
    #[getter]
    fn host(&self) -> Option<&str> {
        self.row.host.as_deref()
    }
    #[getter]
    fn pid(&self) -> Option<i64> {
        self.row.pid
    }
    #[getter]
    fn capabilities(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.row
            .capabilities
            .as_deref()
            .map(|t| from_json(py, t))
            .transpose()
    }
    #[getter]
    fn queues(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.row
            .queues
            .as_deref()
            .map(|t| from_json(py, t))
            .transpose()
    }
    #[getter]
    fn started_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.started_at)
    }
    #[getter]
    fn last_heartbeat(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.last_heartbeat)
    }
    #[getter]
    fn heartbeat_age(&self) -> f64 {
        (crate::time::now_ms() - self.row.last_heartbeat).max(0) as f64 / 1000.0
    }
    #[getter]
    fn tasks_done(&self) -> i64 {
        self.row.tasks_done
    }
    #[getter]
    fn stale(&self) -> bool {
        self.row.stale
    }
    fn __repr__(&self) -> String {
        format!(
            "WorkerInfo(id={:?}, host={:?}, pid={:?}, stale={})",
            self.row.id, self.row.host, self.row.pid, self.row.stale
        )
    }
}

#[pyclass(name = "TaskLog", module = "prismq_queue", frozen)]
pub struct PyTaskLog {
    pub row: LogRow,
}

#[pymethods]
impl PyTaskLog {
    #[getter]
    fn id(&self) -> i64 {
        self.row.id
    }
    #[getter]
    fn task_id(&self) -> i64 {
        self.row.task_id
    }
    #[getter]
    fn at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.at)
    }
    #[getter]
    fn level(&self) -> &str {
        &self.row.level
    }
    #[getter]
    fn message(&self) -> &str {
        &self.row.message
    }
    #[getter]
    fn details(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.row
            .details
            .as_deref()
            .map(|t| from_json(py, t))
            .transpose()
    }
    fn __repr__(&self) -> String {
        format!(
            "TaskLog(task_id={}, level={:?}, message={:?})",
            self.row.task_id, self.row.level, self.row.message
        )
    }
}
