//! Wake-ups through LISTEN/NOTIFY: another handle's enqueue reaches a listening handle, and the
//! listener connects and listens again after its connection is killed; notifications name their
//! lane, wake only waiters claiming from it, and a burst is notified once per window.

use super::task;
use super::util::pg_or_skip;
use crate::model::claim::ClaimRequest;
use crate::storage::postgres::listener::{channel, due_lanes, sent, Interest, THROTTLE};
use crate::storage::postgres::PgDriver;
use postgres::fallible_iterator::FallibleIterator;
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

/// A waiter's handle: claims with `types` only (nothing to take), then listens; its events.
fn waiter_on(db: &super::util::TestDb, types: &[&str]) -> (PgDriver, Arc<AtomicU64>) {
    let q = db.open();
    let mut req = ClaimRequest::new("w1");
    req.filter.types = Some(types.iter().map(|t| t.to_string()).collect());
    q.claim(&req).unwrap();
    let events = Arc::new(AtomicU64::new(0));
    let seen = events.clone();
    assert!(q.listen(Box::new(move || {
        seen.fetch_add(1, Ordering::Relaxed);
    })));
    wait_past(&events, 0, "listening");
    wait_past(&events, 1, "looking again two windows later");
    (q, events)
}

fn lane_of(c: &mut postgres::Client, task_type: &str) -> i64 {
    c.query_one("SELECT id FROM lanes WHERE type = $1", &[&task_type])
        .unwrap()
        .get(0)
}

/// Send `end` on the channel, then count what `ears` (listening since before) heard up to it:
/// (all notifications, those naming `lane`).
fn heard_until_end(
    db: &super::util::TestDb,
    ears: &mut postgres::Client,
    lane: i64,
    end: &str,
) -> (u64, u64) {
    db.client()
        .execute("SELECT pg_notify($1, $2)", &[&channel(&db.schema), &end])
        .unwrap();
    let (mut all, mut naming) = (0, 0);
    let mut it = ears.notifications();
    let mut it = it.timeout_iter(Duration::from_secs(10));
    loop {
        let n = it.next().unwrap().expect("the end marker within 10 s");
        all += 1;
        if n.payload() == end {
            return (all, naming);
        }
        if n.payload().split(',').any(|l| l == lane.to_string()) {
            naming += 1;
        }
    }
}

#[test]
fn a_waiter_on_one_lane_is_not_woken_by_a_burst_on_another() {
    let Some(db) = super::util::TestDb::new() else {
        return;
    };
    let producer = db.open();
    producer.enqueue(&task("b", 1)).unwrap(); // lane B exists before the waiter's claim
    let (q, events) = waiter_on(&db, &["a"]);
    let mut ears = db.client();
    ears.batch_execute(&format!("LISTEN \"{}\"", channel(&db.schema)))
        .unwrap();
    let lane_b = lane_of(&mut db.client(), "b");
    let (before, heard_before) = (events.load(Ordering::Relaxed), q.notifications_heard());
    for _ in 0..200 {
        producer.enqueue(&task("b", 1)).unwrap();
    }
    // The end marker names lane B too: the waiter's listener must hear all of it, and wake for
    // none of it.
    let end = format!("{lane_b},{lane_b}");
    let (all, naming_b) = heard_until_end(&db, &mut ears, lane_b, &end);
    assert!(naming_b >= 1, "the burst on lane B notified");
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.notifications_heard() < heard_before + all {
        assert!(
            Instant::now() < deadline,
            "the waiter's listener heard the burst"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(events.load(Ordering::Relaxed), before, "woken by lane B");
    producer.enqueue(&task("a", 1)).unwrap();
    wait_past(&events, before, "an enqueue on lane A");
}

#[test]
fn a_burst_on_one_lane_is_notified_once_per_window_and_still_wakes_an_idle_waiter() {
    let Some(db) = super::util::TestDb::new() else {
        return;
    };
    let producer = db.open();
    producer.enqueue(&task("a", 1)).unwrap();
    let (_q, events) = waiter_on(&db, &["a"]);
    let mut ears = db.client();
    ears.batch_execute(&format!("LISTEN \"{}\"", channel(&db.schema)))
        .unwrap();
    let lane = lane_of(&mut db.client(), "a");
    let before = events.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for _ in 0..1000 {
        producer.enqueue(&task("a", 1)).unwrap();
    }
    let windows = (t0.elapsed().as_millis() / THROTTLE.as_millis()) as u64 + 1;
    let (_, sent) = heard_until_end(&db, &mut ears, lane, "end");
    assert!(
        sent >= 1 && sent <= windows,
        "{sent} notifications over {windows} windows"
    );
    assert!(sent < 1000 / 4, "{sent} notifications for 1,000 enqueues");
    wait_past(&events, before, "the idle waiter during the burst");

    // Once the window has passed, the next enqueue is notified at once and wakes the waiter.
    std::thread::sleep(THROTTLE);
    let before = events.load(Ordering::Relaxed);
    producer.enqueue(&task("a", 1)).unwrap();
    wait_past(&events, before, "an enqueue after the window");
    assert_eq!(heard_until_end(&db, &mut ears, lane, "end").1, 1);
}

#[test]
fn a_lane_is_throttled_only_by_notifications_that_committed() {
    let ch = format!("unit_{}", rand::random::<u64>());
    let t0 = Instant::now();
    assert_eq!(due_lanes(&ch, &[2, 1, 2], t0), vec![1, 2]);
    // Not recorded as sent (the transaction rolled back, or its COMMIT was lost): due again.
    assert_eq!(due_lanes(&ch, &[1], t0), vec![1]);
    sent(&ch, &[1], t0);
    assert_eq!(due_lanes(&ch, &[1, 2], t0 + THROTTLE / 2), vec![2]);
    assert_eq!(due_lanes(&ch, &[1], t0 + THROTTLE), vec![1]);
    assert!(due_lanes(&format!("{ch}_other"), &[1], t0).contains(&1));
}

#[test]
fn interest_wakes_for_claimed_unknown_or_unnamed_lanes_only() {
    let mut i = Interest::default();
    assert!(
        i.wakes(Some(&[7])),
        "a handle that never claimed wakes for every lane"
    );
    i.note(&[1], [1, 2].into_iter());
    assert!(i.wakes(None), "a payload naming no lane wakes");
    assert!(i.wakes(Some(&[1])));
    assert!(!i.wakes(Some(&[2])));
    assert!(i.wakes(Some(&[2, 1])));
    assert!(
        i.wakes(Some(&[3])),
        "a lane it has not read yet may be one it claims from"
    );
    i.note(&[], [3].into_iter());
    assert!(!i.wakes(Some(&[3])));
}
