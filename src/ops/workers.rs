//! Worker heartbeats and the list of workers.

use crate::engine::queue::Queue;
use crate::model::error::Result;
use crate::model::observe::Heartbeat;
use crate::model::observe::WorkerRow;

impl Queue {
    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<()> {
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
