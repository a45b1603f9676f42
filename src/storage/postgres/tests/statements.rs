//! The statement cache of pooled connections: one prepare per statement and connection, and a
//! statement the server no longer accepts (the schema changed under it) prepared afresh.

use super::util::TestDb;
use crate::storage::postgres::statements::Conn;

fn prepared(conn: &mut Conn) -> i64 {
    conn.client
        .query_one("SELECT count(*) FROM pg_prepared_statements", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_connection_prepares_each_statement_once() {
    let Some(db) = TestDb::new() else { return };
    let mut conn = Conn::from(db.client());
    let before = prepared(&mut conn);
    for i in 0..5i64 {
        let mut tx = conn.begin(|c| c.transaction()).unwrap();
        let row = tx.query_one("SELECT $1::bigint + 1", &[&i]).unwrap();
        assert_eq!(row.get::<_, i64>(0), i + 1);
        tx.commit().unwrap();
    }
    // `prepared` itself runs through the client's own (uncached, unnamed) statements.
    assert_eq!(prepared(&mut conn) - before, 1);
}

#[test]
fn a_statement_made_stale_by_a_schema_change_is_prepared_again() {
    let Some(db) = TestDb::new() else { return };
    let mut other = db.client();
    other
        .batch_execute(&format!(
            "CREATE SCHEMA {0}; CREATE TABLE {0}.cached (a int); INSERT INTO {0}.cached VALUES (1)",
            db.schema
        ))
        .unwrap();
    let mut conn = Conn::from(db.client());
    let read = |conn: &mut Conn| {
        let mut tx = conn.begin(|c| c.transaction()).unwrap();
        let r = tx.query("SELECT * FROM cached", &[]).map(|rows| rows.len());
        if r.is_ok() {
            tx.commit().unwrap();
        }
        r
    };
    assert_eq!(read(&mut conn).unwrap(), 1);
    other
        .batch_execute("ALTER TABLE cached ADD COLUMN b int")
        .unwrap();
    // The server refuses the old plan once ("cached plan must not change result type"); the
    // call after it prepares the statement again.
    let first = read(&mut conn);
    if let Err(e) = &first {
        let message = e.as_db_error().map(|d| d.message()).unwrap_or_default();
        assert!(message.contains("cached plan"), "{e:?}");
    }
    assert_eq!(read(&mut conn).unwrap(), 1);
}
