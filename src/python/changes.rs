//! The change feed under `prismq_queue.events` (see `crate::storage::sqlite::changes`): a cursor object and the
//! calls `Queue.change_cursor`, `Queue.changes_since` and `Queue.queue_depths` forward to.

use super::args::to_python;
use super::convert::names_arg;
use super::errors::ToPy;
use crate::engine::queue::Queue;
use crate::model::changes::{ChangeCursor, TaskChange};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one event stream has seen (opaque). `stop()` makes a `changes_since` waiting on it
/// return at once, from any thread.
#[pyclass(name = "ChangeCursor", module = "prismq_queue", frozen)]
pub struct PyChangeCursor {
    inner: Mutex<ChangeCursor>,
    stop: AtomicBool,
}

#[pymethods]
impl PyChangeCursor {
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    #[getter]
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

pub fn change_cursor(
    py: Python<'_>,
    q: Arc<Queue>,
    queues: Option<&Bound<PyAny>>,
) -> PyResult<PyChangeCursor> {
    let queues = queues
        .filter(|v| !v.is_none())
        .map(|v| names_arg(v, "queues"))
        .transpose()?;
    let cursor = py.detach(move || q.change_cursor(queues)).py()?;
    Ok(PyChangeCursor {
        inner: Mutex::new(cursor),
        stop: AtomicBool::new(false),
    })
}

pub fn changes_since<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    cursor: Py<PyChangeCursor>,
    timeout: Duration,
    min_gap: Duration,
    limit: usize,
) -> PyResult<(Bound<'py, PyList>, bool)> {
    let c = cursor.clone_ref(py);
    let out = py
        .detach(
            move || -> crate::model::error::Result<Option<crate::model::changes::Changes>> {
                let cur = c.get();
                let mut inner = cur.inner.lock();
                if !timeout.is_zero() && !q.wait_for_changes(&inner, timeout, min_gap, &cur.stop)? {
                    return Ok(None);
                }
                if cur.stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                q.changes_since(&mut inner, limit).map(Some)
            },
        )
        .py()?;
    let Some(out) = out else {
        return Ok((PyList::empty(py), false));
    };
    let events: Vec<_> = out.changes.iter().map(TaskChange::event).collect();
    Ok((to_python(py, &events)?.cast_into::<PyList>()?, out.more))
}

/// One queue's entry in `queue_depths()`: `{"queued": n, "running": n}`.
#[derive(serde::Serialize)]
struct QueueDepth {
    queued: i64,
    running: i64,
}

pub fn queue_depths<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    queues: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let names = names_arg(queues, "queues")?;
    let depths = py.detach(move || q.queue_depths(&names)).py()?;
    let depths: BTreeMap<String, QueueDepth> = depths
        .into_iter()
        .map(|(name, (queued, running))| (name, QueueDepth { queued, running }))
        .collect();
    Ok(to_python(py, &depths)?.cast_into::<PyDict>()?)
}
