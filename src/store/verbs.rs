//! The engine's face: the verbs the rest of the crate asks of storage, and the types that
//! cross it. Nothing here names redb, the write-ahead log or the file lock; where engines
//! differ, the difference is named below as an engine property.
//!
//! The verbs, with the Oban `Engine` callbacks they stand for:
//!
//! | verb | what it does | Oban |
//! |---|---|---|
//! | [`Engine::insert`] | stores new tasks, durable when it returns | `insert_job`, `insert_all_jobs` |
//! | [`Engine::register`] / [`Engine::unregister`] | a pool starts or stops; the engine claims for it and sends it [`Job`]s | `fetch_jobs` (pushed, see below) |
//! | [`Engine::claim`] | claims due tasks for a caller that runs them itself (a drain) | `fetch_jobs` |
//! | [`Reporter::complete`] | an attempt ran: its [`Outcome`] ends it as succeeded, retried after backoff, or failed | `complete_job`, `error_job`, `discard_job` |
//! | [`Reporter::release`] | a claimed attempt did not run: the task goes back with its attempt | — |
//! | [`Engine::schedule`] | declares, removes, pauses or resumes a periodic schedule | — (Oban's cron plugin) |
//! | [`Engine::sync`] | returns once everything acknowledged before is durable | — |
//! | [`Engine::status`], [`Engine::result`], [`Engine::tasks`], [`Engine::schedules`], [`Engine::stats`] | read views | — |
//! | (the engine's own work) | stages due work — promotes due tasks, fires schedules, expires — and prunes finished tasks, waking at the next due time | `stage_jobs`, `prune_jobs` |
//! | (opening) | recovers the attempts a dead owner left running | Oban's `Lifeline` rescue |
//!
//! | [`Engine::revoke`] | a waiting task ends `Revoked`; a running one is asked to stop and ends `Revoked` with its attempt | `cancel_job` |
//! | [`Engine::flow`], [`Engine::limits`] | declares rate and concurrency limits and queue pauses, which every claim holds to | — (Oban Pro's global limits, queue pause) |
//! | [`Engine::retry`], [`Engine::forget`] | a finished task runs again with a fresh budget; one is deleted | `retry_job`, `delete_job` |
//!
//! # Engine properties
//!
//! What a caller may rely on, and how the file engine (`store::file`, on redb) provides it.
//! Another engine provides the same verbs; where it cannot give the same property, the
//! difference is stated here, not assumed above this face.
//!
//! - **Durable acknowledgement.** `insert`, `schedule` and `sync` return once their change
//!   survives a crash. File engine: the group's write-ahead log record is `fdatasync`ed
//!   (buffered mode: written to the OS, synced within the bound).
//! - **Orphans known at open.** The file engine is the only owner of its file (the OS lock),
//!   so whatever was running when the last owner died is an orphan at open and is recovered
//!   then: no leases, no timeouts. An engine shared by several processes must lease attempts
//!   and rescue expired leases instead.
//! - **Claims are pushed, in order.** The engine claims for registered pools — highest
//!   priority first, then FIFO, across the queues and names a pool serves — never more than
//!   a pool's free threads plus its prefetch, and sends the jobs once the claim is durable.
//!   File engine: the claim is in the writer's group, the same transaction as the event that
//!   made the task ready.
//! - **Attempt starts are noted.** A worker thread tells its [`Reporter`] before an
//!   attempt's handler runs ([`Reporter::starting`]), so that recovery can tell started
//!   attempts (they count toward `max_retries`) from claimed ones; a note lasts until the
//!   attempt's completion is durable. File engine: a page-cache write to a ring of the
//!   thread's in a journal next to the file; it survives a process crash, not a power cut.
//! - **Reads see every acknowledged change.** `status`, `result`, `tasks` and `schedules` see every
//!   change acknowledged before the call. File engine: they may wait for the end of the
//!   writer's group in progress (well under a millisecond), then commit what it holds.
//!   `stats` reads the engine's in-memory counts and never waits.
//! - **Wake-ups of waiters.** The engine notifies [`Waiters`](crate::sync::Waiters) of a task
//!   once its final state can be read.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_channel::Sender;

use crate::error::{Error, Failure};
use crate::events::Events;
use crate::flow::{Limit, LimitTarget};
use crate::model::{Origin, Outcome, PoolId, Revoke, Revoked, TaskId};
use crate::options::{Limits, Resolved};
use crate::query::{Paging, TaskFilter};
use crate::schedule::{ScheduleDef, ScheduleInfo};
use crate::signal::AttemptSignal;
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// A task as the caller built it, validated, waiting for the engine to give it an id.
#[derive(Debug, Clone)]
pub(crate) struct NewTask {
    pub name: Arc<str>,
    pub payload: Vec<u8>,
    pub opts: Arc<Resolved>,
    pub enqueued_at_ms: u64,
    pub origin: Option<Origin>,
    /// Its place in a workflow, and its callbacks: `None` for an ordinary task (boxed, so
    /// an ordinary task's batch stays small).
    pub step: Option<Box<StepSpec>>,
}

/// A new task's place in a workflow and its callbacks (see `store::workflow`).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepSpec {
    /// The earlier tasks of the same insert it waits for (their indexes), whose outputs it
    /// receives in this order.
    pub after: Vec<usize>,
    /// Callbacks stored with it, enqueued when it ends.
    pub links: Vec<NewLink>,
    /// It runs once every task it waits for has ended, however they ended, reading each
    /// one's result (see `Context::results`).
    pub settled: bool,
}

impl NewTask {
    /// The tasks of the same insert it waits for.
    pub(crate) fn after(&self) -> &[usize] {
        self.step.as_deref().map_or(&[], |s| &s.after)
    }

    /// Its place in a workflow, to set it.
    pub(crate) fn step_mut(&mut self) -> &mut StepSpec {
        self.step.get_or_insert_with(Box::default)
    }
}

/// A callback of a task: enqueued in the transaction that ends it, if it succeeded
/// (`on_failure: false`) or if it ended any other way (`on_failure: true`).
#[derive(Debug, Clone)]
pub(crate) struct NewLink {
    pub on_failure: bool,
    pub task: NewTask,
}

/// What an insert did with one new task: stored it under a new id, or found a task that holds
/// its unique key and stored nothing (`duplicate`, with the holder's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enqueued {
    pub id: TaskId,
    pub duplicate: bool,
}

/// One step of storing a chord too large for one transaction in parts (see `store::parts`):
/// its ids are reserved at once, its members stored unindexed part by part, its body stored
/// last (the seal: from then on the chord exists), and its members indexed part by part. A
/// chord left unsealed is deleted, by its producer or at the next open.
#[derive(Debug)]
pub(crate) enum PartOp {
    /// Reserves ids for `count` tasks, the members then the body; answers the first.
    Open { count: u64 },
    /// Stores members under the ids from `first` on, unindexed; answers how many.
    Part {
        base: u64,
        first: u64,
        tasks: Vec<NewTask>,
    },
    /// Stores the body under the last reserved id, waiting for every member; answers its id.
    Seal { base: u64, body: NewTask },
    /// Indexes the next members (at most a part's worth); answers how many are left.
    Index { base: u64 },
    /// Deletes the next stored members of an unsealed chord; answers 0 once nothing of it
    /// remains.
    Abandon { base: u64 },
}

/// One attempt handed to a worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: TaskId,
    pub attempt: u32,
    pub name: Arc<str>,
    pub queue: Arc<str>,
    pub payload: Vec<u8>,
    pub max_retries: u32,
    pub enqueued_at_ms: u64,
    pub origin: Option<Origin>,
    /// The task's own time limits (the spool's defaults apply where they are `None`).
    pub limits: Limits,
    /// Shared with the engine, which asks the attempt to stop through it (a revoke).
    pub signal: Arc<AttemptSignal>,
    /// A workflow step's inputs: its parents' outputs, in order.
    pub inputs: Option<Arc<Inputs>>,
}

/// A workflow step's inputs: its parents' outputs, in order, as one JSON array (decoded in
/// one pass however many there are), and how many.
#[derive(Debug)]
pub(crate) struct Inputs {
    pub json: Vec<u8>,
    pub count: usize,
}

impl Inputs {
    /// An array to append a step's parents to, in order (both engines build it so).
    pub(crate) fn start() -> Inputs {
        Inputs {
            json: b"[".to_vec(),
            count: 0,
        }
    }

    /// Appends a parent that is gone: `null`.
    pub(crate) fn push_missing(&mut self) {
        self.push(None);
    }

    /// Appends one parent: its output if it succeeded (`null` if it has none), else what
    /// ended it; for a step that runs however its parents ended (`settled`), either as
    /// `{"ok": output}` or `{"err": failure}`.
    ///
    /// # Errors
    /// `Storage` if the failure cannot be encoded.
    pub(crate) fn push_parent(
        &mut self,
        settled: bool,
        ended: Result<Option<&[u8]>, &Failure>,
    ) -> Result<(), Error> {
        let failure = |f: &Failure| {
            serde_json::to_vec(f).map_err(|e| Error::storage(format!("encoding a failure: {e}")))
        };
        let input = match (settled, ended) {
            // The common case, copied once: straight into the array.
            (false, Ok(o)) => {
                self.push(o);
                return Ok(());
            }
            (false, Err(f)) => failure(f)?,
            (true, Ok(o)) => {
                let output = o.filter(|o| !o.is_empty()).unwrap_or(b"null");
                [&br#"{"ok":"#[..], output, b"}"].concat()
            }
            (true, Err(f)) => [&br#"{"err":"#[..], &failure(f)?, b"}"].concat(),
        };
        self.push(Some(&input));
        Ok(())
    }

    fn push(&mut self, input: Option<&[u8]>) {
        if self.count > 0 {
            self.json.push(b',');
        }
        self.json
            .extend_from_slice(input.filter(|i| !i.is_empty()).unwrap_or(b"null"));
        self.count += 1;
    }

    /// The finished array.
    pub(crate) fn finish(mut self) -> Inputs {
        self.json.push(b']');
        self
    }
}

/// A finished attempt, as its worker reports it.
#[derive(Debug)]
pub(crate) struct Completion {
    pub id: TaskId,
    pub attempt: u32,
    pub started_at_ms: u64,
    /// How long the handler ran, in microseconds (drives adaptive prefetch).
    pub run_us: u64,
    pub outcome: Outcome,
    /// The handler's latest progress (JSON), kept with the record.
    pub progress: Option<Vec<u8>>,
    /// The soft time limit had asked the attempt to stop: a failure is a time limit's.
    pub past_soft_limit: bool,
    /// Tasks the handler enqueued through its context: stored with the attempt's success,
    /// in its transaction, and dropped with any other end.
    pub follow_ups: Vec<NewTask>,
}

/// What a pool (or a drain) can run: the queues it serves and the task names it knows. Built
/// and validated once, by `WorkerBuilder`.
#[derive(Debug, Clone)]
pub(crate) struct Serves {
    pub queues: Vec<String>,
    pub names: HashSet<String>,
}

impl Serves {
    /// Whether this pool serves `queue`.
    pub(crate) fn serves_queue(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q == queue)
    }
}

/// A live pool, as it registers with the engine.
#[derive(Debug)]
pub(crate) struct PoolSpec {
    pub id: PoolId,
    pub serves: Serves,
    /// How many attempts run at once.
    pub threads: usize,
    /// The most attempts claimed ahead of free threads.
    pub max_prefetch: usize,
    /// What the pool's threads report of themselves, for `stats`.
    pub gauges: Arc<PoolGauges>,
}

/// A pool's threads, as it reports them.
#[derive(Debug, Default)]
pub(crate) struct PoolGauges {
    /// Threads serving the pool now.
    pub threads: AtomicUsize,
    /// Threads whose attempt its hard time limit ended, and whose handler has not returned.
    pub abandoned: AtomicUsize,
    /// The task each thread slot runs now (its id; 0 while idle: ids start at 1).
    pub running: Box<[AtomicU64]>,
}

impl PoolGauges {
    /// The gauges of a pool of `concurrency` threads.
    pub(crate) fn new(concurrency: usize) -> PoolGauges {
        PoolGauges {
            threads: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            running: (0..concurrency).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The tasks running now, by id.
    pub(crate) fn running_tasks(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .running
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|id| *id != 0)
            .map(TaskId)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// A change to the set of schedules.
#[derive(Debug)]
pub(crate) enum ScheduleOp {
    /// Create or update; unchanged if the definition is identical.
    Declare { name: String, def: Box<ScheduleDef> },
    /// Delete.
    Remove(String),
    /// Stop firing until resumed.
    Pause(String),
    /// Fire again from the next time after now (fires missed while paused are not run).
    Resume(String),
    /// Enqueue the schedule's task now, as a fire at now, leaving its timing as it is;
    /// `false` if the task's unique key was held.
    RunNow(String),
}

/// A change to the declared limits and pauses (see `store::flow`).
#[derive(Debug)]
pub(crate) enum FlowOp {
    /// Declare (replace) a target's limits; a queue's pause is kept.
    Limit(Limit),
    /// Remove a target's limits.
    Unlimit(LimitTarget),
    /// Pause or resume a queue.
    Pause { queue: String, paused: bool },
}

/// A worker thread's place for its start notes (see [`Reporter::starting`]): where the
/// engine keeps them, and how many attempts the thread has started.
#[derive(Debug)]
pub(crate) struct ThreadSlot {
    pub(crate) place: u64,
    pub(crate) started: u64,
}

/// What hears the result of a verb that does not wait ([`Engine::insert_then`]).
pub(crate) type Then<T> = Box<dyn FnOnce(Result<T, Error>) + Send>;

/// Whether a caller that does not wait may run the group itself when the writer is idle
/// (sparing the writer thread's wake-up), or must leave it to the writer thread (an async
/// caller: its thread is a runtime's and must not do the sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lead {
    Allowed,
    /// Only async callers (feature `tokio`) need it.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Never,
}

/// The storage engine of a spool: every verb the public handles use. See the module docs
/// for the list and for the properties a caller may rely on. Dropping the engine applies
/// what is pending, makes it durable and stops it; reporters then get `Closed`.
pub(crate) trait Engine: Send + Sync {
    /// Stores new tasks, all or none; returns their ids once they are durable. A task whose
    /// unique key is held (by a task in the file, or one earlier in `tasks`) is not stored:
    /// its entry is the holder's id, marked duplicate.
    ///
    /// # Errors
    /// `DiskFull`/`Storage` if the change could not be made durable (nothing was stored);
    /// `Closed` if the engine has stopped.
    fn insert(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, Error>;

    /// As [`Engine::insert`], without waiting for the commit: `then` hears the result once
    /// the tasks are durable (or not stored), on whichever thread answers — it must not
    /// block. With `Lead::Never` this thread never runs the group (nor its sync).
    fn insert_then(&self, tasks: Vec<NewTask>, lead: Lead, then: Then<Vec<Enqueued>>);

    /// Declares, removes, pauses or resumes a schedule; returns whether anything changed
    /// (for a removal: whether the schedule existed). Durable when it returns.
    ///
    /// # Errors
    /// `ScheduleNotFound` to pause or resume an unknown schedule; as [`Engine::insert`].
    fn schedule(&self, op: ScheduleOp) -> Result<bool, Error>;

    /// Declares or removes a limit, or pauses or resumes a queue; returns whether anything
    /// changed. Durable when it returns; every claim after it holds to it.
    ///
    /// # Errors
    /// As [`Engine::insert`].
    fn flow(&self, op: FlowOp) -> Result<bool, Error>;

    /// One step of storing a chord in parts (see [`PartOp`]); durable when it returns.
    ///
    /// # Errors
    /// `NotFound` for a chord that is not open (or, to seal, not complete); as
    /// [`Engine::insert`].
    fn parts(&self, op: PartOp) -> Result<u64, Error>;

    /// The declared limits, task types first, each by name.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    fn limits(&self) -> Result<Vec<Limit>, Error>;

    /// A pool starts serving: from now on the engine claims tasks for it and sends them on
    /// `jobs`, never more than its free threads plus its prefetch.
    ///
    /// # Errors
    /// As [`Engine::insert`]; the caller must then [`unregister`](Engine::unregister) it.
    fn register(&self, pool: PoolSpec, jobs: Sender<Job>) -> Result<(), Error>;

    /// A pool stops: returns once no more jobs will be sent to it (its job channel is
    /// dropped). Attempts it still holds report through its [`Reporter`].
    fn unregister(&self, pool: PoolId);

    /// Claims up to `max` due tasks that `serves` can run, for a caller that runs them itself
    /// (a drain), in the engine's claim order.
    ///
    /// # Errors
    /// As [`Engine::insert`].
    fn claim(&self, serves: &Serves, max: usize) -> Result<Vec<Job>, Error>;

    /// Where worker threads report their attempts. It does not keep the engine open.
    /// `in_flight` bounds how many attempts of one of its threads can have started while
    /// their completions are not yet durable: a pool's threads plus its prefetch (the engine
    /// never hands a pool more), a drain's batch. The engine keeps that many start notes
    /// per thread.
    fn reporter(&self, in_flight: usize) -> Arc<dyn Reporter>;

    /// Revokes a task: one that waits ends `Revoked`; a running one's attempt is asked to
    /// stop, and its end makes the task `Revoked`. Durable when it returns.
    ///
    /// # Errors
    /// `NotFound` for an unknown id (nothing is written); as [`Engine::insert`].
    fn revoke(&self, id: TaskId) -> Result<Revoke, Error>;

    /// Revokes every unfinished task `filter` matches, as [`Engine::revoke`] does each.
    ///
    /// # Errors
    /// As [`Engine::insert`].
    fn revoke_where(&self, filter: TaskFilter) -> Result<Revoked, Error>;

    /// Revokes every task of the workflow `id` that has not finished (its steps after a
    /// revoked one too).
    ///
    /// # Errors
    /// `NotFound` if `id` is not a workflow's first task (nothing is written); as
    /// [`Engine::insert`].
    fn revoke_workflow(&self, id: TaskId) -> Result<Revoked, Error>;

    /// A workflow's tasks by state.
    ///
    /// # Errors
    /// `NotFound` if `id` is not a workflow's first task; `Storage` on a read failure.
    fn workflow_status(&self, id: TaskId) -> Result<WorkflowStatus, Error>;

    /// Retries every failed, expired or revoked task `filter` matches, as [`Engine::retry`]
    /// does each; returns how many.
    ///
    /// # Errors
    /// As [`Engine::insert`].
    fn retry_where(&self, filter: TaskFilter) -> Result<u64, Error>;

    /// Runs a failed, expired or revoked task again, with a fresh retry budget. Durable when
    /// it returns.
    ///
    /// # Errors
    /// `NotFound`, or `WrongState` for a task in another state (nothing is written); as
    /// [`Engine::insert`].
    fn retry(&self, id: TaskId) -> Result<(), Error>;

    /// Deletes a finished task and its result. Durable when it returns.
    ///
    /// # Errors
    /// `NotFound`, or `WrongState` for a task that has not finished; as [`Engine::insert`].
    fn forget(&self, id: TaskId) -> Result<(), Error>;

    /// Returns once everything reported or acknowledged before the call is applied and
    /// durable.
    ///
    /// # Errors
    /// `DiskFull`/`Storage` if a sync fails; `Closed` if the engine has stopped.
    fn sync(&self) -> Result<(), Error>;

    /// Returns once everything acknowledged before the call is in the queue file itself and
    /// the write-ahead log has started over (what a close does, without closing).
    ///
    /// # Errors
    /// `DiskFull`/`Storage` if the commit fails; `Closed` if the engine has stopped.
    fn checkpoint(&self) -> Result<(), Error>;

    /// A task's state, times, attempts and error history.
    ///
    /// # Errors
    /// `NotFound` for an id never enqueued or already pruned; `Storage` on a read failure.
    fn status(&self, id: TaskId) -> Result<TaskStatus, Error>;

    /// The JSON output of a succeeded task; `None` while it has not reached a final state.
    ///
    /// # Errors
    /// `TaskFailed`, `TaskExpired` (or the reserved `TaskRevoked`) for the other final states; as
    /// [`Engine::status`].
    /// `WrongTask` first if the task's name is not `name` (the handle's type), when given.
    fn result(&self, id: TaskId, name: Option<&str>) -> Result<Option<Vec<u8>>, Error>;

    /// A page of the tasks `filter` matches, oldest or newest first, from the cursor on (see
    /// `store::query`).
    ///
    /// # Errors
    /// `InvalidOption` for a page size out of range; `Storage` on a read failure.
    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error>;

    /// A new subscription to the engine's events, with a buffer of `buffer` events (see
    /// `crate::events`).
    fn events(&self, buffer: usize) -> Events;

    /// Every declared schedule with its next and last fire, by name.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error>;

    /// Counts per queue and state, and the names due tasks wait under that no live pool knows.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    fn stats(&self) -> Result<Stats, Error>;

    /// Fault injection: the next `n` writes of changes fail as on a full disk.
    #[cfg(test)]
    fn fail_writes(&self, n: usize);
}

/// How worker threads tell the engine about their attempts.
pub(crate) trait Reporter: Send + Sync {
    /// A place for one thread's start notes; give it back with [`Reporter::leave`].
    fn join(&self) -> ThreadSlot;

    /// The thread in `slot` has stopped.
    fn leave(&self, slot: ThreadSlot);

    /// The thread in `slot` is about to run this attempt's handler. The note lasts until
    /// the attempt's completion is durable. Best effort: a note that cannot be written only
    /// makes recovery count orphans as started.
    fn starting(&self, slot: &mut ThreadSlot, id: TaskId, attempt: u32);

    /// An attempt ran; `pool` (none for a drain) has a thread free again. The outcome
    /// decides what happens to the task; a report of an attempt that is no longer current
    /// is discarded.
    ///
    /// # Errors
    /// `Closed` if the engine has stopped (the attempt is recovered at the next open).
    fn complete(&self, pool: Option<PoolId>, completion: Completion) -> Result<(), Error>;

    /// A claimed attempt of `pool` did not run (the pool is stopping): the task goes back to
    /// its queue and the attempt is given back.
    ///
    /// # Errors
    /// As [`Reporter::complete`].
    fn release(&self, pool: PoolId, id: TaskId, attempt: u32) -> Result<(), Error>;

    /// Attempt `attempt` of `id` reports its progress (JSON). Kept in memory and shown by
    /// `status` at once; stored with the attempt's completion (and with any group that
    /// commits before), never synced on its own.
    fn progress(&self, id: TaskId, attempt: u32, json: Vec<u8>);
}
