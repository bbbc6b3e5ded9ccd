//! A spool on PostgreSQL (feature `postgres`): [`SpoolBuilder::connect_postgres`], its
//! options (the schema, the lease) and a temporary schema for tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::duration_ms;
use crate::error::Error;
use crate::options::Limits;
use crate::shared::{Shared, Spool};
use crate::spool::builder::SpoolBuilder;
use crate::store::{PgConfig, PgEngine};
use crate::sync::Waiters;

/// The schema a spool uses unless [`SpoolBuilder::postgres_schema`] names another.
pub const DEFAULT_POSTGRES_SCHEMA: &str = "taskspool";

/// How long a process's lease lasts without a heartbeat unless [`SpoolBuilder::lease`] says
/// otherwise: a process that dies has its running attempts rescued this long after its last
/// heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease [`SpoolBuilder::lease`] takes (heartbeats go out a third of it apart).
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// The PostgreSQL options of a builder.
#[derive(Debug, Clone)]
pub(super) struct PgOptions {
    schema: String,
    lease: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: DEFAULT_POSTGRES_SCHEMA.to_string(),
            lease: DEFAULT_LEASE,
        }
    }
}

impl SpoolBuilder {
    /// The PostgreSQL schema the spool keeps its tables in (feature `postgres`); default
    /// [`DEFAULT_POSTGRES_SCHEMA`]. Spools on one schema share one queue, whichever process
    /// or machine they run in; spools on different schemas of one database are apart. The
    /// name is checked when the spool connects: 1 to 48 lowercase letters, digits and
    /// underscores, not starting with a digit or `pg_`.
    pub fn postgres_schema(mut self, schema: impl Into<String>) -> Self {
        self.postgres.schema = schema.into();
        self
    }

    /// How long this process's lease on PostgreSQL lasts without a heartbeat (feature
    /// `postgres`); default [`DEFAULT_LEASE`], at least [`MIN_LEASE`]. The process renews
    /// it every third of its length while the spool is open, so a task that runs for hours
    /// is never rescued while its process lives; when the process dies (or cannot reach the
    /// server for longer than the lease), another process requeues its running attempts,
    /// each counted as a lost attempt (`WorkerLost`). A shorter lease rescues sooner after a
    /// crash; a longer one rides out longer pauses (a stalled VM, a failover).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.postgres.lease = lease;
        self
    }

    /// Connects to the PostgreSQL database at `url` (a `postgresql://` URL or a
    /// `key=value` connection string) and opens the queue in its schema
    /// ([`postgres_schema`](Self::postgres_schema)), creating or migrating the schema first.
    /// Any number of processes, on any number of machines, may open the same schema: they
    /// share the queue, and each runs the pools it starts.
    ///
    /// Every acknowledged change is committed on the server when the call returns (durable
    /// as the server's `synchronous_commit` makes it; the default is on). The options about
    /// the queue file — [`cache_size`](Self::cache_size),
    /// [`checkpoint_after`](Self::checkpoint_after), [`durability`](Self::durability),
    /// [`accept_log_damage`](Self::accept_log_damage),
    /// [`check_integrity`](Self::check_integrity) and
    /// [`control_socket`](Self::control_socket) — do not apply: other processes reach the
    /// queue through the database, not a socket. The results TTL, the clock and the
    /// default time limits do.
    ///
    /// # Errors
    /// `InvalidOption` for an invalid schema name, a lease shorter than [`MIN_LEASE`],
    /// a malformed URL or invalid default time limits; `Storage` if the server cannot be
    /// reached or refuses (the message says which); `NewerSchema` if a newer taskspool
    /// migrated the schema (nothing is changed).
    pub fn connect_postgres(self, url: &str) -> Result<Spool, Error> {
        let schema = self.postgres.schema.clone();
        self.connect(url, schema, false)
    }

    /// As [`connect_postgres`](Self::connect_postgres), on a new schema of its own (a
    /// random name starting with `taskspool_tmp_`), dropped with everything in it when the
    /// spool closes — for tests that want a fresh queue on a shared server, as
    /// [`temporary`](Self::temporary) gives one in a temporary directory. A process killed
    /// before it closes the spool leaves the schema behind.
    ///
    /// # Errors
    /// As [`connect_postgres`](Self::connect_postgres).
    pub fn connect_postgres_temporary(self, url: &str) -> Result<Spool, Error> {
        self.connect(url, temporary_schema(), true)
    }

    fn connect(self, url: &str, schema: String, temporary: bool) -> Result<Spool, Error> {
        let default_limits = Limits::checked(self.time_limit, self.soft_time_limit)?;
        let lease = self.postgres.lease;
        if lease < MIN_LEASE {
            return Err(Error::InvalidOption(format!(
                "a lease of {lease:?} is too short: heartbeats go out a third of it apart; \
                 use at least {MIN_LEASE:?}"
            )));
        }
        let waiters = Arc::new(Waiters::default());
        let path = PathBuf::from(format!("postgres/{schema}"));
        let config = PgConfig {
            schema,
            lease,
            temporary,
            clock: self.clock.clone(),
            result_ttl_ms: self.result_ttl.map(duration_ms),
        };
        let engine = PgEngine::open(url, config, waiters.clone())?;
        let shared = Shared::new(
            Box::new(engine),
            self.clock,
            waiters,
            path,
            None,
            default_limits,
        );
        Ok(Spool { shared })
    }
}

impl Spool {
    /// Opens the queue on the PostgreSQL database at `url`, in the schema
    /// [`DEFAULT_POSTGRES_SCHEMA`], with the default options (feature `postgres`): the one
    /// line that moves a service from `Spool::open("jobs.redb")` to a database that several
    /// processes and machines share. See [`SpoolBuilder::connect_postgres`].
    ///
    /// ```no_run
    /// let spool = taskspool::Spool::connect_postgres("postgresql://app@db.internal/jobs")?;
    /// # drop(spool);
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`SpoolBuilder::connect_postgres`].
    pub fn connect_postgres(url: &str) -> Result<Spool, Error> {
        SpoolBuilder::default().connect_postgres(url)
    }
}

/// A schema name no other spool uses: the process, the time and a counter.
fn temporary_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!(
        "taskspool_tmp_{:x}_{:x}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
