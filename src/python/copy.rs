//! `prismq_queue.copy_queue(source, destination)`: one queue into another, any backend to any other
//! (`ops::copy`), with the GIL released and a progress callback that takes it back to report.

use super::args::{to_python, Callback};
use super::requests::queue_path;
use crate::ops::copy::CopyOptions;
use pyo3::prelude::*;

#[pyfunction]
#[pyo3(signature = (source, destination, *, progress=None, allow_live_leases=false))]
pub(super) fn copy_queue<'py>(
    py: Python<'py>,
    source: &Bound<'py, PyAny>,
    destination: &Bound<'py, PyAny>,
    progress: Option<Py<PyAny>>,
    allow_live_leases: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (from, to) = (queue_path(Some(source))?, queue_path(Some(destination))?);
    let opts = CopyOptions { allow_live_leases };
    let mut cb = Callback::new(progress);
    let r = py.detach(|| crate::ops::copy::copy(&from, &to, opts, &mut |d, t| cb.call(d, Some(t))));
    to_python(py, &cb.result(r)?)
}
