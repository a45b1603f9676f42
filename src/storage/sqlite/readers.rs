//! The read connections of a handle: a small pool, so a slow read (a stats count, a running
//! backup) never holds up a `get` in another thread.

use crate::model::error::Result;
use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

/// Most read connections one handle opens: enough for a web app's read threads to run side by
/// side; more would only compete for the same cores and hold more page cache.
const MAX_READERS: usize = 4;

/// Read connections, opened on demand up to `MAX_READERS`; a reader waits only when all of them
/// are busy. One connection is opened up front, so a bad path fails at `open`, not at a read.
pub(crate) struct ReaderPool {
    idle: Mutex<PoolState>,
    returned: Condvar,
    /// Opens one more configured read connection.
    open: Opener,
}

/// How the pool opens a read connection (given by `Db`, which knows the path and pragmas).
pub(crate) type Opener = Box<dyn Fn() -> Result<Connection> + Send + Sync>;

struct PoolState {
    idle: Vec<Connection>,
    opened: usize,
}

/// A connection taken from the pool; it goes back when dropped.
pub(crate) struct PooledReader<'a> {
    pool: &'a ReaderPool,
    conn: Option<Connection>,
}

impl PooledReader<'_> {
    pub(crate) fn get(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a pooled reader holds its connection until dropped")
    }
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.idle.lock().idle.push(c);
            self.pool.returned.notify_one();
        }
    }
}

impl ReaderPool {
    pub(crate) fn new(first: Connection, open: Opener) -> ReaderPool {
        ReaderPool {
            idle: Mutex::new(PoolState {
                idle: vec![first],
                opened: 1,
            }),
            returned: Condvar::new(),
            open,
        }
    }

    pub(crate) fn take(&self) -> Result<PooledReader<'_>> {
        let mut st = self.idle.lock();
        loop {
            if let Some(c) = st.idle.pop() {
                return Ok(PooledReader {
                    pool: self,
                    conn: Some(c),
                });
            }
            if st.opened < MAX_READERS {
                // Open outside the lock: it touches the file and may wait for a busy database.
                st.opened += 1;
                drop(st);
                let opened = (self.open)();
                return match opened {
                    Ok(c) => Ok(PooledReader {
                        pool: self,
                        conn: Some(c),
                    }),
                    Err(e) => {
                        self.idle.lock().opened -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            self.returned.wait(&mut st);
        }
    }
}
