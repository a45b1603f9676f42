//! `Queue`'s task methods: enqueue, look up, list, change and log tasks.

use super::PyQueue;
use crate::model::retry::RetryOverrides;
use crate::python::args::*;
use crate::python::convert::*;
use crate::python::errors::ToPy;
use crate::python::requests::*;
use crate::python::task::{PyTask, PyTaskAttempt, PyTaskLog};
use pyo3::prelude::*;
use pyo3::types::PyList;

#[pymethods]
impl PyQueue {
    #[pyo3(signature = (r#type, payload=None, *, queue=None, priority=None, delay=None, run_after=None,
                        max_attempts=None, idempotency_key=None, requires=None, timeout=None, retry=None,
                        after=None, on_dependency_failure=None))]
    #[allow(clippy::too_many_arguments)]
    fn enqueue<'py>(
        &self,
        py: Python<'py>,
        r#type: &Bound<'py, PyAny>,
        payload: Option<&Bound<'py, PyAny>>,
        queue: Option<Bound<'py, PyAny>>,
        priority: Option<Bound<'py, PyAny>>,
        delay: Option<Bound<'py, PyAny>>,
        run_after: Option<Bound<'py, PyAny>>,
        max_attempts: Option<Bound<'py, PyAny>>,
        idempotency_key: Option<Bound<'py, PyAny>>,
        requires: Option<Bound<'py, PyAny>>,
        timeout: Option<Bound<'py, PyAny>>,
        retry: Option<Bound<'py, PyAny>>,
        after: Option<Bound<'py, PyAny>>,
        on_dependency_failure: Option<Bound<'py, PyAny>>,
    ) -> PyResult<i64> {
        let args = TaskArgs {
            queue,
            priority,
            delay,
            run_after,
            max_attempts,
            idempotency_key,
            requires,
            timeout,
            retry,
            after,
            on_dependency_failure,
        };
        let task = build_task(r#type, payload, &args)?;
        let q = self.handle()?;
        py.detach(move || q.enqueue(&task)).py()
    }

    /// Enqueue every item (dicts with enqueue's keywords) in one transaction: all or nothing.
    fn enqueue_many(&self, py: Python<'_>, items: &Bound<PyAny>) -> PyResult<Vec<i64>> {
        let tasks = tasks_arg(items)?;
        let q = self.handle()?;
        py.detach(move || q.enqueue_many(&tasks)).py()
    }

    fn get(&self, py: Python<'_>, task_id: TaskId) -> PyResult<PyTask> {
        let q = self.handle()?;
        Ok(PyTask::snapshot(py.detach(move || q.get(task_id.0)).py()?))
    }

    /// The task holding `idempotency_key`, or None.
    fn find(&self, py: Python<'_>, idempotency_key: &Bound<PyAny>) -> PyResult<Option<PyTask>> {
        let idempotency_key = text_arg(idempotency_key, "idempotency_key")?;
        let q = self.handle()?;
        Ok(py
            .detach(move || q.find_by_idempotency_key(&idempotency_key))
            .py()?
            .map(PyTask::snapshot))
    }

    #[pyo3(signature = (*, status=None, r#type=None, queue=None, limit=None, after_id=None, order=None))]
    #[allow(clippy::too_many_arguments)]
    fn list<'py>(
        &self,
        py: Python<'py>,
        status: Option<Bound<'py, PyAny>>,
        r#type: Option<&Bound<'py, PyAny>>,
        queue: Option<&Bound<'py, PyAny>>,
        limit: Option<&Bound<'py, PyAny>>,
        after_id: Option<&Bound<'py, PyAny>>,
        order: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let f = list_filter(status, r#type, queue, limit, after_id, order)?;
        let q = self.handle()?;
        let rows = py.detach(move || q.list(&f)).py()?;
        PyList::new(py, rows.into_iter().map(PyTask::snapshot))
    }

    fn cancel(&self, py: Python<'_>, task_id: TaskId) -> PyResult<bool> {
        let q = self.handle()?;
        py.detach(move || q.cancel(task_id.0)).py()
    }

    fn set_priority(
        &self,
        py: Python<'_>,
        task_id: TaskId,
        priority: &Bound<PyAny>,
    ) -> PyResult<bool> {
        let p = int_arg(priority, "priority")?;
        let q = self.handle()?;
        py.detach(move || q.set_priority(task_id.0, p)).py()
    }

    fn retry(&self, py: Python<'_>, task_id: TaskId) -> PyResult<bool> {
        let q = self.handle()?;
        py.detach(move || q.retry(task_id.0)).py()
    }

    /// Backoff for a queue, shared by every process on this file. Keys left out keep the defaults.
    #[pyo3(signature = (queue, *, base=None, factor=None, cap=None, jitter=None))]
    fn set_retry_policy(
        &self,
        py: Python<'_>,
        queue: &Bound<PyAny>,
        base: Option<&Bound<PyAny>>,
        factor: Option<&Bound<PyAny>>,
        cap: Option<&Bound<PyAny>>,
        jitter: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let queue = str_arg(queue, "queue")?;
        let o = RetryOverrides {
            base: opt_float(base, "retry policy base")?,
            factor: opt_float(factor, "retry policy factor")?,
            cap: opt_float(cap, "retry policy cap")?,
            jitter: opt_float(jitter, "retry policy jitter")?,
        };
        let q = self.handle()?;
        py.detach(move || q.set_retry_policy(&queue, o)).py()
    }

    /// The task's attempts that ended without success, oldest first.
    fn attempts(&self, py: Python<'_>, task_id: TaskId) -> PyResult<Vec<PyTaskAttempt>> {
        let q = self.handle()?;
        Ok(py
            .detach(move || q.attempts(task_id.0))
            .py()?
            .into_iter()
            .map(|row| PyTaskAttempt { row })
            .collect())
    }

    #[pyo3(signature = (task_id, *, limit=None))]
    fn logs(
        &self,
        py: Python<'_>,
        task_id: TaskId,
        limit: Option<&Bound<PyAny>>,
    ) -> PyResult<Vec<PyTaskLog>> {
        let limit = match limit.filter(|l| !l.is_none()) {
            Some(l) => int_in(l, "limit", 1, crate::model::observe::MAX_LOG_LIMIT)?,
            None => 100,
        };
        let q = self.handle()?;
        Ok(py
            .detach(move || q.logs(task_id.0, limit))
            .py()?
            .into_iter()
            .map(|row| PyTaskLog { row })
            .collect())
    }

    #[pyo3(signature = (task_id, level, message, details=None))]
    fn log(
        &self,
        py: Python<'_>,
        task_id: TaskId,
        level: &Bound<PyAny>,
        message: &Bound<PyAny>,
        details: Option<&Bound<PyAny>>,
    ) -> PyResult<i64> {
        let level = text_arg(level, "level")?;
        let message = text_arg(message, "message")?;
        let details = details
            .filter(|d| !d.is_none())
            .map(|d| to_json(d, "details"))
            .transpose()?;
        let q = self.handle()?;
        py.detach(move || q.log(task_id.0, &level, &message, details.as_deref()))
            .py()
    }
}
