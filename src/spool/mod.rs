//! The [`Spool`] handle: opening a queue file, enqueueing, and reading state back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, ManualClock, duration_ms};
use crate::error::Error;
use crate::model::{Revoke, Revoked, TaskFilter, TaskId};
use crate::options::{Limits, Options};
use crate::pool::WorkerBuilder;
use crate::registry::decode_json;
use crate::result::TaskHandle;
use crate::schedule::{Schedule, ScheduleDef, ScheduleInfo};
use crate::shared::Shared;
pub use crate::shared::Spool;
use crate::store::{CHECKPOINT_BYTES, FileConfig, FileEngine, NewTask, ScheduleOp};

mod chord;
mod flow;
mod follow_ups;
mod graph;
mod workflow;

use crate::sync::Waiters;
use crate::task::Task;
use crate::views::{Stats, TaskStatus};
pub use chord::ChordHandle;
pub use graph::{Step, StepId, StoredWorkflow, Workflow};
pub use workflow::{Chain, GroupHandle, Link};

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
    result_ttl: Option<Duration>,
    clock: Clock,
    cache_bytes: usize,
    checkpoint_bytes: u64,
    durability: Durability,
    accept_log_damage: bool,
    check_integrity: bool,
    time_limit: Option<Duration>,
    soft_time_limit: Option<Duration>,
    #[cfg(test)]
    disk: Option<Arc<crate::store::simdisk::SimDisk>>,
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
            #[cfg(test)]
            disk: None,
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

    /// The hard time limit of every attempt whose task sets none (Celery's
    /// `task_time_limit`); see [`Options::time_limit`]. Applied when an attempt starts, so a
    /// changed default applies to tasks already queued. Zero or over
    /// [`MAX_DELAY`](crate::MAX_DELAY) is refused at open.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// The soft time limit of every attempt whose task sets none (Celery's
    /// `task_soft_time_limit`); see [`Options::soft_time_limit`]. A soft limit that is not
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
        Ok(Spool {
            shared: Shared::new(
                Box::new(engine),
                self.clock,
                waiters,
                path,
                temp,
                default_limits,
            ),
        })
    }
}

impl Spool {
    /// Opens the queue file at `path` with default options. See [`SpoolBuilder::open`].
    ///
    /// # Errors
    /// As [`SpoolBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Spool, Error> {
        SpoolBuilder::default().open(path)
    }

    /// A queue in a temporary directory, removed when the spool is closed. See
    /// [`SpoolBuilder::temporary`].
    ///
    /// # Errors
    /// As [`SpoolBuilder::temporary`].
    pub fn temporary() -> Result<Spool, Error> {
        SpoolBuilder::default().temporary()
    }

    /// Options for opening a spool.
    pub fn builder() -> SpoolBuilder {
        SpoolBuilder::default()
    }

    /// The queue file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Starts configuring a worker pool for this spool.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.shared.clone())
    }

    /// Enqueues a task with its type's default options. Durable when it returns.
    ///
    /// # Errors
    /// `InvalidOption` if the type's defaults are invalid; `Json` if the task does not
    /// serialize; `DiskFull`/`Storage` if the commit failed (then nothing was stored).
    pub fn enqueue<T: Task>(&self, task: T) -> Result<TaskHandle<T::Output>, Error> {
        self.enqueue_with(task, Options::new())
    }

    /// Enqueues a task with options layered over its type's defaults. Durable when it returns.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue); options are validated before anything is written.
    pub fn enqueue_with<T: Task>(
        &self,
        task: T,
        options: Options,
    ) -> Result<TaskHandle<T::Output>, Error> {
        let mut handles = self.enqueue_many_with(std::iter::once(task), options)?;
        handles.pop().ok_or(Error::Closed)
    }

    /// Enqueues many tasks of one type in one transaction: all are stored, or none.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_many<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<TaskHandle<T::Output>>, Error> {
        self.enqueue_many_with(tasks, Options::new())
    }

    /// Enqueues many tasks of one type, with the same options, in one transaction.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_many_with<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
        options: Options,
    ) -> Result<Vec<TaskHandle<T::Output>>, Error> {
        let new = new_tasks(tasks, options, self.shared.clock.now_ms())?;
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.shared.engine.insert(new)?;
        Ok(ids
            .into_iter()
            .map(|e| TaskHandle::enqueued(e.id, e.duplicate, T::NAME, &self.shared))
            .collect())
    }

    /// A typed handle for a task enqueued earlier (for example by another run of the program).
    /// Nothing is read here: a handle for an id of another task type answers
    /// [`Error::WrongTask`] (naming both task names) when it is read.
    pub fn handle<T: Task>(&self, id: TaskId) -> TaskHandle<T::Output> {
        TaskHandle::new(id, T::NAME, &self.shared)
    }

    /// Revokes a task, durably, and says what that did:
    ///
    /// - a task waiting to run (scheduled, ready, retrying) is [`Revoke::Revoked`]: it ends
    ///   `Revoked` now and never runs; `wait` on it returns [`Error::TaskRevoked`];
    /// - a running task is [`Revoke::Cancelling`]: its handler sees
    ///   [`Context::is_cancelled`](crate::Context::is_cancelled) turn true (within one commit
    ///   of the writer), and when the attempt returns — whatever it returns — the task ends
    ///   `Revoked`. If the process dies first, the next open ends it `Revoked` instead of
    ///   running it again;
    /// - a finished task is left as it is: [`Revoke::AlreadyFinal`] says in which state.
    ///
    /// Unlike Celery's revokes, which live in each worker's memory, this one is stored with
    /// the task: it holds across restarts and for every pool.
    ///
    /// # Errors
    /// `NotFound` for an id that is not in this file (never enqueued here, or pruned);
    /// `DiskFull`/`Storage` if the change could not be made durable. Nothing is written on
    /// error.
    pub fn revoke(&self, id: TaskId) -> Result<Revoke, Error> {
        self.shared.engine.revoke(id)
    }

    /// Revokes every task `filter` matches that has not finished (by queue, name and state),
    /// in one durable change, each as [`revoke`](Self::revoke) does it; says how many were
    /// revoked at once and how many running ones were asked to stop.
    ///
    /// ```
    /// # use taskspool::{Spool, TaskFilter, TaskState};
    /// # let spool = Spool::temporary()?;
    /// let done = spool.revoke_where(TaskFilter::new().queue("mail").state(TaskState::Ready))?;
    /// assert_eq!(done.revoked + done.cancelling, 0);
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `DiskFull`/`Storage` if the change could not be made durable (then nothing changed).
    pub fn revoke_where(&self, filter: TaskFilter) -> Result<Revoked, Error> {
        self.shared.engine.revoke_where(filter)
    }

    /// Runs again every `Failed`, `Expired` or `Revoked` task `filter` matches, each as
    /// [`retry`](Self::retry) does it, in one durable change; returns how many.
    ///
    /// # Errors
    /// `DiskFull`/`Storage` if the change could not be made durable (then nothing changed).
    pub fn retry_where(&self, filter: TaskFilter) -> Result<u64, Error> {
        self.shared.engine.retry_where(filter)
    }

    /// Runs a `Failed`, `Expired` or `Revoked` task again, now: back to `Ready` with its
    /// history kept and a fresh retry budget (the retries it was enqueued with, counted from
    /// here), like Sidekiq's "retry now" and Oban's `retry_job`. An expiry that has passed no
    /// longer applies. Durable when it returns.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `WrongState` for a task that is waiting, running or
    /// succeeded; `DiskFull`/`Storage` on a failed commit. Nothing is written on error.
    pub fn retry(&self, id: TaskId) -> Result<(), Error> {
        self.shared.engine.retry(id)
    }

    /// Deletes a finished task and its result now, instead of after the results TTL
    /// (Celery's `AsyncResult.forget`). Its id then reads as `NotFound`.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `WrongState` for a task that has not finished;
    /// `DiskFull`/`Storage` on a failed commit. Nothing is written on error.
    pub fn forget(&self, id: TaskId) -> Result<(), Error> {
        self.shared.engine.forget(id)
    }

    /// A task's state, times, attempts and error history.
    ///
    /// # Errors
    /// `NotFound` for an id never enqueued here or already pruned — never a made-up
    /// "pending"; `Storage` on a read failure.
    pub fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        self.shared.engine.status(id)
    }

    /// Task counts per queue and state, and the task names waiting for a worker.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    pub fn stats(&self) -> Result<Stats, Error> {
        self.shared.engine.stats()
    }

    /// Declares a periodic schedule that enqueues `task` (with its type's default options) at
    /// every fire. Declaring is an upsert: the same declaration again changes nothing (the next
    /// fire is kept across restarts); a changed expression or interval reschedules from now.
    ///
    /// Fires are enqueued by the spool's writer while the spool is open, whether or not a
    /// worker is running; each (schedule, fire time) is enqueued at most once, in the same
    /// transaction that advances the schedule.
    ///
    /// # Errors
    /// `InvalidSchedule` for an unknown time zone, a cron expression no date matches, a zero
    /// interval or `CatchUp { max: 0 }`;
    /// `InvalidOption`/`Json` for the task; nothing is written on error.
    pub fn schedule<T: Task>(&self, name: &str, schedule: Schedule, task: T) -> Result<(), Error> {
        self.schedule_with(name, schedule, task, Options::new())
    }

    /// Declares a periodic schedule with options for the tasks it enqueues (queue, priority,
    /// retries, and an expiry as a `Duration` after each fire). See [`schedule`](Self::schedule).
    ///
    /// # Errors
    /// As [`schedule`](Self::schedule); a countdown, ETA or absolute expiry is `InvalidOption`.
    pub fn schedule_with<T: Task>(
        &self,
        name: &str,
        schedule: Schedule,
        task: T,
        options: Options,
    ) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::InvalidSchedule(
                "the schedule name must not be empty".into(),
            ));
        }
        schedule.validate()?;
        let template = options.over(T::defaults()).template()?;
        let payload = encode_arguments(&task)?;
        let def = ScheduleDef::new(schedule, T::NAME, payload, template);
        self.schedule_op(ScheduleOp::Declare {
            name: name.to_string(),
            def: Box::new(def),
        })
        .map(drop)
    }

    /// Deletes a schedule. Returns whether it existed. Tasks it already enqueued are kept.
    ///
    /// # Errors
    /// `Storage`/`Closed` from the writer.
    pub fn unschedule(&self, name: &str) -> Result<bool, Error> {
        self.schedule_op(ScheduleOp::Remove(name.to_string()))
    }

    /// Stops a schedule from firing until [`resume_schedule`](Self::resume_schedule).
    ///
    /// # Errors
    /// `ScheduleNotFound` if no schedule has this name.
    pub fn pause_schedule(&self, name: &str) -> Result<(), Error> {
        self.schedule_op(ScheduleOp::Pause(name.to_string()))
            .map(drop)
    }

    /// Resumes a paused schedule from its next fire after now; fires that fell in the pause
    /// are not run.
    ///
    /// # Errors
    /// `ScheduleNotFound` if no schedule has this name.
    pub fn resume_schedule(&self, name: &str) -> Result<(), Error> {
        self.schedule_op(ScheduleOp::Resume(name.to_string()))
            .map(drop)
    }

    /// Every declared schedule with its next and last fire.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        self.shared.engine.schedules()
    }

    fn schedule_op(&self, op: ScheduleOp) -> Result<bool, Error> {
        self.shared.engine.schedule(op)
    }

    /// Fault injection: the next `n` writes of changes fail as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, n: usize) {
        self.shared.engine.fail_writes(n);
    }

    /// Returns once every change acknowledged before the call is on disk. With
    /// [`Durability::Immediate`] that is already so; with [`Durability::Buffered`] this syncs
    /// the log now instead of within its bound.
    ///
    /// # Errors
    /// `Storage` or `DiskFull` if the sync fails; `Closed` if the spool is shutting down.
    pub fn flush(&self) -> Result<(), Error> {
        self.shared.engine.sync()
    }
}

/// Tasks of one type with the same options, validated and encoded at `now`, ready for the
/// engine: they share one name and one set of resolved options. Every enqueue builds its
/// tasks here (a batch, a follow-up, a workflow's steps, a callback).
///
/// # Errors
/// `InvalidOption` for the options, `Json` for a task's arguments.
pub(crate) fn new_tasks<T: Task>(
    tasks: impl IntoIterator<Item = T>,
    options: Options,
    now: u64,
) -> Result<Vec<NewTask>, Error> {
    let opts = Arc::new(options.over(T::defaults()).resolve(now)?);
    let name: Arc<str> = Arc::from(T::NAME);
    tasks
        .into_iter()
        .map(|task| {
            Ok(NewTask {
                name: name.clone(),
                payload: encode_arguments(&task)?,
                opts: opts.clone(),
                enqueued_at_ms: now,
                origin: None,
                step: None,
            })
        })
        .collect()
}

/// One task, as [`new_tasks`] builds them.
///
/// # Errors
/// As [`new_tasks`].
pub(crate) fn new_task<T: Task>(task: T, options: Options, now: u64) -> Result<NewTask, Error> {
    let mut one = new_tasks([task], options, now)?;
    // Exactly one task went in.
    Ok(one.swap_remove(0))
}

/// A task's arguments as the JSON stored with it.
///
/// serde_json writes a NaN or an infinite float as `null`, which then does not decode as the
/// float: when the JSON holds a `null`, it is decoded again here, so such arguments are
/// refused at enqueue instead of failing the task when it runs. (Without a `null` nothing was
/// lost that way, and the check is skipped: it would cost an enqueue a second decode.)
fn encode_arguments<T: Task>(task: &T) -> Result<Vec<u8>, Error> {
    let bytes = serde_json::to_vec(task)
        .map_err(|e| Error::Json(format!("cannot encode the arguments of `{}`: {e}", T::NAME)))?;
    if bytes.windows(4).any(|w| w == b"null")
        && let Err(e) = decode_json::<T>(&bytes)
    {
        return Err(Error::Json(format!(
            "the arguments of `{}` do not read back from JSON ({e}); JSON has no NaN or \
             infinity (serde_json writes them as null): use a type that round-trips, for \
             example an Option<f64>",
            T::NAME
        )));
    }
    Ok(bytes)
}
