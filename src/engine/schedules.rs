//! Periodic tasks: define, list, pause, resume and remove schedules, and `run_schedules`, the
//! pass that enqueues what is due. Any number of processes may run passes at once (every
//! Worker does, on a timer): each due time is enqueued by the one pass whose transaction moves
//! the schedule past it (`Driver::schedule_fire`), with the idempotency key
//! `schedule:{name}:{due_ms}` as a second guard.

use crate::engine::queue::Queue;
use crate::model::error::{Error, Result};
use crate::model::schedule::{ScheduleFire, ScheduleRow, ScheduleSpec, MAX_DUE_PER_PASS};
use crate::model::time::now_ms;

impl Queue {
    /// Create or replace the schedule `spec.name` (checked first: nothing is written for a bad
    /// one). The same definition again changes nothing; a new one is next due after now.
    pub fn schedule(&self, spec: &ScheduleSpec) -> Result<ScheduleRow> {
        spec.validate(self.opts.max_payload_bytes)?;
        let next_run = spec.next_after(now_ms())?;
        self.driver.schedule_put(spec, next_run)
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.driver.schedule_list(None)
    }

    /// Stop enqueueing `name`'s due times until `resume_schedule`.
    pub fn pause_schedule(&self, name: &str) -> Result<ScheduleRow> {
        self.driver
            .schedule_set_paused(name, true, 0)?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_string()))
    }

    /// Resume `name`: the times that passed while it was paused are not enqueued (whatever its
    /// missed-times policy, which is for gaps no one chose); it is next due after now.
    pub fn resume_schedule(&self, name: &str) -> Result<ScheduleRow> {
        let row = self
            .driver
            .schedule_list(Some(name))?
            .pop()
            .ok_or_else(|| Error::ScheduleNotFound(name.to_string()))?;
        let resume_at = row.spec.next_after(now_ms())?;
        self.driver
            .schedule_set_paused(name, false, resume_at)?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_string()))
    }

    /// Remove `name`; false when there was none. Tasks it enqueued stay.
    pub fn unschedule(&self, name: &str) -> Result<bool> {
        self.driver.schedule_remove(name)
    }

    /// Enqueue every due time of every unpaused schedule at `now` (ms since the epoch; this
    /// process's clock when `None`), as each schedule's missed-times policy says. Returns how
    /// many tasks this pass enqueued; a schedule another pass fired meanwhile counts 0 here.
    pub fn run_schedules(&self, now: Option<i64>) -> Result<usize> {
        let now = now.unwrap_or_else(now_ms);
        let mut enqueued = 0;
        for row in self.driver.schedule_due(now, MAX_DUE_PER_PASS)? {
            let plan = match row.spec.plan(row.next_run, now) {
                Ok(p) => p,
                Err(e) => {
                    // A stored definition this build cannot evaluate (a time zone dropped from
                    // the database, say) must not stop the other schedules.
                    log::warn!(target: "prismq_queue::core::schedules",
                        "schedule {:?} skipped: {e}", row.spec.name);
                    continue;
                }
            };
            let fire = ScheduleFire {
                name: row.spec.name.clone(),
                revision: row.revision,
                expected_next_run: row.next_run,
                next_run: plan.next_run,
                last_run: *plan.due.last().unwrap_or(&row.next_run),
                tasks: plan.due.iter().map(|&at| row.spec.task_at(at)).collect(),
            };
            if self.driver.schedule_fire(&fire)? {
                enqueued += fire.tasks.len();
            }
        }
        Ok(enqueued)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::error::Error;
    use crate::model::schedule::{Missed, ScheduleOptions, ScheduleSpec};
    use crate::model::time::now_ms;

    fn every(name: &str, secs: i64) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            task_type: "tick".into(),
            queue: "default".into(),
            payload: "{\"n\":1}".into(),
            cron: None,
            every_ms: Some(secs * 1000),
            tz: "UTC".into(),
            missed: Missed::Skip,
            options: ScheduleOptions::default(),
        }
    }

    #[test]
    fn a_due_time_is_enqueued_once_and_the_same_definition_changes_nothing() {
        for (backend, q, _guard) in each_backend() {
            let first = q.schedule(&every("s", 60)).unwrap();
            let again = q.schedule(&every("s", 60)).unwrap();
            assert_eq!(first, again, "{backend}");
            let due = first.next_run;
            assert_eq!(q.run_schedules(Some(due - 1)).unwrap(), 0, "{backend}");
            assert_eq!(q.run_schedules(Some(due)).unwrap(), 1, "{backend}");
            assert_eq!(q.run_schedules(Some(due)).unwrap(), 0, "{backend}");
            let [t] = &q
                .driver
                .task_get_by_key(&format!("schedule:s:{due}"))
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>()[..]
            else {
                panic!("{backend}: no task")
            };
            assert_eq!((t.run_after, t.payload.as_str()), (due, "{\"n\":1}"));
            let row = &q.schedules().unwrap()[0];
            assert_eq!((row.last_run, row.next_run), (Some(due), due + 60_000));
        }
    }

    #[test]
    fn a_fire_with_a_stale_read_writes_nothing() {
        for (backend, q, _guard) in each_backend() {
            let row = q.schedule(&every("s", 60)).unwrap();
            let now = row.next_run;
            let plan = row.spec.plan(row.next_run, now).unwrap();
            let fire = crate::model::schedule::ScheduleFire {
                name: "s".into(),
                revision: row.revision,
                expected_next_run: row.next_run,
                next_run: plan.next_run,
                last_run: now,
                tasks: vec![row.spec.task_at(now)],
            };
            assert!(q.driver.schedule_fire(&fire).unwrap(), "{backend}");
            // A second scheduler that read the same row: nothing more.
            assert!(!q.driver.schedule_fire(&fire).unwrap(), "{backend}");
            assert_eq!(q.stats(None).unwrap().total, 1, "{backend}");
        }
    }

    #[test]
    fn pause_resume_and_remove() {
        for (backend, q, _guard) in each_backend() {
            let row = q.schedule(&every("s", 60)).unwrap();
            assert!(q.pause_schedule("s").unwrap().paused);
            assert_eq!(q.run_schedules(Some(row.next_run + 600_000)).unwrap(), 0);
            let resumed = q.resume_schedule("s").unwrap();
            assert!(!resumed.paused && resumed.next_run > now_ms(), "{backend}");
            assert!(matches!(
                q.pause_schedule("nope"),
                Err(Error::ScheduleNotFound(_))
            ));
            assert!(matches!(
                q.resume_schedule("nope"),
                Err(Error::ScheduleNotFound(_))
            ));
            assert!(q.unschedule("s").unwrap());
            assert!(!q.unschedule("s").unwrap());
            assert_eq!(q.stats(None).unwrap().total, 0, "{backend}");
        }
    }
}
