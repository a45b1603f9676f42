//! Pooled connections that keep their prepared statements.
//!
//! The client prepares a statement given as text on every call (a round trip to parse it, then
//! one to run it); on a local server a round trip is most of what a small statement costs. Each
//! pooled connection keeps the statements it prepared, by their SQL, so an operation pays one
//! round trip per statement from its second call on. `Tx` is the transaction every operation
//! runs in: the same `query`/`execute` calls as `postgres::Transaction` (to which it derefs for
//! anything else), through that cache.

use postgres::row::Row;
use postgres::types::ToSql;
use postgres::{Client, Statement, Transaction};
use r2d2_postgres::r2d2;
use r2d2_postgres::PostgresConnectionManager;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

/// Statements a connection keeps at most; past it the cache starts over (SQL built at run time,
/// such as a listing's filters, must not grow it without bound).
const MAX_STATEMENTS: usize = 256;

/// A pooled connection and the statements prepared on it.
pub struct Conn {
    pub client: Client,
    statements: HashMap<String, Statement>,
}

impl From<Client> for Conn {
    fn from(client: Client) -> Conn {
        Conn {
            client,
            statements: HashMap::new(),
        }
    }
}

impl Conn {
    /// Begin a transaction with `begin` (plain or configured) that prepares through the cache.
    pub(crate) fn begin<'a>(
        &'a mut self,
        begin: impl FnOnce(&'a mut Client) -> Result<Transaction<'a>, postgres::Error>,
    ) -> Result<Tx<'a>, postgres::Error> {
        let tx = begin(&mut self.client)?;
        Ok(Tx {
            tx,
            statements: &mut self.statements,
            claimable: Vec::new(),
        })
    }
}

/// An error of the pool's connections, shown with its cause: r2d2 keeps only the text of the
/// last failed attempt to connect, and the client's own text is only its kind ("db error" for a
/// role refused, "error connecting to server" for a server down), so without this the caller
/// would not learn why.
#[derive(Debug)]
pub struct PoolError(pub postgres::Error);

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::errors::describe(&self.0))
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// r2d2's manager for `Conn`: the client crate's own, plus an empty cache per connection.
#[derive(Debug)]
pub struct Manager<T>(pub PostgresConnectionManager<T>);

impl<T> r2d2::ManageConnection for Manager<T>
where
    PostgresConnectionManager<T>:
        r2d2::ManageConnection<Connection = Client, Error = postgres::Error>,
{
    type Connection = Conn;
    type Error = PoolError;

    fn connect(&self) -> Result<Conn, PoolError> {
        Ok(Conn::from(self.0.connect().map_err(PoolError)?))
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), PoolError> {
        self.0.is_valid(&mut conn.client).map_err(PoolError)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// A transaction whose statements come from its connection's cache.
pub struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
    /// Lanes this transaction made a task claimable in, notified at its commit (`listener`).
    pub(crate) claimable: Vec<i64>,
}

impl Tx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// A failed statement may be one the server no longer accepts as prepared (another process
    /// migrated the schema: "cached plan must not change result type"): the next call prepares
    /// afresh.
    fn forget_on_error<T>(&mut self, r: Result<T, postgres::Error>) -> Result<T, postgres::Error> {
        if r.is_err() {
            self.statements.clear();
        }
        r
    }

    pub fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        let r = self.tx.query(&s, params);
        self.forget_on_error(r)
    }

    pub fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        let r = self.tx.query_one(&s, params);
        self.forget_on_error(r)
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        let r = self.tx.query_opt(&s, params);
        self.forget_on_error(r)
    }

    pub fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        let r = self.tx.execute(&s, params);
        self.forget_on_error(r)
    }

    pub fn commit(self) -> Result<(), postgres::Error> {
        self.tx.commit()
    }
}

impl<'a> Deref for Tx<'a> {
    type Target = Transaction<'a>;
    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl<'a> DerefMut for Tx<'a> {
    fn deref_mut(&mut self) -> &mut Transaction<'a> {
        &mut self.tx
    }
}
