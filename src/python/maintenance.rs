//! The maintenance methods of `Queue` (backup, restore, checkpoint, vacuum, purge,
//! import-legacy): arguments checked here, the work done with the GIL released, and a progress
//! callback that takes the GIL back only to report.

use super::args::{to_python, Callback};
use super::convert::{duration_arg, int_in, names_arg, opt_text};
use super::errors::{invalid, ToPy};
use crate::engine::queue::Queue;
use crate::model::maintenance::{MAX_BATCH, PURGE_BATCH};
use crate::model::task::Status;
use crate::model::time::Least;
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

pub(super) fn backup<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    dest_path: PathBuf,
    overwrite: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let dest = dest_path.to_string_lossy().into_owned();
    let mut cb = Callback::new(progress);
    let r = py.detach(|| q.backup_with(&dest, overwrite, &mut |d, t| cb.call(d, Some(t))));
    to_python(py, &cb.result(r)?)
}

pub(super) fn restore<'py>(
    py: Python<'py>,
    backup: PathBuf,
    target: PathBuf,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (backup, target) = (
        backup.to_string_lossy().into_owned(),
        target.to_string_lossy().into_owned(),
    );
    // A file restore only: a URL is no path (its "directory" would be shown, password and all).
    if crate::storage::is_postgres_url(&target) {
        return Err::<Bound<'py, PyAny>, _>(crate::model::error::Error::Unsupported {
            backend: "postgresql",
            operation: "restore",
            instead: "the database's own restore tool (pg_restore or psql, say)",
        })
        .py();
    }
    let mut cb = Callback::new(progress);
    let r = py.detach(|| {
        crate::storage::sqlite::maintenance::restore(&backup, &target, &mut |d, t| {
            cb.call(d, Some(t))
        })
    });
    to_python(py, &cb.result(r)?)
}

pub(super) fn checkpoint<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    mode: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mode = opt_text(mode, "mode")?.unwrap_or_else(|| "passive".into());
    let r = py.detach(move || q.checkpoint(&mode)).py()?;
    to_python(py, &r)
}

pub(super) fn vacuum(py: Python<'_>, q: Arc<Queue>, progress: Option<Py<PyAny>>) -> PyResult<()> {
    let cb = Arc::new(parking_lot::Mutex::new(Callback::new(progress)));
    let ticker = cb.clone();
    let mut ticks = 0u64;
    let r = py.detach(move || {
        q.vacuum_with(Box::new(move || {
            ticks += 1;
            ticker.lock().call(ticks, None)
        }))
    });
    let mut cb = cb.lock();
    cb.result(r)
}

/// A batch size of `purge` or `import_legacy` (None: `default`).
fn batch_size_arg(batch_size: Option<&Bound<PyAny>>, default: usize) -> PyResult<usize> {
    match batch_size.filter(|b| !b.is_none()) {
        Some(b) => Ok(int_in(b, "batch_size", 1, MAX_BATCH as i64)? as usize),
        None => Ok(default),
    }
}

pub(super) fn purge(
    py: Python<'_>,
    q: Arc<Queue>,
    older_than: &Bound<PyAny>,
    statuses: Option<&Bound<PyAny>>,
    batch_size: Option<&Bound<PyAny>>,
    progress: Option<Py<PyAny>>,
) -> PyResult<usize> {
    let batch_size = batch_size_arg(batch_size, PURGE_BATCH)?;
    let ms = duration_arg(older_than, "older_than", Least::Zero)?;
    if ms < 0 {
        return Err(invalid("older_than must be zero or positive"));
    }
    let statuses: Vec<Status> = match statuses.filter(|s| !s.is_none()) {
        None => vec![Status::Completed],
        Some(s) => names_arg(s, "statuses")?
            .iter()
            .map(|n| Status::parse(n).py())
            .collect::<PyResult<_>>()?,
    };
    let mut cb = Callback::new(progress);
    let r = py.detach(|| q.purge_with(ms, &statuses, batch_size, &mut |d, t| cb.call(d, Some(t))));
    cb.result(r)
}

pub(super) fn import_legacy<'py>(
    py: Python<'py>,
    q: Arc<Queue>,
    path: PathBuf,
    progress: Option<Py<PyAny>>,
    batch_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let batch_size = batch_size_arg(batch_size, crate::adapters::legacy::DEFAULT_BATCH_SIZE)?;
    let source = path.to_string_lossy().into_owned();
    // Every batch reports (no `Callback` throttling): a batch takes long enough on its own.
    let mut raised: Option<PyErr> = None;
    let report = py.detach(|| {
        let mut cb = |done: u64, total: u64| -> crate::model::error::Result<()> {
            Python::attach(|py| {
                let r = py.check_signals().and_then(|_| match &progress {
                    Some(f) => f.call1(py, (done, total)).map(drop),
                    None => Ok(()),
                });
                r.map_err(|e| {
                    raised = Some(e);
                    crate::model::error::Error::Database(
                        "import-legacy stopped by the caller".into(),
                    )
                })
            })
        };
        q.import_legacy_with(&source, batch_size, &mut cb)
    });
    if let Some(e) = raised {
        return Err(e);
    }
    to_python(py, &report.py()?)
}
