//! What the engine's statements run on: a connection ([`Conn`]), a transaction on one
//! ([`Tx`]), or a bare [`Client`] (tests, migrations). A `Conn` prepares each statement it
//! runs once and keeps it, so the server parses and plans it once (then, after a few runs,
//! keeps a generic plan) and a call is one round trip instead of two — most of the server's
//! work for a small statement, and so much of what a drain costs. A bare `Client` prepares
//! each statement every time, as the `postgres` crate does.
//!
//! The kept statements belong to their connection: [`Conn::reopen_if_closed`] forgets them
//! with it, and a statement that fails is forgotten too (the next run prepares it again —
//! after a schema change elsewhere, say).
//!
//! The engine's connections also carry the process's metrics (`tally`): a transaction
//! gathers what its statements counted and hands it over when it commits.

use std::collections::HashMap;
use std::sync::Arc;

use postgres::types::ToSql;
use postgres::{Client, GenericClient, Row, Statement, Transaction};

use crate::store::pg::migrate::{SchemaName, connect_for};
use crate::store::pg::tally::{Counted, PgMetrics};

/// A statement's parameters.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// How many statements a connection keeps: past this the cache starts over (statements
/// whose text varies with their input — a listing's filter, say — cannot make it grow
/// without bound).
const KEPT: usize = 256;

/// The statements a connection has prepared, by their text.
#[derive(Default)]
pub(crate) struct Prepared(HashMap<String, Statement>);

impl Prepared {
    fn get(
        &mut self,
        db: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        if self.0.len() >= KEPT {
            self.0.clear();
        }
        let statement = db.prepare(sql)?;
        self.0.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Runs `run` with `sql` prepared on `db` (kept in `cache` if there is one).
    fn run<D: GenericClient, T>(
        cache: Option<&mut Prepared>,
        db: &mut D,
        sql: &str,
        run: impl FnOnce(&mut D, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let Some(cache) = cache else {
            let statement = db.prepare(sql)?;
            return run(db, &statement);
        };
        let statement = cache.get(db, sql)?;
        let done = run(db, &statement);
        if done.is_err() {
            cache.0.remove(sql);
        }
        done
    }
}

/// The verbs of [`postgres::GenericClient`] the engine uses, with a statement cache where
/// there is one.
pub(crate) trait Sql {
    /// Runs `sql` and returns its rows.
    ///
    /// # Errors
    /// The server's.
    fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error>;

    /// Runs `sql`, which returns exactly one row.
    ///
    /// # Errors
    /// The server's, or one if the statement returns no row or several.
    fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error>;

    /// Runs `sql`, which returns at most one row.
    ///
    /// # Errors
    /// The server's, or one if the statement returns several rows.
    fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>, postgres::Error>;

    /// Runs `sql` and returns how many rows it changed.
    ///
    /// # Errors
    /// The server's.
    fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error>;

    /// Runs statements without parameters (the simple protocol; nothing is kept).
    ///
    /// # Errors
    /// The server's.
    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error>;

    /// Begins a transaction (a savepoint within one).
    ///
    /// # Errors
    /// The server's.
    fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error>;

    /// Whether what the statements change is counted for the metrics (`tally`): the
    /// engine's connections count, a bare `Client` does not.
    fn counts(&self) -> bool;

    /// Counts, for the metrics, what a statement that succeeded changed: on a transaction
    /// once it commits, on a connection at once (its statement has committed).
    fn count(&mut self, counted: Counted);
}

/// Implements [`Sql`] for a type with a `GenericClient` reached by `$db` and an optional
/// cache reached by `$cache`.
macro_rules! sql_verbs {
    ($self:ident, $db:expr, $cache:expr) => {
        fn query(&mut $self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
            Prepared::run($cache, $db, sql, |db, s| db.query(s, params))
        }

        fn query_one(&mut $self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error> {
            Prepared::run($cache, $db, sql, |db, s| db.query_one(s, params))
        }

        fn query_opt(
            &mut $self,
            sql: &str,
            params: Params<'_>,
        ) -> Result<Option<Row>, postgres::Error> {
            Prepared::run($cache, $db, sql, |db, s| db.query_opt(s, params))
        }

        fn execute(&mut $self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
            Prepared::run($cache, $db, sql, |db, s| db.execute(s, params))
        }

        fn batch_execute(&mut $self, sql: &str) -> Result<(), postgres::Error> {
            GenericClient::batch_execute($db, sql)
        }
    };
}

impl Sql for Client {
    sql_verbs!(self, self, None);

    fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        Ok(Tx {
            tx: Client::transaction(self)?,
            cache: None,
            counted: Counted::default(),
            into: Sink::Metrics(None),
        })
    }

    fn counts(&self) -> bool {
        false
    }

    fn count(&mut self, _counted: Counted) {}
}

/// A connection that keeps the statements it runs (see the module's documentation).
pub(crate) struct Conn {
    client: Client,
    cache: Prepared,
    /// Where what its transactions change is counted.
    metrics: Option<Arc<PgMetrics>>,
}

impl Conn {
    /// `client`, keeping its statements from now on.
    pub(crate) fn new(client: Client) -> Conn {
        Conn {
            client,
            cache: Prepared::default(),
            metrics: None,
        }
    }

    /// Counts what its committed statements change into `metrics`.
    pub(crate) fn counting(mut self, metrics: &Arc<PgMetrics>) -> Conn {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Whether the server closed the connection.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Replaces the connection with a new one ([`connect_for`] with `setup`), forgetting its
    /// statements, if the server closed it — a restart, a terminated backend, a cut network
    /// — so that the engine's next use of it works again. If the server cannot be reached
    /// yet, it stays closed (its next use fails with `Storage`, and the next call tries
    /// again) and the error is logged.
    pub(crate) fn reopen_if_closed(&mut self, url: &str, schema: &SchemaName, setup: &str) {
        if !self.client.is_closed() {
            return;
        }
        self.cache = Prepared::default();
        match connect_for(url, schema, setup) {
            Ok(fresh) => {
                tracing::info!(schema = schema.as_str(), "reconnected to PostgreSQL");
                self.client = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "PostgreSQL is not reachable yet"),
        }
    }
}

impl Sql for Conn {
    sql_verbs!(self, &mut self.client, Some(&mut self.cache));

    fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        Ok(Tx {
            tx: self.client.transaction()?,
            cache: Some(&mut self.cache),
            counted: Counted::default(),
            into: Sink::Metrics(self.metrics.clone()),
        })
    }

    fn counts(&self) -> bool {
        self.metrics.is_some()
    }

    fn count(&mut self, counted: Counted) {
        if let Some(metrics) = &self.metrics {
            metrics.record(&counted);
        }
    }
}

/// Where a transaction's counts go when it commits.
enum Sink<'a> {
    /// A transaction's: to its connection's metrics.
    Metrics(Option<Arc<PgMetrics>>),
    /// A savepoint's: to the transaction around it.
    Outer(&'a mut Counted),
}

/// A transaction, with its connection's statements if it keeps them, and what it counted.
pub(crate) struct Tx<'a> {
    tx: Transaction<'a>,
    cache: Option<&'a mut Prepared>,
    counted: Counted,
    into: Sink<'a>,
}

impl Tx<'_> {
    /// Commits it (a savepoint: releases it), and then counts what it counted.
    ///
    /// # Errors
    /// The server's (nothing of it is then stored, nor counted).
    pub(crate) fn commit(self) -> Result<(), postgres::Error> {
        self.tx.commit()?;
        match self.into {
            Sink::Metrics(Some(metrics)) => metrics.record(&self.counted),
            Sink::Metrics(None) => {}
            Sink::Outer(outer) => outer.append(self.counted),
        }
        Ok(())
    }
}

impl Sql for Tx<'_> {
    sql_verbs!(self, &mut self.tx, self.cache.as_deref_mut());

    fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        let counts = self.counts();
        Ok(Tx {
            tx: self.tx.transaction()?,
            cache: self.cache.as_deref_mut(),
            counted: Counted::default(),
            into: if counts {
                Sink::Outer(&mut self.counted)
            } else {
                Sink::Metrics(None)
            },
        })
    }

    fn counts(&self) -> bool {
        match &self.into {
            Sink::Metrics(metrics) => metrics.is_some(),
            Sink::Outer(_) => true,
        }
    }

    fn count(&mut self, counted: Counted) {
        self.counted.append(counted);
    }
}
