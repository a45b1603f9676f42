//! `Queue`'s run registry (`QueuedTaskManager`'s runs); the conversions are in
//! `crate::python::runs`.

use super::PyQueue;
use crate::python::convert::*;
use crate::python::task::PyTask;
use pyo3::prelude::*;
use pyo3::types::PyList;

#[pymethods]
impl PyQueue {
    /// Insert or replace a run of the run registry (`data`: the whole run, JSON text or a dict).
    #[pyo3(signature = (run_id, module_id, status, created_at, data, *, completed_at=None))]
    #[allow(clippy::too_many_arguments)]
    fn save_run(
        &self,
        py: Python<'_>,
        run_id: &Bound<PyAny>,
        module_id: &Bound<PyAny>,
        status: &Bound<PyAny>,
        created_at: &Bound<PyAny>,
        data: &Bound<PyAny>,
        completed_at: Option<&Bound<PyAny>>,
    ) -> PyResult<()> {
        let q = self.handle()?;
        crate::python::runs::save_run(
            py,
            q,
            run_id,
            module_id,
            status,
            created_at,
            data,
            completed_at,
        )
    }

    /// The JSON text of a run, or None.
    fn load_run(&self, py: Python<'_>, run_id: &Bound<PyAny>) -> PyResult<Option<String>> {
        crate::python::runs::load_run(py, self.handle()?, text_arg(run_id, "run_id")?)
    }

    /// JSON texts of runs, oldest first (or newest first), filtered by at most one of
    /// `status`, `module_id` and `active` (queued or running).
    #[pyo3(signature = (*, status=None, module_id=None, active=false, newest_first=false, limit=None))]
    fn list_runs(
        &self,
        py: Python<'_>,
        status: Option<&Bound<PyAny>>,
        module_id: Option<&Bound<PyAny>>,
        active: bool,
        newest_first: bool,
        limit: Option<&Bound<PyAny>>,
    ) -> PyResult<Vec<String>> {
        let status = opt_text(status, "status")?;
        let module_id = opt_text(module_id, "module_id")?;
        let limit = opt_int(limit, "limit")?;
        let q = self.handle()?;
        crate::python::runs::list_runs(py, q, status, module_id, active, newest_first, limit)
    }

    fn delete_run(&self, py: Python<'_>, run_id: &Bound<PyAny>) -> PyResult<bool> {
        crate::python::runs::delete_run(py, self.handle()?, text_arg(run_id, "run_id")?)
    }

    /// Delete runs that finished before `completed_before` (a datetime). Returns how many.
    fn purge_runs(&self, py: Python<'_>, completed_before: &Bound<PyAny>) -> PyResult<usize> {
        crate::python::runs::purge_runs(py, self.handle()?, completed_before)
    }

    /// Insert (or restart) the task row of an in-process run directly in `running`, leased to
    /// `worker_id`. Returns the Task with its lease, for complete/fail/renew.
    #[pyo3(signature = (run_id, r#type, payload=None, *, worker_id, queue=None, lease=None,
                        rerun_attempts=None, takeover_from=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_run(
        &self,
        py: Python<'_>,
        run_id: &Bound<PyAny>,
        r#type: &Bound<PyAny>,
        payload: Option<&Bound<PyAny>>,
        worker_id: &Bound<PyAny>,
        queue: Option<&Bound<PyAny>>,
        lease: Option<&Bound<PyAny>>,
        rerun_attempts: Option<&Bound<PyAny>>,
        takeover_from: Option<&Bound<PyAny>>,
    ) -> PyResult<PyTask> {
        let q = self.handle()?;
        crate::python::runs::start_run(
            py,
            q,
            run_id,
            r#type,
            payload,
            worker_id,
            queue,
            lease,
            rerun_attempts,
            takeover_from,
        )
    }

    /// Re-queue (types in `rerun_types`) or fail the interrupted runs of `queue`.
    #[pyo3(signature = (*, queue=None, rerun_types=None, rerun_queue=None, dead_holders=None))]
    fn recover_runs<'py>(
        &self,
        py: Python<'py>,
        queue: Option<&Bound<'py, PyAny>>,
        rerun_types: Option<&Bound<'py, PyAny>>,
        rerun_queue: Option<&Bound<'py, PyAny>>,
        dead_holders: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let q = self.handle()?;
        crate::python::runs::recover_runs(py, q, queue, rerun_types, rerun_queue, dead_holders)
    }
}
