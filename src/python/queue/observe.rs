//! `Queue`'s observation: stats, metrics, positions, the change feed and wake-ups.

use super::PyQueue;
use crate::model::time::Least;
use crate::python::args::*;
use crate::python::convert::*;
use crate::python::errors::ToPy;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

#[pymethods]
impl PyQueue {
    #[pyo3(signature = (*, queue=None))]
    fn stats<'py>(
        &self,
        py: Python<'py>,
        queue: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let queue = opt_text(queue, "queue")?;
        let q = self.handle()?;
        let s = py.detach(move || q.stats(queue.as_deref())).py()?;
        to_python(py, &s)
    }

    /// Block until the database may have changed (a commit by any process) or `timeout` seconds
    /// pass; True on a change. The GIL is released while waiting. Idle workers sleep here.
    /// With `since` (a `change_token()`), a change is any commit after that token was taken,
    /// even one made before this call.
    #[pyo3(signature = (timeout=None, *, since=None))]
    fn wait_for_change(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<PyAny>>,
        since: Option<&Bound<PyAny>>,
    ) -> PyResult<bool> {
        let timeout = wait_arg(timeout, "timeout", 1.0)?;
        let since = since
            .filter(|s| !s.is_none())
            .map(change_token_arg)
            .transpose()?;
        let q = self.handle()?;
        match since {
            None => py.detach(move || q.wait_for_change(timeout)).py(),
            Some((generation, data_version)) => {
                let token = crate::model::changes::ChangeToken {
                    generation,
                    data_version,
                };
                let never = std::sync::atomic::AtomicBool::new(false);
                py.detach(move || q.wait_past(token, timeout, &never)).py()
            }
        }
    }

    /// Where the database stands now, for `wait_for_change(since=...)`: an opaque pair.
    fn change_token(&self, py: Python<'_>) -> PyResult<(u64, i64)> {
        let q = self.handle()?;
        let t = py.detach(move || q.change_token()).py()?;
        Ok((t.generation, t.data_version))
    }

    /// Wake every thread of this process blocked in wait_for_change (e.g. to stop a worker).
    fn wake(&self, py: Python<'_>) -> PyResult<()> {
        let q = self.handle()?;
        py.detach(move || q.notify_local());
        Ok(())
    }

    /// Health numbers; rates, percentiles and retries over the last `window` seconds (or a
    /// timedelta). The keys are listed in docs/architecture.md ("Observability").
    #[pyo3(signature = (*, window=None))]
    fn metrics<'py>(
        &self,
        py: Python<'py>,
        window: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let window_ms = match window.filter(|w| !w.is_none()) {
            Some(w) => duration_arg(w, "window", Least::Positive)?,
            None => crate::model::observe::DEFAULT_WINDOW_MS,
        };
        let q = self.handle()?;
        let v = py.detach(move || q.metrics_over(window_ms)).py()?;
        to_python(py, &v)
    }

    /// How many queued, due tasks of its queue (every type) a worker runs before this one
    /// under `strategy` (0: next); None when the task is not queued. See `crate::storage::sqlite::position`.
    #[pyo3(signature = (task_id, *, strategy=None))]
    fn position(
        &self,
        py: Python<'_>,
        task_id: TaskId,
        strategy: Option<&Bound<PyAny>>,
    ) -> PyResult<Option<i64>> {
        let s = strategy_arg(strategy)?;
        let q = self.handle()?;
        py.detach(move || q.position(task_id.0, s)).py()
    }

    /// A change cursor at the present, for `changes_since` (the feed under `events.watch`).
    #[pyo3(signature = (*, queues=None))]
    fn change_cursor(
        &self,
        py: Python<'_>,
        queues: Option<&Bound<PyAny>>,
    ) -> PyResult<crate::python::changes::PyChangeCursor> {
        crate::python::changes::change_cursor(py, self.handle()?, queues)
    }

    /// Wait (GIL released) up to `timeout` seconds for a commit since the cursor's last look,
    /// no sooner than `min_gap` after it, then look: `(changes, more)`, each change a tuple
    /// `(kind, id, type, queue, status, progress, step, message, at_ms, attempts, max_attempts,
    /// worker, error)`. `timeout=0` looks at once. See `crate::storage::sqlite::changes` for what is reported.
    #[pyo3(signature = (cursor, *, timeout=None, min_gap=None, limit=None))]
    fn changes_since<'py>(
        &self,
        py: Python<'py>,
        cursor: Py<crate::python::changes::PyChangeCursor>,
        timeout: Option<&Bound<'py, PyAny>>,
        min_gap: Option<&Bound<'py, PyAny>>,
        limit: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyList>, bool)> {
        let timeout = wait_arg(timeout, "timeout", 0.0)?;
        let min_gap = wait_arg(min_gap, "min_gap", 0.0)?;
        let limit = match limit.filter(|l| !l.is_none()) {
            Some(l) => int_in(
                l,
                "limit",
                1,
                crate::model::changes::MAX_CHANGES_LIMIT as i64,
            )? as usize,
            None => 1000,
        };
        crate::python::changes::changes_since(py, self.handle()?, cursor, timeout, min_gap, limit)
    }

    /// `{queue: {"queued": n, "running": n}}` for each of `queues`.
    fn queue_depths<'py>(
        &self,
        py: Python<'py>,
        queues: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        crate::python::changes::queue_depths(py, self.handle()?, queues)
    }

    /// The query plan of the claim statement for `strategy` (one line per plan step).
    #[pyo3(signature = (strategy=None))]
    fn explain_claim(
        &self,
        py: Python<'_>,
        strategy: Option<&Bound<PyAny>>,
    ) -> PyResult<Vec<String>> {
        let s = strategy_arg(strategy)?;
        let q = self.handle()?;
        py.detach(move || q.explain_claim(s)).py()
    }
}
