//! `Queue`'s maintenance methods; the work is in `crate::python::maintenance`.

use super::PyQueue;
use crate::python::args::*;
use crate::python::errors::ToPy;
use crate::python::maintenance;
use pyo3::prelude::*;

#[pymethods]
impl PyQueue {
    /// A consistent copy while others keep working; returns `{"path", "bytes", "pages",
    /// "removed_partials"}`. `progress(pages_done, pages_total)` is called between steps (at
    /// most every 0.1 s); an exception from it (or Ctrl-C) stops the backup and leaves
    /// `dest_path` as it was.
    #[pyo3(signature = (dest_path, *, overwrite=false, progress=None))]
    fn backup<'py>(
        &self,
        py: Python<'py>,
        dest_path: std::path::PathBuf,
        overwrite: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        maintenance::backup(py, self.handle()?, dest_path, overwrite, progress)
    }

    /// Replace the database file `target` (created if missing) with the backup file `backup`,
    /// safely: the backup is checked first, a target in use by any process is refused, and no
    /// stale WAL is left to replay (see the core's `maintenance::restore`). Returns `{"backup",
    /// "target", "bytes", "pages", "schema_version", "created"}`. `progress(pages_done,
    /// pages_total)` as for `backup`; an exception from it leaves the target as it was.
    #[staticmethod]
    #[pyo3(signature = (backup, target, *, progress=None))]
    fn restore<'py>(
        py: Python<'py>,
        backup: std::path::PathBuf,
        target: std::path::PathBuf,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        maintenance::restore(py, backup, target, progress)
    }

    #[pyo3(signature = (mode=None))]
    fn checkpoint<'py>(
        &self,
        py: Python<'py>,
        mode: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        maintenance::checkpoint(py, self.handle()?, mode)
    }

    /// Rebuild the file. `progress(ticks, None)` is called about every 0.1 s while it runs
    /// (VACUUM cannot tell how far it is); an exception from it (or Ctrl-C) interrupts the
    /// VACUUM, which then changes nothing.
    #[pyo3(signature = (*, progress=None))]
    fn vacuum(&self, py: Python<'_>, progress: Option<Py<PyAny>>) -> PyResult<()> {
        maintenance::vacuum(py, self.handle()?, progress)
    }

    fn analyze(&self, py: Python<'_>) -> PyResult<()> {
        let q = self.handle()?;
        py.detach(move || q.analyze()).py()
    }

    fn integrity_check(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let q = self.handle()?;
        py.detach(move || q.integrity_check()).py()
    }

    /// Delete finished tasks (and their logs) older than `older_than` (seconds or timedelta),
    /// `batch_size` tasks per transaction (other writers wait at most one batch). After each
    /// batch `progress(deleted, total)` is called; an exception from it (or Ctrl-C) stops the
    /// purge, keeping the batches already deleted.
    #[pyo3(signature = (*, older_than, statuses=None, batch_size=None, progress=None))]
    fn purge(
        &self,
        py: Python<'_>,
        older_than: &Bound<PyAny>,
        statuses: Option<&Bound<PyAny>>,
        batch_size: Option<&Bound<PyAny>>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<usize> {
        let q = self.handle()?;
        maintenance::purge(py, q, older_than, statuses, batch_size, progress)
    }

    /// Import the older Python queue's file (see `crate::adapters::legacy`). Returns the report as a dict.
    /// The GIL is released while importing; it is taken back only to call `progress(done, total)`
    /// after each batch (and to let Ctrl-C stop the import between batches: committed batches
    /// stay, and running it again resumes).
    #[pyo3(signature = (path, *, progress=None, batch_size=None))]
    fn import_legacy<'py>(
        &self,
        py: Python<'py>,
        path: std::path::PathBuf,
        progress: Option<Py<PyAny>>,
        batch_size: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        maintenance::import_legacy(py, self.handle()?, path, progress, batch_size)
    }

    /// Check an old file and count what it holds, without importing or writing anything.
    #[staticmethod]
    fn inspect_legacy<'py>(
        py: Python<'py>,
        path: std::path::PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        let source = path.to_string_lossy().into_owned();
        let info = py
            .detach(move || crate::adapters::legacy::inspect_legacy(&source))
            .py()?;
        to_python(py, &info)
    }
}
