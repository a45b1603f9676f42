//! Backend selection: which driver a path or URL names. It sits above the drivers (it names
//! each of them), so the seam in `storage` (traits and params) imports none.

#[cfg(feature = "postgres")]
use super::postgres;
use super::sqlite;
use super::{is_postgres_url, CommitHook, Driver, Rules};
#[cfg(not(feature = "postgres"))]
use crate::model::error::Error;
use crate::model::error::Result;
use crate::model::options::QueueOptions;

/// Open the backend that `path` names (creating or migrating its schema): where a new backend
/// plugs in. A `postgresql://` (or `postgres://`) URL is a PostgreSQL database when the build
/// has the `postgres` feature; any other path is a SQLite file (`":memory:"`: a private
/// in-memory queue). The refusal without the feature is tested in `engine::queue` (through
/// `Queue::open`, which brings the engine's rules).
pub fn open(
    path: &str,
    opts: QueueOptions,
    on_commit: CommitHook,
    rules: &'static dyn Rules,
) -> Result<Box<dyn Driver>> {
    if is_postgres_url(path) {
        #[cfg(feature = "postgres")]
        return Ok(Box::new(postgres::PgDriver::open(
            path, opts, on_commit, rules,
        )?));
        // The URL is not repeated: it may hold a password.
        #[cfg(not(feature = "postgres"))]
        return Err(Error::invalid(
            "this build of prismq_queue lacks PostgreSQL support, so it cannot open a postgresql:// URL: \
             build it with the cargo feature `postgres`, or give the path of a SQLite file",
        ));
    }
    Ok(Box::new(sqlite::SqliteDriver::open(
        path, opts, on_commit, rules,
    )?))
}
