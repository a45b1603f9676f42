//! Core errors -> the exception classes defined in `prismq_queue/errors.py` (defined in Python so
//! they can inherit from both `QueueError` and `ValueError`/`KeyError`).

use crate::error::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let m = ERRORS_MODULE
        .get_or_try_init(py, || py.import("prismq_queue.errors").map(Bound::unbind))?;
    m.bind(py).getattr(name)
}

pub fn raise(py: Python<'_>, name: &str, msg: String) -> PyErr {
    match error_class(py, name).and_then(|cls| cls.call1((msg,))) {
        Ok(inst) => PyErr::from_value(inst),
        Err(e) => e,
    }
}

pub fn invalid(msg: impl Into<String>) -> PyErr {
    Python::attach(|py| raise(py, "InvalidArgument", msg.into()))
}

pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => raise(py, "InvalidArgument", msg),
            Error::TaskNotFound(id) => {
                match error_class(py, "TaskNotFound").and_then(|c| c.call1((msg, id))) {
                    Ok(inst) => PyErr::from_value(inst),
                    Err(err) => err,
                }
            }
            Error::LeaseLost(_) => raise(py, "LeaseLost", msg),
            Error::SchemaVersion { .. } => raise(py, "SchemaVersionError", msg),
            Error::Database(_) | Error::Busy(_) => raise(py, "DatabaseError", msg),
        }
    })
}

/// `.py()` turns a core result into a Python result.
pub trait ToPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> ToPy<T> for crate::error::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
