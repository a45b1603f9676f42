//! Requests built from Python arguments, for the methods of `Queue` that take many: the queue's
//! options, the items of `enqueue_many`, a listing's filter, a heartbeat.

use super::args::{build_task, status_arg, TaskArgs};
use super::convert::*;
use super::errors::{invalid, InvalidArgument};
use crate::model::listing::ListFilter;
use crate::model::new_task::NewTask;
use crate::model::observe::Heartbeat;
use crate::model::options::{DbOptions, QueueOptions, DEFAULT_MAX_PAYLOAD_BYTES};
use crate::model::time::Least;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::time::Duration;

/// The queue file's path (`prismq_queue.db` when not given).
pub(super) fn queue_path(path: Option<&Bound<PyAny>>) -> PyResult<String> {
    Ok(match path.filter(|p| !p.is_none()) {
        None => "prismq_queue.db".to_string(),
        Some(p) => match p.extract::<std::path::PathBuf>() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(_) => return Err(invalid("path must be a str or os.PathLike")),
        },
    })
}

/// The options of `Queue(...)`, each checked; the defaults where not given.
pub(super) fn queue_options(
    busy_timeout: Option<&Bound<PyAny>>,
    synchronous: Option<&Bound<PyAny>>,
    max_payload_bytes: Option<&Bound<PyAny>>,
    stale_worker_after: Option<&Bound<PyAny>>,
) -> PyResult<QueueOptions> {
    let defaults = QueueOptions::default();
    let busy_timeout_ms = match busy_timeout.filter(|b| !b.is_none()) {
        Some(b) => match duration_arg(b, "busy_timeout", Least::Zero)? {
            ms if ms < 0 => {
                return Err(invalid(format!(
                    "busy_timeout must be a number of seconds >= 0, got {b}"
                )))
            }
            ms => ms,
        },
        None => defaults.db.busy_timeout.as_millis() as i64,
    };
    let synchronous = opt_text(synchronous, "synchronous")?.unwrap_or(defaults.db.synchronous);
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
    let stale_worker_after_ms = match stale_worker_after.filter(|s| !s.is_none()) {
        Some(s) => duration_arg(s, "stale_worker_after", Least::Positive)?,
        None => defaults.stale_worker_after_ms,
    };
    Ok(QueueOptions {
        db: DbOptions {
            // At most 100 years (duration_arg); Queue::open checks the options again.
            busy_timeout: Duration::from_millis(busy_timeout_ms.max(0) as u64),
            synchronous,
        },
        max_payload_bytes,
        stale_worker_after_ms,
    })
}

/// The items of `enqueue_many`: dicts with enqueue's keywords, each checked; an error names
/// the item.
pub(super) fn tasks_arg(items: &Bound<PyAny>) -> PyResult<Vec<NewTask>> {
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
            match utf8_ref(key, "a key of an item")? {
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
                    "after" => args.after = Some(v),
                    "on_dependency_failure" => args.on_dependency_failure = Some(v),
                    other => {
                        return Err(invalid(format!(
                            "item {i}: unknown key {other:?}; the keys are enqueue's: type, payload, queue, priority, delay, \
                             run_after, max_attempts, idempotency_key, requires, timeout, retry, after, \
                             on_dependency_failure"
                        )))
                    }
                }
        }
        let task_type =
            task_type.ok_or_else(|| invalid(format!("item {i}: 'type' is required")))?;
        let t = build_task(&task_type, payload.as_ref(), &args).map_err(|e| {
            Python::attach(|py| {
                if e.is_instance_of::<InvalidArgument>(py) {
                    invalid(format!("item {i}: {}", e.value(py)))
                } else {
                    e
                }
            })
        })?;
        tasks.push(t);
    }
    Ok(tasks)
}

/// The filter of `list`.
pub(super) fn list_filter(
    status: Option<Bound<PyAny>>,
    r#type: Option<&Bound<PyAny>>,
    queue: Option<&Bound<PyAny>>,
    limit: Option<&Bound<PyAny>>,
    after_id: Option<&Bound<PyAny>>,
    order: Option<&Bound<PyAny>>,
) -> PyResult<ListFilter> {
    let order = opt_text(order, "order")?;
    let limit = match limit.filter(|l| !l.is_none()) {
        Some(l) => int_in(l, "limit", 1, crate::model::listing::MAX_LIST_LIMIT)?,
        None => 100,
    };
    let descending = match order.as_deref().unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(invalid(format!(
                "order must be 'asc' or 'desc', not {other:?}"
            )))
        }
    };
    Ok(ListFilter {
        status: status
            .as_ref()
            .filter(|s| !s.is_none())
            .map(status_arg)
            .transpose()?,
        task_type: opt_text(r#type, "type")?,
        queue: opt_text(queue, "queue")?,
        limit,
        after_id: opt_int(after_id, "after_id")?,
        descending,
    })
}

/// A worker's heartbeat; the host and pid default to this process's.
#[allow(clippy::too_many_arguments)]
pub(super) fn heartbeat_arg(
    py: Python<'_>,
    worker_id: &Bound<PyAny>,
    capabilities: Option<&Bound<PyAny>>,
    queues: Option<&Bound<PyAny>>,
    host: Option<&Bound<PyAny>>,
    pid: Option<&Bound<PyAny>>,
    tasks_done: Option<&Bound<PyAny>>,
    concurrency: Option<&Bound<PyAny>>,
) -> PyResult<Heartbeat> {
    let pid = opt_int(pid, "pid")?;
    let tasks_done = opt_int(tasks_done, "tasks_done")?;
    let concurrency = opt_int(concurrency, "concurrency")?;
    let host = match opt_text(host, "host")? {
        Some(h) => Some(h),
        None => py
            .import("socket")?
            .call_method0("gethostname")?
            .extract()
            .ok(),
    };
    Ok(Heartbeat {
        worker_id: str_arg(worker_id, "worker_id")?,
        host,
        pid: Some(pid.unwrap_or(std::process::id() as i64)),
        capabilities: capabilities
            .filter(|v| !v.is_none())
            .map(|c| to_object(c, "capabilities").map(|m| serde_json::Value::Object(m).to_string()))
            .transpose()?,
        queues: queues
            .filter(|v| !v.is_none())
            .map(|v| names_arg(v, "queues").map(|n| serde_json::to_string(&n).unwrap()))
            .transpose()?,
        tasks_done,
        concurrency,
    })
}
