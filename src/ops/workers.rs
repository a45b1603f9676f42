//! Worker heartbeats and the list of workers.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::observe::Heartbeat;
use crate::model::observe::WorkerRow;

impl Queue {
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<()> {
        hb.validate()?;
        self.driver.worker_heartbeat(hb)
    }

    /// Every known worker, most recently seen first; `stale` when its last heartbeat is older
    /// than the queue's `stale_worker_after`.
    pub fn workers(&self) -> Result<Vec<WorkerRow>> {
        self.driver.worker_list()
    }

    /// Forget a worker (a clean shutdown). True when it was known.
    pub fn remove_worker(&self, worker_id: &str) -> Result<bool> {
        self.driver.worker_remove(worker_id)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::queue::testutil::each_backend;
    use crate::model::error::Error;
    use crate::model::observe::Heartbeat;

    #[test]
    fn a_heartbeat_without_a_worker_id_is_refused_and_writes_nothing() {
        for (_backend, q, _guard) in each_backend() {
            let mut hb = Heartbeat {
                worker_id: " ".into(),
                host: None,
                pid: None,
                capabilities: None,
                queues: None,
                tasks_done: None,
                concurrency: None,
            };
            let e = q.heartbeat(&hb).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m == "worker_id must be a non-empty string"),
                "{e:?}"
            );
            assert!(q.workers().unwrap().is_empty());
            hb.worker_id = "w1".into();
            q.heartbeat(&hb).unwrap();
            assert_eq!(q.workers().unwrap()[0].id, "w1");
            assert_eq!(q.workers().unwrap()[0].concurrency, None);
        }
    }

    /// A worker's concurrency is kept until a heartbeat says another; out of range is refused.
    #[test]
    fn a_heartbeat_keeps_the_worker_s_concurrency() {
        for (backend, q, _guard) in each_backend() {
            let mut hb = Heartbeat {
                worker_id: "w1".into(),
                host: None,
                pid: None,
                capabilities: None,
                queues: None,
                tasks_done: None,
                concurrency: Some(5),
            };
            q.heartbeat(&hb).unwrap();
            hb.concurrency = None; // not said: kept
            q.heartbeat(&hb).unwrap();
            assert_eq!(q.workers().unwrap()[0].concurrency, Some(5), "{backend}");
            for bad in [0, -1, crate::model::observe::MAX_CONCURRENCY + 1] {
                hb.concurrency = Some(bad);
                assert!(matches!(q.heartbeat(&hb), Err(Error::InvalidArgument(_))));
            }
            assert_eq!(q.workers().unwrap()[0].concurrency, Some(5), "{backend}");
        }
    }
}
