//! The change feed under `prismq_queue.events` (see `crate::changes`): a cursor object and the
//! calls `Queue.change_cursor`, `Queue.changes_since` and `Queue.queue_depths` forward to.

use super::convert::names_arg;
use super::errors::{invalid, ToPy};
use crate::changes::ChangeCursor;
use crate::queue::Queue;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
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

fn seconds(v: f64, what: &str) -> PyResult<Duration> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(invalid(format!(
            "{what} must be a number of seconds >= 0, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
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
    timeout: f64,
    min_gap: f64,
    limit: i64,
) -> PyResult<(Bound<'py, PyList>, bool)> {
    let timeout = seconds(timeout, "timeout")?;
    let min_gap = seconds(min_gap, "min_gap")?;
    if limit < 1 {
        return Err(invalid(format!("limit must be at least 1, got {limit}")));
    }
    let c = cursor.clone_ref(py);
    let out = py
        .detach(
            move || -> crate::error::Result<Option<crate::changes::Changes>> {
                let cur = c.get();
                let mut inner = cur.inner.lock();
                if !timeout.is_zero() && !q.wait_for_changes(&inner, timeout, min_gap, &cur.stop)? {
                    return Ok(None);
                }
                if cur.stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                q.changes_since(&mut inner, limit as usize).map(Some)
            },
        )
        .py()?;
    let Some(out) = out else {
        return Ok((PyList::empty(py), false));
    };
    let items = out
        .changes
        .into_iter()
        .map(|c| {
            PyTuple::new(
                py,
                [
                    c.kind.as_str().into_pyobject(py)?.into_any(),
                    c.id.into_pyobject(py)?.into_any(),
                    c.task_type.into_pyobject(py)?.into_any(),
                    c.queue.into_pyobject(py)?.into_any(),
                    c.status.as_str().into_pyobject(py)?.into_any(),
                    c.progress.into_pyobject(py)?.into_any(),
                    c.step.into_pyobject(py)?.into_any(),
                    c.message.into_pyobject(py)?.into_any(),
                    c.at.into_pyobject(py)?.into_any(),
                    c.attempts.into_pyobject(py)?.into_any(),
                    c.max_attempts.into_pyobject(py)?.into_any(),
                    c.worker.into_pyobject(py)?.into_any(),
                    c.error.into_pyobject(py)?.into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok((PyList::new(py, items)?, out.more))
}

pub fn queue_depths<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    queues: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let names = names_arg(queues, "queues")?;
    let depths = py.detach(move || q.queue_depths(&names)).py()?;
    let d = PyDict::new(py);
    for (name, (queued, running)) in depths {
        let e = PyDict::new(py);
        e.set_item("queued", queued)?;
        e.set_item("running", running)?;
        d.set_item(name, e)?;
    }
    Ok(d)
}
