//! Core errors -> the exception classes of `prismq_queue/errors.py`, imported by type (defined in
//! Python so they can inherit from both `QueueError` and `ValueError`/`KeyError`).

use crate::model::error::{DbErrorKind, Error};
use pyo3::prelude::*;

pyo3::import_exception!(prismq_queue.errors, QueueError);
pyo3::import_exception!(prismq_queue.errors, InvalidArgument);
pyo3::import_exception!(prismq_queue.errors, TaskNotFound);
pyo3::import_exception!(prismq_queue.errors, ScheduleNotFound);
pyo3::import_exception!(prismq_queue.errors, LeaseLost);
pyo3::import_exception!(prismq_queue.errors, SchemaVersionError);
pyo3::import_exception!(prismq_queue.errors, DatabaseError);
pyo3::import_exception!(prismq_queue.errors, DatabaseBusy);
pyo3::import_exception!(prismq_queue.errors, Unsupported);

/// A `DatabaseError` (or `DatabaseBusy`) of `kind` (see `DbErrorKind::as_str`).
pub fn database_error(kind: DbErrorKind, msg: String) -> PyErr {
    if kind == DbErrorKind::Busy {
        DatabaseBusy::new_err((msg, kind.as_str()))
    } else {
        DatabaseError::new_err((msg, kind.as_str()))
    }
}

pub fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(msg.into())
}

pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidArgument(_) => InvalidArgument::new_err(msg),
        Error::TaskNotFound(id) => TaskNotFound::new_err((msg, id)),
        Error::ScheduleNotFound(name) => ScheduleNotFound::new_err((msg, name)),
        Error::LeaseLost(_) | Error::NotHeld { .. } => LeaseLost::new_err(msg),
        Error::SchemaVersion { .. } => SchemaVersionError::new_err(msg),
        Error::Unsupported {
            backend, operation, ..
        } => Unsupported::new_err((msg, backend, operation)),
        Error::Database(_) | Error::Db { .. } | Error::Busy(_) => {
            database_error(e.db_kind().unwrap_or(DbErrorKind::Other), msg)
        }
    }
}

/// `.py()` turns a core result into a Python result.
pub trait ToPy<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> ToPy<T> for crate::model::error::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
