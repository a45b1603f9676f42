//! The pyo3 binding: a thin layer that converts arguments, releases the GIL around every core
//! call and maps errors. Built only with the `python` feature (maturin turns it on).

mod changes;
mod convert;
mod errors;
mod queue;
mod runs;
mod task;

use pyo3::prelude::*;

#[pymodule]
fn _prismq_queue(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<queue::PyQueue>()?;
    m.add_class::<task::PyTask>()?;
    m.add_class::<task::PyWorkerInfo>()?;
    m.add_class::<task::PyTaskLog>()?;
    m.add_class::<changes::PyChangeCursor>()?;
    m.add("SCHEMA_VERSION", crate::schema::SCHEMA_VERSION)?;
    m.add(
        "DEFAULT_MAX_PAYLOAD_BYTES",
        crate::queue::DEFAULT_MAX_PAYLOAD_BYTES,
    )?;
    m.add("MIN_PRIORITY", crate::enqueue::MIN_PRIORITY)?;
    m.add("MAX_PRIORITY", crate::enqueue::MAX_PRIORITY)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
