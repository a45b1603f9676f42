//! `prismq_queue.Queue`: argument checking and conversion, then the core call with the GIL
//! released. No queue logic lives here.

use super::convert::*;
use super::errors::{invalid, raise, ToPy};
use super::task::{PyTask, PyTaskLog, PyWorkerInfo};
use crate::ack::{FailOutcome, Lease};
use crate::admin::ListFilter;
use crate::claim::lanes::LaneFilter;
use crate::claim::strategy::Strategy;
use crate::claim::ClaimRequest;
use crate::db::DbOptions;
use crate::enqueue::NewTask;
use crate::queue::{Queue, QueueOptions, DEFAULT_MAX_PAYLOAD_BYTES};
use crate::retry::RetryOverrides;
use crate::task::Status;
use crate::workers::Heartbeat;
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use std::sync::Arc;
use std::time::Duration;

/// A Python progress callback for a long core operation that runs with the GIL released: the
/// GIL is taken back only to call it (at most every `MIN_GAP`, and always for the first and last
/// report) and to let Ctrl-C through. An exception from it is kept and stops the operation.
struct Callback {
    f: Option<Py<PyAny>>,
    raised: Option<PyErr>,
    last: Option<std::time::Instant>,
}

impl Callback {
    const MIN_GAP: Duration = Duration::from_millis(100);

    fn new(f: Option<Py<PyAny>>) -> Callback {
        Callback {
            f: f.filter(|f| Python::attach(|py| !f.is_none(py))),
            raised: None,
            last: None,
        }
    }

    fn call(&mut self, done: u64, total: Option<u64>) -> crate::error::Result<()> {
        let edge = self.last.is_none() || total == Some(done);
        if !edge && self.last.is_some_and(|t| t.elapsed() < Self::MIN_GAP) {
            return Ok(());
        }
        self.last = Some(std::time::Instant::now());
        let f = &self.f;
        let r = Python::attach(|py| {
            py.check_signals().and_then(|_| match f {
                Some(f) => f.call1(py, (done, total)).map(drop),
                None => Ok(()),
            })
        });
        r.map_err(|e| {
            self.raised = Some(e);
            crate::error::Error::Database("stopped by the progress callback".into())
        })
    }

    /// The operation's result, with the callback's exception in place of the error it caused.
    fn result<T>(&mut self, r: crate::error::Result<T>) -> PyResult<T> {
        match (r, self.raised.take()) {
            (Err(_), Some(e)) => Err(e),
            (r, _) => r.py(),
        }
    }
}

#[pyclass(name = "Queue", module = "prismq_queue", frozen)]
pub struct PyQueue {
    inner: RwLock<Option<Arc<Queue>>>,
    path: String,
}

/// Keyword options shared by `enqueue` and the dicts of `enqueue_many`.
#[derive(Default)]
struct TaskArgs<'py> {
    queue: Option<Bound<'py, PyAny>>,
    priority: Option<Bound<'py, PyAny>>,
    delay: Option<Bound<'py, PyAny>>,
    run_after: Option<Bound<'py, PyAny>>,
    max_attempts: Option<Bound<'py, PyAny>>,
    idempotency_key: Option<Bound<'py, PyAny>>,
    requires: Option<Bound<'py, PyAny>>,
    timeout: Option<Bound<'py, PyAny>>,
    retry: Option<Bound<'py, PyAny>>,
}

fn some<'a, 'py>(o: &'a Option<Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    o.as_ref().filter(|v| !v.is_none())
}

fn build_task(
    task_type: &Bound<PyAny>,
    payload: Option<&Bound<PyAny>>,
    a: &TaskArgs,
) -> PyResult<NewTask> {
    let task_type = str_arg(task_type, "type")?;
    let payload = match payload {
        Some(p) => to_json(p, "payload")?,
        None => "null".to_string(),
    };
    let mut t = NewTask::new(task_type, payload);
    if let Some(q) = some(&a.queue) {
        t.queue = str_arg(q, "queue")?;
    }
    if let Some(p) = some(&a.priority) {
        t.priority = int_arg(p, "priority")?;
    }
    if let Some(d) = some(&a.delay) {
        t.delay_ms = Some(seconds_ms(d, "delay")?);
    }
    if let Some(r) = some(&a.run_after) {
        t.run_after = Some(instant_ms(r, "run_after")?);
    }
    if let Some(m) = some(&a.max_attempts) {
        t.max_attempts = int_arg(m, "max_attempts")?;
    }
    if let Some(k) = some(&a.idempotency_key) {
        t.idempotency_key = Some(str_arg(k, "idempotency_key")?);
    }
    if let Some(r) = some(&a.requires) {
        t.requires = Some(to_object(r, "requires")?);
    }
    if let Some(s) = some(&a.timeout) {
        t.timeout_ms = Some(seconds_ms(s, "timeout")?);
    }
    if let Some(r) = some(&a.retry) {
        t.retry = Some(retry_overrides(r)?);
    }
    Ok(t)
}

fn retry_overrides(obj: &Bound<PyAny>) -> PyResult<RetryOverrides> {
    let v = to_object(obj, "retry")?;
    serde_json::from_value::<RetryOverrides>(serde_json::Value::Object(v)).map_err(|e| {
        invalid(format!(
            "retry must be a dict with any of the keys base, factor, cap, jitter (numbers): {e}"
        ))
    })
}

fn task_ref(task: &Bound<PyAny>, what: &str) -> PyResult<(Py<PyTask>, Lease)> {
    let t = task.cast::<PyTask>().map_err(|_| {
        invalid(format!(
            "{what} must be a Task returned by claim(), got {}",
            task.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })?;
    let lease = t.get().lease().ok_or_else(|| {
        Python::attach(|py| {
            raise(
                py,
                "LeaseLost",
                format!(
                    "task {} carries no lease token: only a Task returned by claim() can be completed, failed, renewed or reported on",
                    t.get().row.id
                ),
            )
        })
    })?;
    Ok((t.clone().unbind(), lease))
}

#[allow(clippy::too_many_arguments)]
fn claim_request(
    worker_id: &Bound<PyAny>,
    strategy: Option<Bound<PyAny>>,
    queues: Option<Bound<PyAny>>,
    types: Option<Bound<PyAny>>,
    capabilities: Option<Bound<PyAny>>,
    lease: Option<Bound<PyAny>>,
    limit: i64,
) -> PyResult<ClaimRequest> {
    let mut req = ClaimRequest::new(str_arg(worker_id, "worker_id")?);
    if let Some(s) = strategy.as_ref().filter(|s| !s.is_none()) {
        let name: String = s.extract().map_err(|_| {
            invalid("strategy must be 'fifo', 'lifo', 'priority' or 'weighted_random'")
        })?;
        req.strategy = Strategy::parse(&name).py()?;
    }
    req.filter = LaneFilter {
        queues: queues
            .as_ref()
            .filter(|v| !v.is_none())
            .map(|v| names_arg(v, "queues"))
            .transpose()?,
        types: types
            .as_ref()
            .filter(|v| !v.is_none())
            .map(|v| names_arg(v, "types"))
            .transpose()?,
        capabilities: capabilities
            .as_ref()
            .filter(|v| !v.is_none())
            .map(|v| to_object(v, "capabilities"))
            .transpose()?,
    };
    if let Some(l) = lease.as_ref().filter(|v| !v.is_none()) {
        req.lease_ms = seconds_ms(l, "lease")?;
        if req.lease_ms <= 0 {
            return Err(invalid(format!(
                "lease must be a positive number of seconds, got {l}"
            )));
        }
    }
    if limit < 1 {
        return Err(invalid(format!("limit must be at least 1, got {limit}")));
    }
    req.limit = limit as usize;
    Ok(req)
}

/// Items of complete_many: Tasks or (Task, result) pairs.
fn completions(items: &Bound<PyAny>) -> PyResult<Vec<(Lease, Option<String>)>> {
    let mut batch = Vec::new();
    for item in items
        .try_iter()
        .map_err(|_| invalid("items must be an iterable of Tasks or (Task, result) pairs"))?
    {
        let item = item?;
        if let Ok(t) = item.cast::<PyTuple>() {
            if t.len() != 2 {
                return Err(invalid("each pair must be (task, result)"));
            }
            let (_, lease) = task_ref(&t.get_item(0)?, "task")?;
            batch.push((lease, Some(to_json(&t.get_item(1)?, "result")?)));
        } else {
            let (_, lease) = task_ref(&item, "task")?;
            batch.push((lease, None));
        }
    }
    Ok(batch)
}

/// Items of fail_many: (Task, error) or (Task, error, retry).
fn failures(items: &Bound<PyAny>) -> PyResult<Vec<(Lease, String, bool)>> {
    let mut batch = Vec::new();
    for item in items
        .try_iter()
        .map_err(|_| invalid("items must be an iterable of (task, error[, retry]) tuples"))?
    {
        let item = item?;
        let t = item.cast::<PyTuple>().map_err(|_| {
            invalid("each item must be a (task, error) or (task, error, retry) tuple")
        })?;
        if !(2..=3).contains(&t.len()) {
            return Err(invalid(
                "each item must be a (task, error) or (task, error, retry) tuple",
            ));
        }
        let (_, lease) = task_ref(&t.get_item(0)?, "task")?;
        let err = error_text(&t.get_item(1)?)?;
        let retry = if t.len() == 3 {
            t.get_item(2)?.is_truthy()?
        } else {
            true
        };
        batch.push((lease, err, retry));
    }
    Ok(batch)
}

fn error_text(err: &Bound<PyAny>) -> PyResult<String> {
    if err.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        let name = err.get_type().name()?.to_string();
        let msg = err.str()?.to_string();
        return Ok(if msg.is_empty() {
            name
        } else {
            format!("{name}: {msg}")
        });
    }
    Ok(err.str()?.to_string())
}

fn tasks_to_py(py: Python<'_>, rows: Vec<crate::task::TaskRow>) -> PyResult<Bound<'_, PyList>> {
    PyList::new(py, rows.into_iter().map(PyTask::new))
}

fn status_arg(obj: &Bound<PyAny>) -> PyResult<Status> {
    let s: String = obj.extract().map_err(|_| {
        invalid("status must be one of 'queued', 'running', 'completed', 'failed', 'cancelled'")
    })?;
    Status::parse(&s).py()
}

impl PyQueue {
    fn q(&self) -> PyResult<Arc<Queue>> {
        self.inner.read().clone().ok_or_else(|| {
            Python::attach(|py| {
                raise(
                    py,
                    "QueueError",
                    format!("the Queue for {:?} is closed: open a new one", self.path),
                )
            })
        })
    }
}

#[pymethods]
impl PyQueue {
    #[new]
    #[pyo3(signature = (path=None, *, busy_timeout=60.0, synchronous="normal",
                        max_payload_bytes=None, stale_worker_after=30.0))]
    fn new(
        py: Python<'_>,
        path: Option<&Bound<PyAny>>,
        busy_timeout: f64,
        synchronous: &str,
        max_payload_bytes: Option<&Bound<PyAny>>,
        stale_worker_after: f64,
    ) -> PyResult<Self> {
        let path: String = match path.filter(|p| !p.is_none()) {
            None => "prismq_queue.db".to_string(),
            Some(p) => match p.extract::<std::path::PathBuf>() {
                Ok(p) => p.to_string_lossy().into_owned(),
                Err(_) => return Err(invalid("path must be a str or os.PathLike")),
            },
        };
        if !(busy_timeout.is_finite() && busy_timeout >= 0.0) {
            return Err(invalid(format!(
                "busy_timeout must be a number of seconds >= 0, got {busy_timeout}"
            )));
        }
        let max_payload_bytes = match max_payload_bytes.filter(|m| !m.is_none()) {
            None => DEFAULT_MAX_PAYLOAD_BYTES,
            Some(m) => match int_arg(m, "max_payload_bytes")? {
                n if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
                n => {
                    return Err(invalid(format!(
                        "max_payload_bytes must be a positive number of bytes, got {n}"
                    )))
                }
            },
        };
        if !(stale_worker_after.is_finite() && stale_worker_after > 0.0) {
            return Err(invalid(
                "stale_worker_after must be a positive number of seconds",
            ));
        }
        let opts = QueueOptions {
            db: DbOptions {
                busy_timeout: Duration::from_secs_f64(busy_timeout),
                synchronous: synchronous.to_string(),
            },
            max_payload_bytes,
            stale_worker_after_ms: crate::time::secs_to_ms(stale_worker_after),
        };
        let p = path.clone();
        let q = py.detach(move || Queue::open(&p, opts)).py()?;
        Ok(PyQueue {
            inner: RwLock::new(Some(Arc::new(q))),
            path,
        })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Close the database connections. Further calls raise QueueError.
    fn close(&self, py: Python<'_>) {
        let q = self.inner.write().take();
        py.detach(move || drop(q));
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.read().is_none()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Queue({:?}{})",
            self.path,
            if self.closed() { ", closed" } else { "" }
        )
    }

    #[pyo3(signature = (r#type, payload=None, *, queue=None, priority=None, delay=None, run_after=None,
                        max_attempts=None, idempotency_key=None, requires=None, timeout=None, retry=None))]
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
        };
        let task = build_task(r#type, payload, &args)?;
        let q = self.q()?;
        py.detach(move || q.enqueue(&task)).py()
    }

    /// Enqueue every item (dicts with enqueue's keywords) in one transaction: all or nothing.
    fn enqueue_many(&self, py: Python<'_>, items: &Bound<PyAny>) -> PyResult<Vec<i64>> {
        let iter = items
            .try_iter()
            .map_err(|_| invalid("items must be an iterable of dicts with enqueue's keywords"))?;
        let mut tasks = Vec::new();
        for (i, item) in iter.enumerate() {
            let item = item?;
            let d = item
                .cast::<PyDict>()
                .map_err(|_| invalid(format!("item {i} must be a dict with enqueue's keywords")))?;
            let mut args = TaskArgs::default();
            let mut task_type = None;
            let mut payload = None;
            for (k, v) in d.iter() {
                let key = k
                    .cast::<PyString>()
                    .map_err(|_| invalid(format!("item {i}: keys must be strings")))?;
                match key.to_str()? {
                    "type" => task_type = Some(v),
                    "payload" => payload = Some(v),
                    "queue" => args.queue = Some(v),
                    "priority" => args.priority = Some(v),
                    "delay" => args.delay = Some(v),
                    "run_after" => args.run_after = Some(v),
                    "max_attempts" => args.max_attempts = Some(v),
                    "idempotency_key" => args.idempotency_key = Some(v),
                    "requires" => args.requires = Some(v),
                    "timeout" => args.timeout = Some(v),
                    "retry" => args.retry = Some(v),
                    other => {
                        return Err(invalid(format!(
                            "item {i}: unknown key {other:?}; the keys are enqueue's: type, payload, queue, priority, delay, \
                             run_after, max_attempts, idempotency_key, requires, timeout, retry"
                        )))
                    }
                }
            }
            let task_type =
                task_type.ok_or_else(|| invalid(format!("item {i}: 'type' is required")))?;
            let t = build_task(&task_type, payload.as_ref(), &args).map_err(|e| {
                Python::attach(|py| {
                    if e.is_instance(
                        py,
                        &super::errors::error_class(py, "InvalidArgument")
                            .unwrap()
                            .cast_into()
                            .unwrap(),
                    ) {
                        invalid(format!("item {i}: {}", e.value(py)))
                    } else {
                        e
                    }
                })
            })?;
            tasks.push(t);
        }
        let q = self.q()?;
        py.detach(move || q.enqueue_many(&tasks)).py()
    }

    fn get(&self, py: Python<'_>, task_id: TaskId) -> PyResult<PyTask> {
        let q = self.q()?;
        Ok(PyTask::snapshot(py.detach(move || q.get(task_id.0)).py()?))
    }

    /// The task holding `idempotency_key`, or None.
    fn find(&self, py: Python<'_>, idempotency_key: String) -> PyResult<Option<PyTask>> {
        let q = self.q()?;
        Ok(py
            .detach(move || q.find_by_idempotency_key(&idempotency_key))
            .py()?
            .map(PyTask::snapshot))
    }

    #[pyo3(signature = (*, status=None, r#type=None, queue=None, limit=100, after_id=None, order="asc"))]
    #[allow(clippy::too_many_arguments)]
    fn list<'py>(
        &self,
        py: Python<'py>,
        status: Option<Bound<'py, PyAny>>,
        r#type: Option<String>,
        queue: Option<String>,
        limit: i64,
        after_id: Option<i64>,
        order: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let descending = match order {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(invalid(format!(
                    "order must be 'asc' or 'desc', not {other:?}"
                )))
            }
        };
        let f = ListFilter {
            status: status
                .as_ref()
                .filter(|s| !s.is_none())
                .map(status_arg)
                .transpose()?,
            task_type: r#type,
            queue,
            limit,
            after_id,
            descending,
        };
        let q = self.q()?;
        let rows = py.detach(move || q.list(&f)).py()?;
        PyList::new(py, rows.into_iter().map(PyTask::snapshot))
    }

    #[pyo3(signature = (*, queue=None))]
    fn stats<'py>(&self, py: Python<'py>, queue: Option<String>) -> PyResult<Bound<'py, PyDict>> {
        let q = self.q()?;
        let s = py.detach(move || q.stats(queue.as_deref())).py()?;
        let d = PyDict::new(py);
        for (k, v) in &s.counts {
            d.set_item(*k, v)?;
        }
        d.set_item("total", s.total)?;
        d.set_item("scheduled", s.scheduled)?;
        d.set_item("oldest_queued_age_seconds", s.oldest_queued_age_s)?;
        Ok(d)
    }

    fn cancel(&self, py: Python<'_>, task_id: TaskId) -> PyResult<bool> {
        let q = self.q()?;
        py.detach(move || q.cancel(task_id.0)).py()
    }

    fn set_priority(
        &self,
        py: Python<'_>,
        task_id: TaskId,
        priority: &Bound<PyAny>,
    ) -> PyResult<bool> {
        let p = int_arg(priority, "priority")?;
        let q = self.q()?;
        py.detach(move || q.set_priority(task_id.0, p)).py()
    }

    fn retry(&self, py: Python<'_>, task_id: TaskId) -> PyResult<bool> {
        let q = self.q()?;
        py.detach(move || q.retry(task_id.0)).py()
    }

    /// Backoff for a queue, shared by every process on this file. Keys left out keep the defaults.
    #[pyo3(signature = (queue, *, base=None, factor=None, cap=None, jitter=None))]
    fn set_retry_policy(
        &self,
        py: Python<'_>,
        queue: &Bound<PyAny>,
        base: Option<f64>,
        factor: Option<f64>,
        cap: Option<f64>,
        jitter: Option<f64>,
    ) -> PyResult<()> {
        let queue = str_arg(queue, "queue")?;
        let o = RetryOverrides {
            base,
            factor,
            cap,
            jitter,
        };
        let q = self.q()?;
        py.detach(move || q.set_retry_policy(&queue, o)).py()
    }

    #[pyo3(signature = (worker_id, *, strategy=None, queues=None, types=None, capabilities=None, lease=None, limit=1))]
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
        limit: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let req = claim_request(
            worker_id,
            strategy,
            queues,
            types,
            capabilities,
            lease,
            limit,
        )?;
        let q = self.q()?;
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
        let q = self.q()?;
        py.detach(move || q.complete(lease, result.as_deref())).py()
    }

    /// Items are Tasks or (Task, result) pairs. Returns, per item, whether it was completed
    /// (False: its lease was lost and nothing changed for it).
    fn complete_many(&self, py: Python<'_>, items: &Bound<PyAny>) -> PyResult<Vec<bool>> {
        let batch = completions(items)?;
        let q = self.q()?;
        py.detach(move || q.complete_many(&batch)).py()
    }

    #[pyo3(signature = (task, error, *, retry=true))]
    fn fail(
        &self,
        py: Python<'_>,
        task: &Bound<PyAny>,
        error: &Bound<PyAny>,
        retry: bool,
    ) -> PyResult<Option<Py<PyAny>>> {
        let (_, lease) = task_ref(task, "task")?;
        let err = error_text(error)?;
        let q = self.q()?;
        let outcome = py.detach(move || q.fail(lease, &err, retry)).py()?;
        // The time of the next attempt, or None for the dead letter.
        match outcome {
            FailOutcome::Retrying { run_after } => Ok(Some(datetime(py, run_after)?)),
            FailOutcome::DeadLettered => Ok(None),
        }
    }

    /// Items are (Task, error) or (Task, error, retry). Returns, per item, whether it was recorded.
    fn fail_many(&self, py: Python<'_>, items: &Bound<PyAny>) -> PyResult<Vec<bool>> {
        let batch = failures(items)?;
        let q = self.q()?;
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
                        capabilities=None, lease=None, limit=1))]
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
        limit: i64,
    ) -> PyResult<(Vec<bool>, Vec<bool>, Bound<'py, PyList>)> {
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
                limit,
            )?),
            None => None,
        };
        let q = self.q()?;
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
            Some(v) => seconds_ms(v, "lease")?,
            None => 60_000,
        };
        let q = self.q()?;
        let until = py.detach(move || q.renew(l, ms)).py()?;
        *t.get().lease_until.lock() = Some(until);
        datetime(py, until)
    }

    /// Hand the task back to the queue without counting the attempt (used on shutdown).
    fn release(&self, py: Python<'_>, task: &Bound<PyAny>) -> PyResult<bool> {
        let (_, l) = task_ref(task, "task")?;
        let q = self.q()?;
        py.detach(move || q.release(l)).py()
    }

    #[pyo3(signature = (task, percent=None, *, step=None, message=None))]
    fn progress(
        &self,
        py: Python<'_>,
        task: &Bound<PyAny>,
        percent: Option<f64>,
        step: Option<String>,
        message: Option<String>,
    ) -> PyResult<()> {
        let (_, l) = task_ref(task, "task")?;
        let q = self.q()?;
        py.detach(move || q.progress(l, percent, step.as_deref(), message.as_deref()))
            .py()
    }

    #[pyo3(signature = (worker_id, capabilities=None, *, queues=None, host=None, pid=None, tasks_done=None))]
    #[allow(clippy::too_many_arguments)]
    fn heartbeat(
        &self,
        py: Python<'_>,
        worker_id: &Bound<PyAny>,
        capabilities: Option<&Bound<PyAny>>,
        queues: Option<&Bound<PyAny>>,
        host: Option<String>,
        pid: Option<i64>,
        tasks_done: Option<i64>,
    ) -> PyResult<()> {
        let host = match host {
            Some(h) => Some(h),
            None => py
                .import("socket")?
                .call_method0("gethostname")?
                .extract()
                .ok(),
        };
        let hb = Heartbeat {
            worker_id: str_arg(worker_id, "worker_id")?,
            host,
            pid: Some(pid.unwrap_or(std::process::id() as i64)),
            capabilities: capabilities
                .filter(|v| !v.is_none())
                .map(|c| {
                    to_object(c, "capabilities").map(|m| serde_json::Value::Object(m).to_string())
                })
                .transpose()?,
            queues: queues
                .filter(|v| !v.is_none())
                .map(|v| names_arg(v, "queues").map(|n| serde_json::to_string(&n).unwrap()))
                .transpose()?,
            tasks_done,
        };
        let q = self.q()?;
        py.detach(move || q.heartbeat(&hb)).py()
    }

    fn workers(&self, py: Python<'_>) -> PyResult<Vec<PyWorkerInfo>> {
        let q = self.q()?;
        Ok(py
            .detach(move || q.workers())
            .py()?
            .into_iter()
            .map(|row| PyWorkerInfo { row })
            .collect())
    }

    fn remove_worker(&self, py: Python<'_>, worker_id: String) -> PyResult<bool> {
        let q = self.q()?;
        py.detach(move || q.remove_worker(&worker_id)).py()
    }

    /// Block until the database may have changed (a commit by any process) or `timeout` seconds
    /// pass; True on a change. The GIL is released while waiting. Idle workers sleep here.
    /// With `since` (a `change_token()`), a change is any commit after that token was taken,
    /// even one made before this call.
    #[pyo3(signature = (timeout=1.0, *, since=None))]
    fn wait_for_change(
        &self,
        py: Python<'_>,
        timeout: f64,
        since: Option<(u64, i64)>,
    ) -> PyResult<bool> {
        if !(timeout.is_finite() && timeout >= 0.0) {
            return Err(invalid(format!(
                "timeout must be a number of seconds >= 0, got {timeout}"
            )));
        }
        let q = self.q()?;
        let timeout = Duration::from_secs_f64(timeout);
        match since {
            None => py.detach(move || q.wait_for_change(timeout)).py(),
            Some((generation, data_version)) => {
                let token = crate::changes::ChangeToken {
                    generation,
                    data_version,
                };
                let never = std::sync::atomic::AtomicBool::new(false);
                py.detach(move || q.wait_past(token, timeout, &never)).py()
            }
        }
    }

    /// Where the database stands now, for `wait_for_change(since=...)`: an opaque pair.
    fn change_token(&self, py: Python<'_>) -> PyResult<(u64, i64)> {
        let q = self.q()?;
        let t = py.detach(move || q.change_token()).py()?;
        Ok((t.generation, t.data_version))
    }

    /// Wake every thread of this process blocked in wait_for_change (e.g. to stop a worker).
    fn wake(&self, py: Python<'_>) -> PyResult<()> {
        let q = self.q()?;
        py.detach(move || q.notify_local());
        Ok(())
    }

    /// Expired leases back to queued (or to the dead letter when attempts are spent).
    fn sweep(&self, py: Python<'_>) -> PyResult<usize> {
        let q = self.q()?;
        py.detach(move || q.sweep()).py()
    }

    #[pyo3(signature = (task_id, *, limit=100))]
    fn logs(&self, py: Python<'_>, task_id: TaskId, limit: i64) -> PyResult<Vec<PyTaskLog>> {
        let q = self.q()?;
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
        level: String,
        message: String,
        details: Option<&Bound<PyAny>>,
    ) -> PyResult<i64> {
        let details = details
            .filter(|d| !d.is_none())
            .map(|d| to_json(d, "details"))
            .transpose()?;
        let q = self.q()?;
        py.detach(move || q.log(task_id.0, &level, &message, details.as_deref()))
            .py()
    }

    /// Health numbers; rates, percentiles and retries over the last `window` seconds (or a
    /// timedelta). The keys are listed in docs/architecture.md ("Observability").
    #[pyo3(signature = (*, window=None))]
    fn metrics<'py>(
        &self,
        py: Python<'py>,
        window: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let window_ms = match window.filter(|w| !w.is_none()) {
            Some(w) => seconds_ms(w, "window")?,
            None => crate::metrics::DEFAULT_WINDOW_MS,
        };
        let q = self.q()?;
        let v = py.detach(move || q.metrics_over(window_ms)).py()?;
        pythonize::pythonize(py, &v).map_err(|e| invalid(e.to_string()))
    }

    /// How many queued, due tasks its worker pool (same queue and type) runs before this one
    /// under `strategy` (0: next); None when the task is not queued. See `crate::position`.
    #[pyo3(signature = (task_id, *, strategy="priority"))]
    fn position(&self, py: Python<'_>, task_id: TaskId, strategy: &str) -> PyResult<Option<i64>> {
        let s = Strategy::parse(strategy).py()?;
        let q = self.q()?;
        py.detach(move || q.position(task_id.0, s)).py()
    }

    /// A change cursor at the present, for `changes_since` (the feed under `events.watch`).
    #[pyo3(signature = (*, queues=None))]
    fn change_cursor(
        &self,
        py: Python<'_>,
        queues: Option<&Bound<PyAny>>,
    ) -> PyResult<super::changes::PyChangeCursor> {
        super::changes::change_cursor(py, self.q()?, queues)
    }

    /// Wait (GIL released) up to `timeout` seconds for a commit since the cursor's last look,
    /// no sooner than `min_gap` after it, then look: `(changes, more)`, each change a tuple
    /// `(kind, id, type, queue, status, progress, step, message, at_ms, attempts, max_attempts,
    /// worker, error)`. `timeout=0` looks at once. See `crate::changes` for what is reported.
    #[pyo3(signature = (cursor, *, timeout=0.0, min_gap=0.0, limit=1000))]
    fn changes_since<'py>(
        &self,
        py: Python<'py>,
        cursor: Py<super::changes::PyChangeCursor>,
        timeout: f64,
        min_gap: f64,
        limit: i64,
    ) -> PyResult<(Bound<'py, PyList>, bool)> {
        super::changes::changes_since(py, self.q()?, cursor, timeout, min_gap, limit)
    }

    /// `{queue: {"queued": n, "running": n}}` for each of `queues`.
    fn queue_depths<'py>(
        &self,
        py: Python<'py>,
        queues: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        super::changes::queue_depths(py, self.q()?, queues)
    }

    /// The query plan of the claim statement for `strategy` (one line per plan step).
    #[pyo3(signature = (strategy="priority"))]
    fn explain_claim(&self, py: Python<'_>, strategy: &str) -> PyResult<Vec<String>> {
        let s = Strategy::parse(strategy).py()?;
        let q = self.q()?;
        py.detach(move || q.explain_claim(s)).py()
    }

    /// A consistent copy while others keep working; returns `{"path", "bytes", "pages"}`.
    /// `progress(pages_done, pages_total)` is called between steps (at most every 0.1 s); an
    /// exception from it (or Ctrl-C) stops the backup and leaves `dest_path` as it was.
    #[pyo3(signature = (dest_path, *, overwrite=false, progress=None))]
    fn backup<'py>(
        &self,
        py: Python<'py>,
        dest_path: std::path::PathBuf,
        overwrite: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dest = dest_path.to_string_lossy().into_owned();
        let q = self.q()?;
        let mut cb = Callback::new(progress);
        let r = py.detach(|| q.backup_with(&dest, overwrite, &mut |d, t| cb.call(d, Some(t))));
        let r = cb.result(r)?;
        let d = PyDict::new(py);
        d.set_item("path", r.path)?;
        d.set_item("bytes", r.bytes)?;
        d.set_item("pages", r.pages)?;
        Ok(d)
    }

    /// Replace the database file `target` (created if missing) with the backup file `backup`,
    /// safely: the backup is checked first, a target in use by any process is refused, and no
    /// stale WAL is left to replay (see the core's `maintenance::restore`). Returns `{"backup",
    /// "target", "bytes", "pages", "schema_version", "created"}`. `progress(pages_done,
    /// pages_total)` as for `backup`; an exception from it leaves the target as it was.
    #[staticmethod]
    #[pyo3(signature = (backup, target, *, progress=None))]
    fn restore<'py>(
        py: Python<'py>,
        backup: std::path::PathBuf,
        target: std::path::PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (backup, target) = (
            backup.to_string_lossy().into_owned(),
            target.to_string_lossy().into_owned(),
        );
        let mut cb = Callback::new(progress);
        let r = py.detach(|| {
            crate::maintenance::restore(&backup, &target, &mut |d, t| cb.call(d, Some(t)))
        });
        let r = cb.result(r)?;
        let d = PyDict::new(py);
        d.set_item("backup", r.backup)?;
        d.set_item("target", r.target)?;
        d.set_item("bytes", r.bytes)?;
        d.set_item("pages", r.pages)?;
        d.set_item("schema_version", r.schema_version)?;
        d.set_item("created", r.created)?;
        Ok(d)
    }

    #[pyo3(signature = (mode="passive"))]
    fn checkpoint<'py>(&self, py: Python<'py>, mode: &str) -> PyResult<Bound<'py, PyDict>> {
        let q = self.q()?;
        let mode = mode.to_string();
        let r = py.detach(move || q.checkpoint(&mode)).py()?;
        let d = PyDict::new(py);
        d.set_item("busy", r.busy != 0)?;
        d.set_item("wal_frames", r.wal_frames)?;
        d.set_item("checkpointed_frames", r.checkpointed_frames)?;
        Ok(d)
    }

    /// Rebuild the file. `progress(ticks, None)` is called about every 0.1 s while it runs
    /// (VACUUM cannot tell how far it is); an exception from it (or Ctrl-C) interrupts the
    /// VACUUM, which then changes nothing.
    #[pyo3(signature = (*, progress=None))]
    fn vacuum(&self, py: Python<'_>, progress: Option<Py<PyAny>>) -> PyResult<()> {
        let q = self.q()?;
        let cb = Arc::new(parking_lot::Mutex::new(Callback::new(progress)));
        let ticker = cb.clone();
        let mut ticks = 0u64;
        let r = py.detach(move || {
            q.vacuum_with(Box::new(move || {
                ticks += 1;
                ticker.lock().call(ticks, None)
            }))
        });
        let mut cb = cb.lock();
        cb.result(r)
    }

    fn analyze(&self, py: Python<'_>) -> PyResult<()> {
        let q = self.q()?;
        py.detach(move || q.analyze()).py()
    }

    fn integrity_check(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let q = self.q()?;
        py.detach(move || q.integrity_check()).py()
    }

    /// Delete finished tasks (and their logs) older than `older_than` (seconds or timedelta),
    /// `batch_size` tasks per transaction (other writers wait at most one batch). After each
    /// batch `progress(deleted, total)` is called; an exception from it (or Ctrl-C) stops the
    /// purge, keeping the batches already deleted.
    #[pyo3(signature = (*, older_than, statuses=None, batch_size=2000, progress=None))]
    fn purge(
        &self,
        py: Python<'_>,
        older_than: &Bound<PyAny>,
        statuses: Option<&Bound<PyAny>>,
        batch_size: i64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<usize> {
        if !(1..=1_000_000).contains(&batch_size) {
            return Err(invalid(format!(
                "batch_size must be between 1 and 1000000, got {batch_size}"
            )));
        }
        let ms = seconds_ms(older_than, "older_than")?;
        if ms < 0 {
            return Err(invalid("older_than must be zero or positive"));
        }
        let statuses: Vec<Status> = match statuses.filter(|s| !s.is_none()) {
            None => vec![Status::Completed],
            Some(s) => names_arg(s, "statuses")?
                .iter()
                .map(|n| Status::parse(n).py())
                .collect::<PyResult<_>>()?,
        };
        let q = self.q()?;
        let mut cb = Callback::new(progress);
        let r = py.detach(|| {
            q.purge_with(ms, &statuses, batch_size as usize, &mut |d, t| {
                cb.call(d, Some(t))
            })
        });
        cb.result(r)
    }

    /// Import the older Python queue's file (see `crate::legacy`). Returns the report as a dict.
    /// The GIL is released while importing; it is taken back only to call `progress(done, total)`
    /// after each batch (and to let Ctrl-C stop the import between batches: committed batches
    /// stay, and running it again resumes).
    #[pyo3(signature = (path, *, progress=None, batch_size=1000))]
    fn import_legacy<'py>(
        &self,
        py: Python<'py>,
        path: std::path::PathBuf,
        progress: Option<Py<PyAny>>,
        batch_size: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        if batch_size < 1 {
            return Err(invalid(format!(
                "batch_size must be at least 1, got {batch_size}"
            )));
        }
        let source = path.to_string_lossy().into_owned();
        let q = self.q()?;
        let mut raised: Option<PyErr> = None;
        let report = py.detach(|| {
            let mut cb = |done: u64, total: u64| -> crate::error::Result<()> {
                Python::attach(|py| {
                    let r = py.check_signals().and_then(|_| match &progress {
                        Some(f) => f.call1(py, (done, total)).map(drop),
                        None => Ok(()),
                    });
                    r.map_err(|e| {
                        raised = Some(e);
                        crate::error::Error::Database("import-legacy stopped by the caller".into())
                    })
                })
            };
            q.import_legacy_with(&source, batch_size as usize, &mut cb)
        });
        if let Some(e) = raised {
            return Err(e);
        }
        let report = report.py()?;
        pythonize::pythonize(py, &report).map_err(|e| invalid(e.to_string()))
    }

    /// Check an old file and count what it holds, without importing or writing anything.
    #[staticmethod]
    fn inspect_legacy<'py>(
        py: Python<'py>,
        path: std::path::PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = path.to_string_lossy().into_owned();
        let info = py
            .detach(move || crate::legacy::inspect_legacy(&source))
            .py()?;
        pythonize::pythonize(py, &info).map_err(|e| invalid(e.to_string()))
    }

    // ---- runs of the task manager adapter (see crate::runs; forwarded to python/runs.rs)

    /// Insert or replace a run of the run registry (`data`: the whole run, JSON text or a dict).
    #[pyo3(signature = (run_id, module_id, status, created_at, data, *, completed_at=None))]
    #[allow(clippy::too_many_arguments)]
    fn save_run(
        &self,
        py: Python<'_>,
        run_id: &Bound<PyAny>,
        module_id: &Bound<PyAny>,
        status: &Bound<PyAny>,
        created_at: &Bound<PyAny>,
        data: &Bound<PyAny>,
        completed_at: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let q = self.q()?;
        super::runs::save_run(
            py,
            q,
            run_id,
            module_id,
            status,
            created_at,
            data,
            completed_at,
        )
    }

    /// The JSON text of a run, or None.
    fn load_run(&self, py: Python<'_>, run_id: String) -> PyResult<Option<String>> {
        super::runs::load_run(py, self.q()?, run_id)
    }

    /// JSON texts of runs, oldest first (or newest first), filtered by at most one of
    /// `status`, `module_id` and `active` (queued or running).
    #[pyo3(signature = (*, status=None, module_id=None, active=false, newest_first=false, limit=None))]
    fn list_runs(
        &self,
        py: Python<'_>,
        status: Option<String>,
        module_id: Option<String>,
        active: bool,
        newest_first: bool,
        limit: Option<i64>,
    ) -> PyResult<Vec<String>> {
        let q = self.q()?;
        super::runs::list_runs(py, q, status, module_id, active, newest_first, limit)
    }

    fn delete_run(&self, py: Python<'_>, run_id: String) -> PyResult<bool> {
        super::runs::delete_run(py, self.q()?, run_id)
    }

    /// Delete runs that finished before `completed_before` (a datetime). Returns how many.
    fn purge_runs(&self, py: Python<'_>, completed_before: &Bound<PyAny>) -> PyResult<usize> {
        super::runs::purge_runs(py, self.q()?, completed_before)
    }

    /// Insert (or restart) the task row of an in-process run directly in `running`, leased to
    /// `worker_id`. Returns the Task with its lease, for complete/fail/renew.
    #[pyo3(signature = (run_id, r#type, payload=None, *, worker_id, queue="runs", lease=None,
                        rerun_attempts=3, takeover_from=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        &self,
        py: Python<'_>,
        run_id: &Bound<PyAny>,
        r#type: &Bound<PyAny>,
        payload: Option<&Bound<PyAny>>,
        worker_id: &Bound<PyAny>,
        queue: &str,
        lease: Option<&Bound<PyAny>>,
        rerun_attempts: i64,
        takeover_from: Option<&Bound<PyAny>>,
    ) -> PyResult<PyTask> {
        let q = self.q()?;
        super::runs::start_run(
            py,
            q,
            run_id,
            r#type,
            payload,
            worker_id,
            queue,
            lease,
            rerun_attempts,
            takeover_from,
        )
    }

    /// Re-queue (types in `rerun_types`) or fail the interrupted runs of `queue`.
    #[pyo3(signature = (*, queue="runs", rerun_types=None, rerun_queue="default", dead_holders=None))]
    fn recover_runs<'py>(
        &self,
        py: Python<'py>,
        queue: &str,
        rerun_types: Option<&Bound<'py, PyAny>>,
        rerun_queue: &str,
        dead_holders: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let q = self.q()?;
        super::runs::recover_runs(py, q, queue, rerun_types, rerun_queue, dead_holders)
    }
}
