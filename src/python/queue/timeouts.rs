//! `Queue`'s default execution timeout per queue (`engine::timeouts`).

use super::PyQueue;
use crate::model::time::Least;
use crate::python::convert::*;
use crate::python::errors::ToPy;
use pyo3::prelude::*;

#[pymethods]
impl PyQueue {
    /// Tasks of `queue` enqueued without a `timeout` run at most `timeout` seconds (a number or
    /// a timedelta, above 0); `None` lets them run without one. Shared by every process on this
    /// database; 300 s for a queue that never set one.
    #[pyo3(signature = (queue, timeout))]
    fn set_default_timeout(
        &self,
        py: Python<'_>,
        queue: &Bound<PyAny>,
        timeout: &Bound<PyAny>,
    ) -> PyResult<()> {
        let queue = str_arg(queue, "queue")?;
        let ms = if timeout.is_none() {
            None
        } else {
            Some(duration_arg(timeout, "default timeout", Least::Positive)?)
        };
        let q = self.handle()?;
        py.detach(move || q.set_default_timeout(&queue, ms)).py()
    }

    /// The default execution timeout of `queue` in seconds; `None`: its tasks run without one.
    fn default_timeout(&self, py: Python<'_>, queue: &Bound<PyAny>) -> PyResult<Option<f64>> {
        let queue = str_arg(queue, "queue")?;
        let q = self.handle()?;
        let ms = py.detach(move || q.default_timeout(&queue)).py()?;
        Ok(ms.map(|ms| ms as f64 / 1000.0))
    }
}
