//! What the copy modules share (`copy`, `copy_settings`, `copy_waits`): reading a table's rows
//! and where one batch's writes stand. Apart from `copy`, which dispatches to the others.

use crate::model::claim::LaneKey;
use crate::model::error::Result;
use crate::storage::sqlite::claim::race::Race;
use crate::storage::sqlite::clock::Now;
use crate::storage::sqlite::db::WriteTx;
use rusqlite::{Connection, Row};

pub(super) fn all<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    f: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    Ok(conn
        .prepare_cached(sql)?
        .query_map(args, f)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Where the writes of one batch stand: the transaction, the clocks, lanes made so far.
pub(super) struct Writing<'t, 'c> {
    pub(super) tx: &'t WriteTx<'c>,
    pub(super) now: Now,
    pub(super) race: Race,
    pub(super) new_lanes: Vec<(LaneKey, i64)>,
}
