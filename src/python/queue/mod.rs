//! `prismq_queue.Queue`: argument checking and conversion, then the core call with the GIL
//! released. No queue logic lives here. The methods are split by meaning, one `#[pymethods]` block
//! per file (pyo3's `multiple-pymethods`): tasks, claims and acknowledgements, observation,
//! maintenance, and the run registry of `QueuedTaskManager`.

mod claims;
mod limits;
mod maintenance;
mod observe;
mod runs;
mod tasks;

use super::errors::{QueueError, ToPy};
use super::requests::{queue_options, queue_path};
use crate::engine::queue::Queue;
use parking_lot::RwLock;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::Arc;

#[pyclass(name = "Queue", module = "prismq_queue", frozen)]
pub struct PyQueue {
    inner: RwLock<Option<Arc<Queue>>>,
    path: String,
}

impl PyQueue {
    /// The core handle, or the error of a closed `Queue`.
    fn handle(&self) -> PyResult<Arc<Queue>> {
        self.inner.read().clone().ok_or_else(|| {
            QueueError::new_err(format!(
                "the Queue for {} is closed: open a new one",
                crate::model::paths::shown(&self.path)
            ))
        })
    }
}

#[pymethods]
impl PyQueue {
    #[new]
    #[pyo3(signature = (path=None, *, busy_timeout=None, synchronous=None,
                        max_payload_bytes=None, stale_worker_after=None))]
    fn new(
        py: Python<'_>,
        path: Option<&Bound<PyAny>>,
        busy_timeout: Option<&Bound<PyAny>>,
        synchronous: Option<&Bound<PyAny>>,
        max_payload_bytes: Option<&Bound<PyAny>>,
        stale_worker_after: Option<&Bound<PyAny>>,
    ) -> PyResult<Self> {
        let path = queue_path(path)?;
        let opts = queue_options(
            busy_timeout,
            synchronous,
            max_payload_bytes,
            stale_worker_after,
        )?;
        let p = path.clone();
        let q = py.detach(move || Queue::open(&p, opts)).py()?;
        // A URL is kept as the driver shows it, without its password (`path`, repr, errors).
        let path = if crate::storage::is_postgres_url(&path) {
            q.path().to_string()
        } else {
            path
        };
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
}
