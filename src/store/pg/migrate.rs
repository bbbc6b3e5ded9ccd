//! Connecting to PostgreSQL, and the library's schema there: created and migrated by the
//! library, in a schema the user names, one numbered migration at a time. Every migration
//! runs in the transaction that records it, under an advisory lock on the schema's name, so
//! processes that start together migrate once; a database migrated by a newer taskspool is
//! refused before anything is changed.

use postgres::config::SslMode;
use postgres::{Client, NoTls};

use crate::error::Error;

/// One migration: its number, a name, and its SQL (`{schema}` stands for the quoted schema).
struct Migration {
    version: u64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in order. Until the PostgreSQL backend ships, migration 1 may still
/// change; from then on a change is a new migration.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "core",
    sql: include_str!("migrations/0001_core.sql"),
}];

/// The newest migration this build knows.
pub(crate) const LATEST: u64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// A schema name the library may put in its SQL: a plain lowercase identifier, quoted where
/// it is used (identifiers cannot be bound as parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaName(String);

impl SchemaName {
    /// # Errors
    /// `InvalidOption` unless `name` is 1–48 characters of `a-z`, `0-9` and `_`, not
    /// starting with a digit, and not a name PostgreSQL reserves (`pg_…`). (48: the wake-up
    /// channel, `taskspool_<schema>`, must fit PostgreSQL's 63-byte identifiers.)
    pub(crate) fn new(name: &str) -> Result<SchemaName, Error> {
        let plain = !name.is_empty()
            && name.len() <= 48
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit()
            && !name.starts_with("pg_");
        if !plain {
            return Err(Error::InvalidOption(format!(
                "PostgreSQL schema name {name:?} is not a plain identifier: use 1 to 48 \
                 lowercase letters, digits and underscores, not starting with a digit or `pg_` \
                 (for example \"taskspool\")"
            )));
        }
        Ok(SchemaName(name.to_string()))
    }

    /// The name as written in SQL.
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel wake-ups are notified on: work may be ready. Channel names are as
    /// `pg_notify` takes them; `LISTEN` takes them quoted.
    pub(crate) fn wake_channel(&self) -> String {
        format!("taskspool_{}", self.0)
    }

    /// The channel final states are notified on, with the task's id.
    pub(crate) fn done_channel(&self) -> String {
        format!("taskspool_{}_done", self.0)
    }

    /// The channel a revoke of a running attempt is notified on, with the task's id, for
    /// the process running it.
    pub(crate) fn stop_channel(&self) -> String {
        format!("taskspool_{}_stop", self.0)
    }

    /// The channel lifecycle events are notified on (JSON, `store::pg::events`), while any
    /// process has subscribers.
    pub(crate) fn events_channel(&self) -> String {
        format!("taskspool_{}_events", self.0)
    }
}

/// A PostgreSQL failure of `context`, with the server's own message when it sent one (the
/// client's `Display` of a server error says only "db error").
pub(super) fn pg(context: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| match e.as_db_error() {
        Some(db) => {
            let message = format!(
                "PostgreSQL: {context}: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            );
            Error::Storage {
                message,
                source: Some(std::sync::Arc::new(e)),
            }
        }
        None => Error::storage_from(&format!("PostgreSQL: {context}"), e),
    }
}

/// A connection to the server at `url` (a `postgres://` URL or `key=value` pairs).
/// Connections are plain: one that asks for TLS (`sslmode=require`) is refused up front,
/// rather than failing in a handshake this build cannot make.
///
/// # Errors
/// `InvalidOption` for a string that is not a connection string; `Unsupported` for
/// `sslmode=require`; `Storage` saying which server could not be reached and why.
pub(crate) fn connect(url: &str) -> Result<Client, Error> {
    let config: postgres::Config = url.parse().map_err(|e| {
        Error::InvalidOption(format!(
            "not a PostgreSQL connection string ({e}): give a postgres:// URL or key=value \
             settings such as `host=db user=app dbname=jobs`"
        ))
    })?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(Error::Unsupported {
            feature: "a TLS connection (sslmode=require: connections are plain; reach the \
                      server on a private network, a local socket or a tunnel)"
                .into(),
            engine: "PostgreSQL",
        });
    }
    config.connect(NoTls).map_err(|e| {
        Error::storage_from(
            "cannot connect to PostgreSQL (check the URL, that the server runs, and that it \
             accepts this user)",
            e,
        )
    })
}

/// A connection to the server at `url` for the engine on `schema`, named
/// `taskspool <schema>` (`application_name`, as `pg_stat_activity` shows it), with `setup`
/// (SQL, possibly empty) run on it.
///
/// # Errors
/// As [`connect`]; `Storage` if `setup` fails.
pub(crate) fn connect_for(url: &str, schema: &SchemaName, setup: &str) -> Result<Client, Error> {
    let mut client = connect(url)?;
    client
        .batch_execute(&format!(
            "SET application_name TO 'taskspool {}'; {setup}",
            schema.as_str()
        ))
        .map_err(pg("set up a connection"))?;
    Ok(client)
}

/// What [`migrate`] did: the schema's migration before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Migrated {
    pub(crate) from: u64,
    pub(crate) to: u64,
}

/// Brings `schema` to [`LATEST`], creating it if need be, in one transaction.
///
/// # Errors
/// `NewerSchema` if a newer taskspool migrated it further (nothing is changed); `Storage` on
/// a failure of the server (nothing is changed either: the transaction rolls back).
pub(crate) fn migrate(client: &mut Client, schema: &SchemaName) -> Result<Migrated, Error> {
    let q = schema.quoted();
    let mut tx = client.transaction().map_err(pg("begin a migration"))?;
    // Before the schema may exist: processes starting together wait here for each other.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('taskspool migrations ' || $1))",
        &[&schema.as_str()],
    )
    .map_err(pg("lock the schema for migration"))?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {q};
         CREATE TABLE IF NOT EXISTS {q}.migrations (
             version    bigint      PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .map_err(pg("create the schema"))?;
    let found: i64 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {q}.migrations"),
            &[],
        )
        .map_err(pg("read the schema's migration"))?
        .get(0);
    let found = u64::try_from(found).unwrap_or(0);
    if found > LATEST {
        return Err(Error::NewerSchema {
            schema: schema.as_str().to_string(),
            found,
            supported: LATEST,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(&m.sql.replace("{schema}", &q))
            .map_err(pg(&format!("apply migration {} ({})", m.version, m.name)))?;
        let version = i64::try_from(m.version).unwrap_or(i64::MAX);
        tx.execute(
            &format!("INSERT INTO {q}.migrations (version, name) VALUES ($1, $2)"),
            &[&version, &m.name],
        )
        .map_err(pg("record a migration"))?;
    }
    tx.commit().map_err(pg("commit a migration"))?;
    Ok(Migrated {
        from: found,
        to: LATEST.max(found),
    })
}
