//! The pyo3 binding: a thin layer that converts arguments, releases the GIL around every core
//! call and maps errors. Built only with the `python` feature (maturin turns it on).

mod args;
mod changes;
mod convert;
mod copy;
mod dependencies;
mod errors;
mod maintenance;
mod queue;
mod requests;
mod runs;
mod task;

use errors::ToPy;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

#[pymodule]
fn _prismq_queue(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<queue::PyQueue>()?;
    m.add_class::<task::PyTask>()?;
    m.add_class::<task::PyWorkerInfo>()?;
    m.add_class::<task::PyTaskLog>()?;
    m.add_class::<task::PyTaskAttempt>()?;
    m.add_class::<changes::PyChangeCursor>()?;
    m.add_function(wrap_pyfunction!(copy::copy_queue, m)?)?;
    m.add(
        "SCHEMA_VERSION",
        crate::storage::sqlite::schema::SCHEMA_VERSION,
    )?;
    m.add(
        "DEFAULT_MAX_PAYLOAD_BYTES",
        crate::model::options::DEFAULT_MAX_PAYLOAD_BYTES,
    )?;
    m.add("MIN_PRIORITY", crate::model::new_task::MIN_PRIORITY)?;
    m.add("MAX_PRIORITY", crate::model::new_task::MAX_PRIORITY)?;
    // The defaults the CLI and the web models show, from the one place that applies them.
    m.add("DEFAULT_PRIORITY", crate::model::new_task::DEFAULT_PRIORITY)?;
    m.add(
        "DEFAULT_MAX_ATTEMPTS",
        crate::model::new_task::DEFAULT_MAX_ATTEMPTS,
    )?;
    m.add("MAX_ERROR_BYTES", crate::model::attempt::MAX_ERROR_BYTES)?;
    m.add(
        "MAX_TRACEBACK_BYTES",
        crate::model::attempt::MAX_TRACEBACK_BYTES,
    )?;
    m.add(
        "MAX_ATTEMPT_RECORDS",
        crate::model::attempt::MAX_RECORDS_PER_TASK,
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let (sqlite_version, sqlite_options) = crate::storage::sqlite::db::sqlite_build().py()?;
    m.add("SQLITE_VERSION", sqlite_version)?;
    m.add(
        "SQLITE_COMPILE_OPTIONS",
        PyTuple::new(m.py(), sqlite_options)?,
    )?;
    // The core's own log records (targets `prismq_queue::core::*`: retries, dead letters,
    // rescued leases) go to Python's `logging` under the same dotted names. Logger objects are
    // cached, levels are not: each record asks `isEnabledFor`, so logging configured later (or
    // pytest's caplog) applies at once; the core only logs rare events, so that costs nothing.
    // Already installed (a second initialisation of this module): keep the first.
    let _ = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Loggers)?
        .filter(log::LevelFilter::Info)
        .install();
    Ok(())
}
