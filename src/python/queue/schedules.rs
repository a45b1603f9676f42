//! `Queue`'s periodic tasks: schedule, schedules, pause_schedule, resume_schedule, unschedule
//! and run_schedules (engine/schedules.rs). Schedules leave as dicts, their times as aware UTC
//! datetimes.

use super::PyQueue;
use crate::model::schedule::{Missed, ScheduleOptions, ScheduleRow, ScheduleSpec};
use crate::model::time::Least;
use crate::python::args::{build_task, given, TaskArgs};
use crate::python::convert::*;
use crate::python::errors::{invalid, ToPy};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The enqueue options a schedule takes, for messages.
const OPTIONS: &str = "priority, max_attempts, requires, timeout, retry";

#[pymethods]
impl PyQueue {
    /// Create or replace the schedule `name`; the same arguments again change nothing.
    #[pyo3(signature = (name, r#type, *, cron=None, every=None, payload=None, queue=None, tz=None,
                        missed=None, **enqueue_options))]
    #[allow(clippy::too_many_arguments)]
    fn schedule<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyAny>,
        r#type: &Bound<'py, PyAny>,
        cron: Option<Bound<'py, PyAny>>,
        every: Option<Bound<'py, PyAny>>,
        payload: Option<&Bound<'py, PyAny>>,
        queue: Option<Bound<'py, PyAny>>,
        tz: Option<Bound<'py, PyAny>>,
        missed: Option<Bound<'py, PyAny>>,
        enqueue_options: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Py<PyDict>> {
        let mut args = TaskArgs {
            queue,
            ..TaskArgs::default()
        };
        if let Some(opts) = enqueue_options {
            for (k, v) in opts.iter() {
                let key = k.cast::<PyString>()?.to_string();
                match key.as_str() {
                    "priority" => args.priority = Some(v),
                    "max_attempts" => args.max_attempts = Some(v),
                    "requires" => args.requires = Some(v),
                    "timeout" => args.timeout = Some(v),
                    "retry" => args.retry = Some(v),
                    "delay" | "run_after" | "idempotency_key" => {
                        return Err(invalid(format!(
                            "{key} is not an option of a schedule: each due time's task is due at \
                             that time (its run_after) and keyed schedule:NAME:DUE_MS; the options \
                             are {OPTIONS}"
                        )))
                    }
                    other => {
                        return Err(invalid(format!(
                        "unknown schedule option {other:?}: the options are cron, every, payload, \
                             queue, tz, missed and enqueue's {OPTIONS}"
                    )))
                    }
                }
            }
        }
        let task = build_task(r#type, payload, &args)?;
        let options = ScheduleOptions {
            priority: given(&args.priority).map(|_| task.priority),
            max_attempts: given(&args.max_attempts).map(|_| task.max_attempts),
            requires: task.requires,
            timeout_ms: task.timeout_ms,
            retry: task.retry,
        };
        let spec = ScheduleSpec {
            name: str_arg(name, "name")?,
            task_type: task.task_type,
            queue: task.queue,
            payload: task.payload,
            cron: given(&cron).map(|c| str_arg(c, "cron")).transpose()?,
            every_ms: given(&every)
                .map(|e| duration_arg(e, "every", Least::Positive))
                .transpose()?,
            tz: match given(&tz) {
                Some(t) => str_arg(t, "tz")?,
                None => "UTC".into(),
            },
            missed: match given(&missed) {
                Some(m) => Missed::parse(&str_arg(m, "missed")?).py()?,
                None => Missed::default(),
            },
            options,
        };
        let q = self.handle()?;
        let row = py.detach(move || q.schedule(&spec)).py()?;
        schedule_dict(py, &row)
    }

    /// Every schedule, by name.
    fn schedules(&self, py: Python<'_>) -> PyResult<Vec<Py<PyDict>>> {
        let q = self.handle()?;
        let rows = py.detach(move || q.schedules()).py()?;
        rows.iter().map(|r| schedule_dict(py, r)).collect()
    }

    fn pause_schedule(&self, py: Python<'_>, name: &Bound<PyAny>) -> PyResult<Py<PyDict>> {
        let (name, q) = (str_arg(name, "name")?, self.handle()?);
        let row = py.detach(move || q.pause_schedule(&name)).py()?;
        schedule_dict(py, &row)
    }

    fn resume_schedule(&self, py: Python<'_>, name: &Bound<PyAny>) -> PyResult<Py<PyDict>> {
        let (name, q) = (str_arg(name, "name")?, self.handle()?);
        let row = py.detach(move || q.resume_schedule(&name)).py()?;
        schedule_dict(py, &row)
    }

    fn unschedule(&self, py: Python<'_>, name: &Bound<PyAny>) -> PyResult<bool> {
        let (name, q) = (str_arg(name, "name")?, self.handle()?);
        py.detach(move || q.unschedule(&name)).py()
    }

    /// Enqueue what is due at `now` (a datetime or epoch seconds; this process's clock when
    /// None); returns how many tasks this call enqueued.
    #[pyo3(signature = (*, now=None))]
    fn run_schedules(&self, py: Python<'_>, now: Option<Bound<PyAny>>) -> PyResult<usize> {
        let now = given(&now).map(|n| instant_ms(n, "now")).transpose()?;
        let q = self.handle()?;
        py.detach(move || q.run_schedules(now)).py()
    }
}

fn schedule_dict(py: Python<'_>, row: &ScheduleRow) -> PyResult<Py<PyDict>> {
    let s = &row.spec;
    let d = PyDict::new(py);
    d.set_item("name", &s.name)?;
    d.set_item("type", &s.task_type)?;
    d.set_item("queue", &s.queue)?;
    d.set_item("cron", &s.cron)?;
    d.set_item("every", s.every_ms.map(|ms| ms as f64 / 1000.0))?;
    d.set_item("tz", &s.tz)?;
    d.set_item("payload", from_json(py, &s.payload)?)?;
    d.set_item("missed", s.missed.as_str())?;
    let o = &s.options;
    let options = PyDict::new(py);
    if let Some(p) = o.priority {
        options.set_item("priority", p)?;
    }
    if let Some(m) = o.max_attempts {
        options.set_item("max_attempts", m)?;
    }
    if let Some(r) = &o.requires {
        let text = serde_json::Value::Object(r.clone()).to_string();
        options.set_item("requires", from_json(py, &text)?)?;
    }
    if let Some(t) = o.timeout_ms {
        options.set_item("timeout", t as f64 / 1000.0)?;
    }
    if let Some(r) = &o.retry {
        let text = serde_json::to_string(r).map_err(|e| invalid(e.to_string()))?;
        options.set_item("retry", from_json(py, &text)?)?;
    }
    d.set_item("options", options)?;
    d.set_item("paused", row.paused)?;
    d.set_item("next_run", datetime(py, row.next_run)?)?;
    d.set_item("last_run", opt_datetime(py, row.last_run)?)?;
    d.set_item("created_at", datetime(py, row.created_at)?)?;
    d.set_item("updated_at", datetime(py, row.updated_at)?)?;
    Ok(d.unbind())
}
