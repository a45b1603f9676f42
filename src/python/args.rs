//! Arguments from Python: conversion and checks shared by the methods of `Queue`, and the
//! progress callback of long operations.

use super::convert::*;
use super::errors::{invalid, LeaseLost, ToPy};
use super::task::PyTask;
use crate::model::claim::{ClaimRequest, LaneFilter};
use crate::model::lease::{Failure, Lease};
use crate::model::new_task::NewTask;
use crate::model::retry::RetryOverrides;
use crate::model::strategy::Strategy;
use crate::model::task::Status;
use crate::model::time::Least;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use serde::Serialize;
use std::time::Duration;

/// A Python progress callback for a long core operation that runs with the GIL released: the
/// GIL is taken back only to call it (at most every `MIN_GAP`, and always for the first and last
/// report) and to let Ctrl-C through. An exception from it is kept and stops the operation.
pub(super) struct Callback {
    f: Option<Py<PyAny>>,
    raised: Option<PyErr>,
    last: Option<std::time::Instant>,
}

impl Callback {
    const MIN_GAP: Duration = Duration::from_millis(100);

    pub(super) fn new(f: Option<Py<PyAny>>) -> Callback {
        Callback {
            f: f.filter(|f| Python::attach(|py| !f.is_none(py))),
            raised: None,
            last: None,
        }
    }

    pub(super) fn call(
        &mut self,
        done: u64,
        total: Option<u64>,
    ) -> crate::model::error::Result<()> {
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
            crate::model::error::Error::Database("stopped by the progress callback".into())
        })
    }

    /// The operation's result, with the callback's exception in place of the error it caused.
    pub(super) fn result<T>(&mut self, r: crate::model::error::Result<T>) -> PyResult<T> {
        match (r, self.raised.take()) {
            (Err(_), Some(e)) => Err(e),
            (r, _) => r.py(),
        }
    }
}

/// Keyword options shared by `enqueue` and the dicts of `enqueue_many`.
#[derive(Default)]
pub(super) struct TaskArgs<'py> {
    pub(super) queue: Option<Bound<'py, PyAny>>,
    pub(super) priority: Option<Bound<'py, PyAny>>,
    pub(super) delay: Option<Bound<'py, PyAny>>,
    pub(super) run_after: Option<Bound<'py, PyAny>>,
    pub(super) max_attempts: Option<Bound<'py, PyAny>>,
    pub(super) idempotency_key: Option<Bound<'py, PyAny>>,
    pub(super) requires: Option<Bound<'py, PyAny>>,
    pub(super) timeout: Option<Bound<'py, PyAny>>,
    pub(super) retry: Option<Bound<'py, PyAny>>,
    // Dependencies (`enqueue(..., after=[...])`).
    pub(super) after: Option<Bound<'py, PyAny>>,
    pub(super) on_dependency_failure: Option<Bound<'py, PyAny>>,
}

/// The argument when it was given and is not None.
pub(super) fn given<'a, 'py>(o: &'a Option<Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    o.as_ref().filter(|v| !v.is_none())
}

pub(super) fn build_task(
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
    if let Some(q) = given(&a.queue) {
        t.queue = str_arg(q, "queue")?;
    }
    if let Some(p) = given(&a.priority) {
        t.priority = int_arg(p, "priority")?;
    }
    if let Some(d) = given(&a.delay) {
        t.delay_ms = Some(duration_arg(d, "delay", Least::Zero)?);
    }
    if let Some(r) = given(&a.run_after) {
        t.run_after = Some(instant_ms(r, "run_after")?);
    }
    if let Some(m) = given(&a.max_attempts) {
        t.max_attempts = int_arg(m, "max_attempts")?;
    }
    if let Some(k) = given(&a.idempotency_key) {
        t.idempotency_key = Some(str_arg(k, "idempotency_key")?);
    }
    if let Some(r) = given(&a.requires) {
        t.requires = Some(to_object(r, "requires")?);
    }
    if let Some(s) = given(&a.timeout) {
        t.timeout_ms = Some(duration_arg(s, "timeout", Least::Positive)?);
    }
    if let Some(r) = given(&a.retry) {
        t.retry = Some(retry_overrides(r)?);
    }
    super::dependencies::set_after(&mut t, given(&a.after), given(&a.on_dependency_failure))?;
    Ok(t)
}

pub(super) fn retry_overrides(obj: &Bound<PyAny>) -> PyResult<RetryOverrides> {
    let v = to_object(obj, "retry")?;
    serde_json::from_value::<RetryOverrides>(serde_json::Value::Object(v)).map_err(|e| {
        invalid(format!(
            "retry must be a dict with any of the keys base, factor, cap, jitter (numbers): {e}"
        ))
    })
}

pub(super) fn task_ref(task: &Bound<PyAny>, what: &str) -> PyResult<(Py<PyTask>, Lease)> {
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
        LeaseLost::new_err(format!(
            "task {} carries no lease token: only a Task returned by claim() can be completed, failed, renewed or reported on",
            t.get().row.id
        ))
    })?;
    Ok((t.clone().unbind(), lease))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn claim_request(
    worker_id: &Bound<PyAny>,
    strategy: Option<Bound<PyAny>>,
    queues: Option<Bound<PyAny>>,
    types: Option<Bound<PyAny>>,
    capabilities: Option<Bound<PyAny>>,
    lease: Option<Bound<PyAny>>,
    limit: &Bound<PyAny>,
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
        req.lease_ms = duration_arg(l, "lease", Least::Positive)?;
        if req.lease_ms <= 0 {
            return Err(invalid(format!(
                "lease must be a positive number of seconds, got {l}"
            )));
        }
    }
    let max = crate::model::claim::MAX_CLAIM_BATCH as i64;
    req.limit = match int_arg(limit, "limit") {
        Ok(n) if n < 1 => return Err(invalid(format!("limit must be at least 1, got {n}"))),
        Ok(n) if n <= max => n as usize,
        _ => {
            return Err(invalid(format!(
                "limit must be between 1 and {max}, got {limit}"
            )))
        }
    };
    Ok(req)
}

/// Items of complete_many: Tasks or (Task, result) pairs.
pub(super) fn completions(items: &Bound<PyAny>) -> PyResult<Vec<(Lease, Option<String>)>> {
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

/// Items of fail_many and settle: (Task, error), (Task, error, retry) or (Task, error, retry,
/// traceback).
pub(super) fn failures(items: &Bound<PyAny>) -> PyResult<Vec<Failure>> {
    const SHAPE: &str =
        "each item must be a (task, error), (task, error, retry) or (task, error, retry, traceback) tuple";
    let mut batch = Vec::new();
    for item in items.try_iter().map_err(|_| {
        invalid("items must be an iterable of (task, error[, retry[, traceback]]) tuples")
    })? {
        let item = item?;
        let t = item.cast::<PyTuple>().map_err(|_| invalid(SHAPE))?;
        if !(2..=4).contains(&t.len()) {
            return Err(invalid(SHAPE));
        }
        let (_, lease) = task_ref(&t.get_item(0)?, "task")?;
        let retry = if t.len() >= 3 {
            t.get_item(2)?.is_truthy()?
        } else {
            true
        };
        let traceback = if t.len() == 4 {
            Some(t.get_item(3)?)
        } else {
            None
        };
        batch.push(failure(lease, &t.get_item(1)?, retry, traceback.as_ref())?);
    }
    Ok(batch)
}

/// A failed attempt: `error` is an exception (its traceback is taken from it) or any object
/// (its text); `traceback`, when given, is the traceback's text and wins.
pub(super) fn failure(
    lease: Lease,
    error: &Bound<PyAny>,
    retry: bool,
    traceback: Option<&Bound<PyAny>>,
) -> PyResult<Failure> {
    // Text that is not valid Unicode (a file name decoded with surrogateescape) is stored with
    // replacement characters, as the error is: a failure is never refused for its text.
    let traceback = match traceback.filter(|t| !t.is_none()) {
        Some(t) => Some(
            t.cast::<PyString>()
                .map_err(|_| invalid("traceback must be a str or None"))?
                .to_string_lossy()
                .into_owned(),
        ),
        None => exception_traceback(error)?,
    };
    Ok(Failure {
        lease,
        error: error_text(error)?,
        retry,
        traceback,
    })
}

/// The formatted traceback of an exception that was raised (with its chained causes), as
/// Python prints it; None for anything else, or an exception never raised.
pub(super) fn exception_traceback(err: &Bound<PyAny>) -> PyResult<Option<String>> {
    if !err.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        return Ok(None);
    }
    let tb = err.getattr("__traceback__")?;
    if tb.is_none() {
        return Ok(None);
    }
    let py = err.py();
    let lines = py
        .import("traceback")?
        .call_method1("format_exception", (err.get_type(), err, tb))?;
    let text = PyString::new(py, "").call_method1("join", (lines,))?;
    Ok(Some(
        text.cast::<PyString>()?.to_string_lossy().into_owned(),
    ))
}

pub(super) fn error_text(err: &Bound<PyAny>) -> PyResult<String> {
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

pub(super) fn tasks_to_py(
    py: Python<'_>,
    rows: Vec<crate::model::task::TaskRow>,
) -> PyResult<Bound<'_, PyList>> {
    PyList::new(py, rows.into_iter().map(PyTask::new))
}

pub(super) fn status_arg(obj: &Bound<PyAny>) -> PyResult<Status> {
    let s: String = obj.extract().map_err(|_| {
        invalid("status must be one of 'queued', 'running', 'completed', 'failed', 'cancelled'")
    })?;
    Status::parse(&s).py()
}

/// A wait in seconds (int, float or timedelta; `default` when None) as a Duration: zero or more,
/// at most 100 years.
pub(super) fn wait_arg(obj: Option<&Bound<PyAny>>, what: &str, default: f64) -> PyResult<Duration> {
    let ms = match obj.filter(|o| !o.is_none()) {
        Some(o) => duration_arg(o, what, Least::Zero)?,
        None => (default * 1000.0) as i64,
    };
    if ms < 0 {
        return Err(invalid(format!(
            "{what} must be a number of seconds >= 0, got {}",
            crate::model::time::secs_text(ms)
        )));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// A `change_token()` pair given back to `wait_for_change(since=...)`.
pub(super) fn change_token_arg(obj: &Bound<PyAny>) -> PyResult<(u64, i64)> {
    let bad = || invalid("since must be a token returned by change_token(): a pair of integers");
    let t = obj.cast::<PyTuple>().map_err(|_| bad())?;
    if t.len() != 2 {
        return Err(bad());
    }
    let generation = int_arg(&t.get_item(0)?, "since[0]")?;
    let version = int_arg(&t.get_item(1)?, "since[1]")?;
    Ok((u64::try_from(generation).map_err(|_| bad())?, version))
}

pub(super) fn strategy_arg(obj: Option<&Bound<PyAny>>) -> PyResult<Strategy> {
    match obj.filter(|o| !o.is_none()) {
        None => Ok(Strategy::Priority),
        Some(o) => {
            let name: String = o.extract().map_err(|_| {
                invalid("strategy must be 'fifo', 'lifo', 'priority' or 'weighted_random'")
            })?;
            Strategy::parse(&name).py()
        }
    }
}

/// A result as Python sees it: the serde form of a core type (dicts, lists, ints, strings), the
/// one way results leave the binding that are not `Task`-like classes.
pub(super) fn to_python<'py, T: Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(|e| invalid(e.to_string()))
}
