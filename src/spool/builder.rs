//! Opening a spool: [`SpoolBuilder`] and its options (results TTL, durability, cache and
//! log sizes, the clock), and the defaults they start from.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, ManualClock, duration_ms};
use crate::error::Error;
use crate::options::Limits;
use crate::shared::{Shared, Spool};
use crate::store::{CHECKPOINT_BYTES, FileConfig, FileEngine};
use crate::sync::Waiters;

/// Results are kept this long after a task finishes, unless configured otherwise (Celery's
/// `result_expires` default).
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Options for opening a spool.
///
/// ```
/// use std::time::Duration;
/// use taskspool::Spool;
///
/// let spool = Spool::builder()
///     .result_ttl(Duration::from_secs(3600))
///     .temporary()?;
/// # drop(spool);
/// # Ok::<(), taskspool::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SpoolBuilder {
    pub(super) result_ttl: Option<Duration>,
    pub(super) clock: Clock,
    pub(super) cache_bytes: usize,
    pub(super) checkpoint_bytes: u64,
    pub(super) durability: Durability,
    pub(super) accept_log_damage: bool,
    pub(super) check_integrity: bool,
    pub(super) time_limit: Option<Duration>,
    pub(super) soft_time_limit: Option<Duration>,
    pub(super) control_socket: bool,
    #[cfg(test)]
    pub(super) disk: Option<Arc<crate::store::simdisk::SimDisk>>,
    /// The PostgreSQL schema and lease (feature `postgres`).
    #[cfg(feature = "postgres")]
    pub(super) postgres: super::postgres::PgOptions,
}

/// When a change the spool acknowledges is on disk.
///
/// Either way every change is written to the write-ahead log before it is acknowledged, so it
/// survives the process dying — a panic, `abort`, `kill -9` or the OOM killer — and a task that
/// was running then runs again after the reopen. The modes differ only for a power cut or a
/// kernel crash, which can lose what the OS has not yet written to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every acknowledged change is on disk when the call returns: `enqueue` returns after an
    /// `fdatasync`, and a task starts only once its claim is on disk. Concurrent callers share
    /// syncs (group commit). The default.
    #[default]
    Immediate,
    /// Changes are acknowledged once written to the OS, and synced within the given bound, like
    /// Redis's `appendfsync everysec`. A power cut or kernel crash loses at most the changes
    /// acknowledged during the last bound (plus one sync's time); [`Spool::flush`] syncs at
    /// once. A zero bound is [`Durability::Immediate`].
    Buffered(Duration),
}

/// The page cache redb may use unless configured otherwise. Memory stays bounded by it
/// whatever the backlog (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// How much write-ahead log accumulates before the queue file is checkpointed, unless
/// configured otherwise (see [`SpoolBuilder::checkpoint_after`]).
pub const DEFAULT_CHECKPOINT_BYTES: u64 = CHECKPOINT_BYTES;

impl Default for SpoolBuilder {
    fn default() -> Self {
        SpoolBuilder {
            result_ttl: Some(DEFAULT_RESULT_TTL),
            clock: Clock::System,
            cache_bytes: DEFAULT_CACHE_BYTES,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
            durability: Durability::Immediate,
            accept_log_damage: false,
            check_integrity: true,
            time_limit: None,
            soft_time_limit: None,
            control_socket: true,
            #[cfg(test)]
            disk: None,
            #[cfg(feature = "postgres")]
            postgres: super::postgres::PgOptions::default(),
        }
    }
}

impl SpoolBuilder {
    /// How long finished tasks (results, failures, expiries) are kept before the library
    /// deletes them. Default: one day.
    pub fn result_ttl(mut self, ttl: Duration) -> Self {
        self.result_ttl = Some(ttl);
        self
    }

    /// Keeps finished tasks forever (no pruning).
    pub fn keep_results_forever(mut self) -> Self {
        self.result_ttl = None;
        self
    }

    /// The most memory redb's page cache may use. Default [`DEFAULT_CACHE_BYTES`]; a larger
    /// cache speeds up very large backlogs at the cost of memory.
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// How many bytes of write-ahead log (`<file>.wal`) accumulate before the next commit
    /// checkpoints them into the queue file and the log starts over. Default
    /// [`DEFAULT_CHECKPOINT_BYTES`] (16 MiB).
    ///
    /// Every acknowledged change is durable in the log first; a checkpoint is one durable
    /// commit of the queue file, which costs a few syncs and makes the commit that carries it
    /// slower. A smaller value bounds the log's size, the memory redb holds for changes not
    /// yet checkpointed, and the time an open after a crash spends replaying the log (about
    /// 0.1–0.3 s per 16 MiB), at the cost of more frequent checkpoints.
    pub fn checkpoint_after(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes.max(1);
        self
    }

    /// When acknowledged changes are on disk: [`Durability::Immediate`] (the default) or
    /// [`Durability::Buffered`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens the file even if its write-ahead log (`<file>.wal`) is damaged, missing, cut
    /// short or belongs to another file, losing the acknowledged changes the damage took.
    /// What was found and what is lost is logged (`tracing`, at WARN). Without it, such an open
    /// fails with [`Error::Corrupt`], naming what was found, and leaves the log as it was (the
    /// queue file gets only the crash repair redb makes at any open after a crash).
    ///
    /// A torn record at the end of the log is what a crash leaves, and is never an error.
    pub fn accept_log_damage(mut self) -> Self {
        self.accept_log_damage = true;
        self
    }

    /// Whether to verify the checksum of every page of the queue file at open (redb's
    /// integrity check). On by default: damage to the file is then reported at open, as
    /// [`Error::Corrupt`], instead of surfacing later as missing tasks or failing reads. It
    /// reads the whole file: about 1 ms per 10k queued tasks, 95 ms for 1M (136 MiB) from
    /// the page cache, 210–250 ms from disk, measured on a 2-vCPU VM. Turn it off for very
    /// large files that open often.
    pub fn check_integrity(mut self, check: bool) -> Self {
        self.check_integrity = check;
        self
    }

    /// Whether to serve the control socket beside the file (`<file>.sock`, mode 0600,
    /// removed at close), through which another process reaches the live queue
    /// ([`Client::connect`](crate::Client::connect)). On by default. A socket that cannot be
    /// served (its path is longer than a Unix socket allows, about 100 bytes) is logged as a
    /// warning and the spool opens without it.
    pub fn control_socket(mut self, serve: bool) -> Self {
        self.control_socket = serve;
        self
    }

    /// The hard time limit of every attempt whose task sets none (Celery's
    /// `task_time_limit`); see [`Options::time_limit`](crate::Options::time_limit). Applied
    /// when an attempt starts, so a changed default applies to tasks already queued. Zero or
    /// over [`MAX_DELAY`](crate::MAX_DELAY) is refused at open.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The soft time limit of every attempt whose task sets none (Celery's
    /// `task_soft_time_limit`); see
    /// [`Options::soft_time_limit`](crate::Options::soft_time_limit). A soft limit that is not
    /// shorter than the attempt's hard limit (its own or this default) is not applied.
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.soft_time_limit = Some(limit);
        self
    }

    /// Power-loss tests: the queue file and its log live on a simulated disk.
    #[cfg(test)]
    pub(crate) fn on_sim_disk(mut self, disk: Arc<crate::store::simdisk::SimDisk>) -> Self {
        self.disk = Some(disk);
        self
    }

    /// Reads time from a [`ManualClock`] instead of the system clock (for tests).
    pub fn manual_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Clock::Manual(clock);
        self
    }

    /// Opens the queue file at `path`, creating it if it does not exist.
    ///
    /// Attempts that were running when the previous owner of the file died are requeued at
    /// once (each counts as an attempt).
    ///
    /// # Errors
    /// `InvalidOption` for invalid default time limits; `BadPath` if `path` is a directory
    /// or its directory does not exist; `AlreadyOpen` if
    /// another process or `Spool` holds the file; `Corrupt`, `NotAQueue` or
    /// `NewerFormat` if the file cannot be used (it is left untouched) — `Corrupt` also when
    /// its write-ahead log is damaged, missing or another file's (see
    /// [`accept_log_damage`](Self::accept_log_damage)), or when the file is empty or missing
    /// but the log beside it holds changes written since its last checkpoint;
    /// `Storage`/`DiskFull` on I/O failure.
    pub fn open(self, path: impl AsRef<Path>) -> Result<Spool, Error> {
        self.open_inner(path.as_ref().to_path_buf(), None)
    }

    /// Opens a new queue in a temporary directory, deleted when the spool is closed.
    ///
    /// # Errors
    /// `InvalidOption` for invalid default time limits; `Storage` if the temporary directory
    /// or file cannot be created.
    pub fn temporary(self) -> Result<Spool, Error> {
        let dir = tempfile::Builder::new()
            .prefix("taskspool-")
            .tempdir()
            .map_err(|e| Error::storage_from("cannot create a temporary directory", e))?;
        let path = dir.path().join("queue.redb");
        self.open_inner(path, Some(dir))
    }

    fn open_inner(self, path: PathBuf, temp: Option<tempfile::TempDir>) -> Result<Spool, Error> {
        let default_limits = Limits::checked(self.time_limit, self.soft_time_limit)?;
        let waiters = Arc::new(Waiters::default());
        let config = FileConfig {
            clock: self.clock.clone(),
            result_ttl_ms: self.result_ttl.map(duration_ms),
            cache_bytes: self.cache_bytes,
            checkpoint_bytes: self.checkpoint_bytes,
            buffered: match self.durability {
                Durability::Buffered(bound) if !bound.is_zero() => Some(bound),
                _ => None,
            },
            accept_log_damage: self.accept_log_damage,
            check_integrity: self.check_integrity,
            #[cfg(test)]
            disk: self.disk,
        };
        let engine = FileEngine::open(&path, config, waiters.clone())?;
        let shared = Shared::new(
            Box::new(engine),
            self.clock,
            waiters,
            path,
            temp,
            default_limits,
        );
        if self.control_socket {
            shared.serve_control(Arc::new(super::remote::Remote(Arc::downgrade(&shared))));
        }
        Ok(Spool { shared })
    }
}
