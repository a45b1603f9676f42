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

#[test]
fn a_listen_url_gives_the_listener_a_connection_of_its_own_choosing() {
    let Some(db) = super::util::TestDb::new() else {
        return;
    };
    // Another role on the same server stands for the listen URL's session-pooling endpoint.
    let role = format!("l_{}", db.schema);
    db.client()
        .batch_execute(&format!("CREATE ROLE {role} LOGIN"))
        .unwrap();
    let listen_url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let listen_url = listen_url.split('?').next().unwrap().replace(':', "%3A");
    let listen_url = listen_url.replace('/', "%2F").replace('@', "%40");
    let q = crate::storage::postgres::PgDriver::open(
        &format!("{}&listen_url={listen_url}", db.url),
        crate::model::options::QueueOptions::default(),
        Box::new(|| {}),
        crate::testutil::RULES,
    )
    .unwrap();
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    assert!(q.listen(Box::new(move || {
        seen.fetch_add(1, Ordering::Relaxed);
    })));
    wait_past(&events, 0, "listening");
    let listen = format!("LISTEN \"{}\"", channel(&db.schema));
    let by: String = db
        .client()
        .query_one(
            "SELECT usename::text FROM pg_stat_activity WHERE query = $1",
            &[&listen],
        )
        .unwrap()
        .get(0);
    assert_eq!(by, role, "the listener connected with the listen URL");
    let before = events.load(Ordering::Relaxed);
    db.open().enqueue(&task("x", 1)).unwrap();
    wait_past(
        &events,
        before,
        "an enqueue heard through the listen URL's connection",
    );
    drop(q);
    let _ = db.client().batch_execute(&format!("DROP ROLE {role}"));
}
