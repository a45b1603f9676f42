//! Read-only Python views of a task, a worker and a log line.

use super::convert::{datetime, from_json, opt_datetime};
use super::errors::database_error;
use crate::model::attempt::AttemptRow;
use crate::model::error::DbErrorKind;
use crate::model::observe::LogRow;
use crate::model::observe::WorkerRow;
use crate::model::task::TaskRow;
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

    /// Stored JSON text as Python objects, or `DatabaseError` (kind "corrupt") naming the task
    /// and the field when the row is damaged (never a bare JSONDecodeError).
    fn parse(&self, py: Python<'_>, field: &str, text: &str) -> PyResult<Py<PyAny>> {
        from_json(py, text).map_err(|e| {
            database_error(
                DbErrorKind::Corrupt,
                format!(
                    "task {}: its stored {field} is not valid JSON ({}): the row is damaged; its other fields \
                     still read (Task.damaged lists what cannot), and integrity_check tells whether the file is \
                     damaged too: restore the task from a backup, or cancel and re-enqueue it",
                    self.row.id,
                    e.value(py)
                ),
            )
        })
    }

    pub fn lease(&self) -> Option<crate::model::lease::Lease> {
        self.row
            .lease_token
            .map(|token| crate::model::lease::Lease {
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
    /// Raises `DatabaseError` (kind "corrupt") naming the task when the stored JSON is damaged.
    #[getter]
    fn payload(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(self
            .payload
            .get_or_try_init(py, || self.parse(py, "payload", &self.row.payload))?
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
    /// The tasks it was enqueued after (`get` only: a listing's or claim's Task shows []).
    #[getter]
    fn after(&self) -> Vec<i64> {
        self.row.after.clone()
    }
    /// Those of `after` it is still held on: neither completed nor failed/cancelled yet.
    #[getter]
    fn waiting_on(&self) -> Vec<i64> {
        self.row.waiting_on.clone()
    }
    #[getter]
    fn error(&self) -> Option<&str> {
        self.row.error.as_deref()
    }
    /// The traceback of the last failed attempt (see `Queue.attempts`); read by `get` and
    /// `find`, None in the snapshots of `list` and `claim`.
    #[getter]
    fn traceback(&self) -> Option<&str> {
        self.row.traceback.as_deref()
    }
    #[getter]
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.row.result {
            None => Ok(None),
            Some(text) => Ok(Some(
                self.result
                    .get_or_try_init(py, || self.parse(py, "result", text))?
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
            .map(|t| self.parse(py, "requires", t))
            .transpose()
    }

    /// What this task's row holds that could not be read as stored (a damaged row), one
    /// `"field: why"` line each; empty for every row the queue wrote itself. A time outside the
    /// years 1..9999 reads as the nearest of `datetime.min` and `datetime.max`; a JSON field
    /// that is not valid JSON raises `DatabaseError` (kind "corrupt") when read, and is None in
    /// `as_dict()`.
    #[getter]
    fn damaged(&self, py: Python<'_>) -> Vec<String> {
        let mut out = self.row.damaged.clone();
        for (field, ok) in [
            ("payload", self.payload(py).is_ok()),
            ("result", self.result(py).is_ok()),
            ("requires", self.requires(py).is_ok()),
        ] {
            if !ok {
                out.push(format!("{field}: stored text is not valid JSON"));
            }
        }
        out
    }
    /// Seconds an attempt may run, or None.
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.row.timeout_ms.map(|ms| ms as f64 / 1000.0)
    }

    /// Every field as a dict (datetimes stay datetimes). Never raises for a damaged row: a JSON
    /// field that cannot be read is None, and the key "damaged" (present only then) lists what
    /// could not be read as stored.
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let d = PyDict::new(py);
        let this = slf.get();
        let damaged = this.damaged(py);
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
            "traceback",
            "result",
            "progress",
            "step",
            "message",
            "idempotency_key",
            "requires",
            "timeout",
        ] {
            match name {
                "payload" | "result" | "requires" if !damaged.is_empty() => {
                    d.set_item(name, slf.getattr(name).ok())?;
                }
                _ => d.set_item(name, slf.getattr(name)?)?,
            }
        }
        if !damaged.is_empty() {
            d.set_item("damaged", damaged)?;
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

/// Stored JSON of a worker row or a log line; None when the row is damaged (these fields only
/// inform, and the listings that show them must not fail for one bad row).
fn parse_stored(py: Python<'_>, text: &str) -> Py<PyAny> {
    from_json(py, text).unwrap_or_else(|_| py.None())
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
        Ok(self
            .row
            .capabilities
            .as_deref()
            .map(|t| parse_stored(py, t)))
    }
    #[getter]
    fn queues(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        Ok(self.row.queues.as_deref().map(|t| parse_stored(py, t)))
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
        crate::model::time::now_ms()
            .saturating_sub(self.row.last_heartbeat)
            .max(0) as f64
            / 1000.0
    }
    #[getter]
    fn tasks_done(&self) -> i64 {
        self.row.tasks_done
    }
    #[getter]
    fn stale(&self) -> bool {
        self.row.stale
    }
    /// How many tasks it runs at once, as its last heartbeat said (None: not said).
    #[getter]
    fn concurrency(&self) -> Option<i64> {
        self.row.concurrency
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
        Ok(self.row.details.as_deref().map(|t| parse_stored(py, t)))
    }
    fn __repr__(&self) -> String {
        format!(
            "TaskLog(task_id={}, level={:?}, message={:?})",
            self.row.task_id, self.row.level, self.row.message
        )
    }
}

#[pyclass(name = "TaskAttempt", module = "prismq_queue", frozen)]
pub struct PyTaskAttempt {
    pub row: AttemptRow,
}

#[pymethods]
impl PyTaskAttempt {
    #[getter]
    fn task_id(&self) -> i64 {
        self.row.task_id
    }
    #[getter]
    fn seq(&self) -> i64 {
        self.row.seq
    }
    #[getter]
    fn number(&self) -> i64 {
        self.row.number
    }
    #[getter]
    fn max_attempts(&self) -> i64 {
        self.row.max_attempts
    }
    #[getter]
    fn worker(&self) -> Option<&str> {
        self.row.worker.as_deref()
    }
    #[getter]
    fn started_at(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        opt_datetime(py, self.row.started_at)
    }
    #[getter]
    fn finished_at(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        datetime(py, self.row.finished_at)
    }
    #[getter]
    fn outcome(&self) -> &str {
        &self.row.outcome
    }
    #[getter]
    fn error(&self) -> &str {
        &self.row.error
    }
    #[getter]
    fn traceback(&self) -> Option<&str> {
        self.row.traceback.as_deref()
    }
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(slf.py());
        for name in [
            "task_id",
            "seq",
            "number",
            "max_attempts",
            "worker",
            "started_at",
            "finished_at",
            "outcome",
            "error",
            "traceback",
        ] {
            d.set_item(name, slf.getattr(name)?)?;
        }
        Ok(d)
    }
    fn __repr__(&self) -> String {
        format!(
            "TaskAttempt(task_id={}, seq={}, number={}/{}, outcome={:?}, error={:?})",
            self.row.task_id,
            self.row.seq,
            self.row.number,
            self.row.max_attempts,
            self.row.outcome,
            self.row.error.lines().next().unwrap_or("")
        )
    }
}
