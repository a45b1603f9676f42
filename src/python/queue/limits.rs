//! `Queue`'s limits: set_limit, limits, remove_limit (checked by the core, see model::limits).

use super::PyQueue;
use crate::python::args::to_python;
use crate::python::convert::*;
use crate::python::errors::ToPy;
use pyo3::prelude::*;

#[pymethods]
impl PyQueue {
    /// Create or replace the limit of (queue, type); type None limits the whole queue.
    #[pyo3(signature = (queue, *, r#type=None, concurrency=None, per=None, rate=None))]
    fn set_limit(
        &self,
        py: Python<'_>,
        queue: &Bound<PyAny>,
        r#type: Option<&Bound<PyAny>>,
        concurrency: Option<&Bound<PyAny>>,
        per: Option<&Bound<PyAny>>,
        rate: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let queue = text_arg(queue, "queue")?;
        let task_type = opt_text(r#type, "type")?;
        let concurrency = opt_int(concurrency, "concurrency")?;
        let per = opt_text(per, "per")?;
        let rate = opt_text(rate, "rate")?;
        let q = self.handle()?;
        py.detach(move || {
            q.set_limit(
                &queue,
                task_type.as_deref(),
                concurrency,
                per.as_deref(),
                rate.as_deref(),
            )
        })
        .py()
    }

    /// Every limit with its figures (running, waiting, tokens), sorted by queue then type.
    fn limits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.handle()?;
        let l = py.detach(move || q.limits()).py()?;
        to_python(py, &l)
    }

    /// Remove the limit of (queue, type); False when there was none.
    #[pyo3(signature = (queue, *, r#type=None))]
    fn remove_limit(
        &self,
        py: Python<'_>,
        queue: &Bound<PyAny>,
        r#type: Option<&Bound<PyAny>>,
    ) -> PyResult<bool> {
        let queue = text_arg(queue, "queue")?;
        let task_type = opt_text(r#type, "type")?;
        let q = self.handle()?;
        py.detach(move || q.remove_limit(&queue, task_type.as_deref()))
            .py()
    }
}
