//! Wake-ups through LISTEN/NOTIFY: another handle's enqueue reaches a listening handle, and the
//! listener connects and listens again after its connection is killed.

use super::task;
use super::util::pg_or_skip;
use crate::storage::postgres::listener::channel;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wait until `events` passes `before`, failing after 10 s (no timing claim beyond that).
fn wait_past(events: &AtomicU64, before: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.load(Ordering::Relaxed) <= before {
        assert!(Instant::now() < deadline, "no event: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn another_handles_enqueue_wakes_the_listener_which_survives_a_killed_connection() {
    let (db, q) = pg_or_skip!();
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    assert!(q.listen(Box::new(move || {
        seen.fetch_add(1, Ordering::Relaxed);
    })));
    // The first event says the listener is up (changes before it were not heard).
    wait_past(&events, 0, "listening");
    let producer = db.open();
    let before = events.load(Ordering::Relaxed);
    producer.enqueue(&task("x", 1)).unwrap();
    wait_past(&events, before, "an enqueue by another handle");

    // Kill the listening connection: it connects again, says so, and hears the next enqueue.
    let listen = format!("LISTEN \"{}\"", channel(&db.schema));
    let before = events.load(Ordering::Relaxed);
    let killed: i64 = db
        .client()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
            &[&listen],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    wait_past(&events, before, "listening again");
    let before = events.load(Ordering::Relaxed);
    producer.enqueue(&task("x", 1)).unwrap();
    wait_past(&events, before, "an enqueue after the reconnect");
}
