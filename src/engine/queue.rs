//! `Queue`: one handle on a queue. Thread-safe; open one per process (or more).
//! The engine's operations live in modules named for what they do (`enqueue`, `claim`, `ack`,
//! `admin`), the operations layer's in `ops`, each an `impl Queue` block; all of them reach the
//! database through the handle's `Driver`.

use super::wakeup::Wakeup;
use crate::model::error::Result;
use crate::model::options::QueueOptions;
use crate::storage::{self, Driver};

pub struct Queue {
    pub(crate) driver: Box<dyn Driver>,
    pub(crate) opts: QueueOptions,
    /// Wakes this handle's waiters on its own commits and on the driver's listener.
    pub(crate) wakeup: Wakeup,
    /// The queues' default execution timeouts as last read (`engine::timeouts`).
    pub(crate) timeouts: super::timeout_cache::TimeoutCache,
}

impl Queue {
    /// Open (creating or migrating) the queue database at `path`. `":memory:"` gives a private
    /// in-memory queue, useful in tests.
    pub fn open(path: &str, opts: QueueOptions) -> Result<Queue> {
        opts.validate()?;
        let wakeup = Wakeup::default();
        let on_commit = {
            let wakeup = wakeup.clone();
            Box::new(move || wakeup.notify())
        };
        let driver =
            storage::backends::open(path, opts.clone(), on_commit, &super::retry::QUEUE_RULES)?;
        Ok(Queue {
            driver,
            opts,
            wakeup,
            timeouts: Default::default(),
        })
    }

    /// Which clock this handle's leases end on: ("monotonic" or "wall", the boot id, the boot's
    /// sequence number in this file, None until a handle opened read-only first writes).
    pub fn lease_clock(&self) -> (&'static str, String, Option<i64>) {
        self.driver.lease_clock()
    }

    pub fn path(&self) -> &str {
        self.driver.path()
    }

    pub fn options(&self) -> &QueueOptions {
        &self.opts
    }

    /// The backend this handle runs on, for the operations only some backends have.
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A queue on a fresh file in a temporary directory (kept alive by the returned guard).
    pub fn file_queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let q = Queue::open(path.to_str().unwrap(), QueueOptions::default()).unwrap();
        (dir, q)
    }

    /// A fresh queue on each backend this build has, named: a SQLite file, and with the
    /// `postgres` feature a schema of its own on the tests' server (storage/postgres/tests/util.rs),
    /// unless those tests are skipped. Each comes with the guard that keeps its data (dropped
    /// after the queue).
    pub fn each_backend() -> Vec<(&'static str, Queue, Box<dyn std::any::Any>)> {
        let (dir, q) = file_queue();
        let sqlite: (&'static str, Queue, Box<dyn std::any::Any>) = ("sqlite", q, Box::new(dir));
        #[cfg(feature = "postgres")]
        if let Some(db) = crate::storage::postgres::tests::util::TestDb::new() {
            let q = Queue::open(&db.url, QueueOptions::default()).unwrap();
            return vec![sqlite, ("postgresql", q, Box::new(db))];
        }
        vec![sqlite]
    }
}

// Only a build without the feature refuses PostgreSQL URLs.
#[cfg(all(test, not(feature = "postgres")))]
mod tests {
    use super::*;

    #[test]
    fn without_the_feature_a_postgres_url_says_the_build_lacks_it() {
        let e = Queue::open(
            "postgresql://app:s3cret@db.example/app",
            QueueOptions::default(),
        )
        .err()
        .expect("refused");
        let text = e.to_string();
        assert!(
            matches!(e, crate::model::error::Error::InvalidArgument(_)),
            "{e:?}"
        );
        assert!(
            text.contains("lacks PostgreSQL support") && text.contains("`postgres`"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
