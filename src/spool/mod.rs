//! The [`Spool`] handle: opening a queue file, enqueueing, and reading state back.

use std::path::Path;
use std::sync::Arc;

use crate::error::Error;
use crate::model::{Revoke, Revoked, TaskId};
use crate::options::Options;
use crate::pool::WorkerBuilder;
use crate::query::{Paging, TaskFilter};
use crate::registry::encode_arguments;
use crate::result::TaskHandle;
use crate::schedule::{Schedule, ScheduleDef, ScheduleInfo};
pub use crate::shared::Spool;
use crate::store::{Enqueued, NewTask, ScheduleOp};

#[cfg(feature = "tokio")]
mod asynchronous;
mod builder;
mod by_name;
mod chord;
#[cfg(feature = "dashboard")]
mod dashboard;
mod flow;
mod follow_ups;
mod graph;
#[cfg(feature = "postgres")]
mod postgres;
mod remote;
mod workflow;

use crate::events::Events;
use crate::inspect::Inspection;
use crate::task::Task;
use crate::views::{Stats, TaskPage, TaskStatus};
pub use builder::{
    DEFAULT_CACHE_BYTES, DEFAULT_CHECKPOINT_BYTES, DEFAULT_RESULT_TTL, Durability, SpoolBuilder,
};
pub use chord::ChordHandle;
pub use graph::{Step, StepId, StoredWorkflow, Workflow};
#[cfg(feature = "postgres")]
pub use postgres::{DEFAULT_LEASE, DEFAULT_POSTGRES_SCHEMA, MIN_LEASE};
pub use workflow::{Chain, GroupHandle, Link};

impl Spool {
    /// Looks at the queue file at `path` without opening it as its owner: nothing is written
    /// to the file or its log — no recovery of a dead owner's attempts, no pruning, no
    /// schedule fires — and every change its last owner acknowledged is seen (a log the owner
    /// left is applied to a copy in memory). For tools and scripts that read a queue whose
    /// application is not running.
    ///
    /// ```
    /// # use taskspool::{Paging, Spool, TaskFilter, TaskState};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("jobs.redb");
    /// # drop(Spool::open(&path)?);
    /// let inspection = Spool::inspect(&path)?;
    /// let failed = TaskFilter::new().state(TaskState::Failed);
    /// assert!(inspection.tasks(&failed, &Paging::first(100))?.tasks.is_empty());
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `AlreadyOpen` while a process owns the file; `BadPath` for a missing or empty file;
    /// `NotAQueue` for a foreign one; `NewerFormat`, `Corrupt` (a damaged file or log) as
    /// [`open`](Self::open) says them; `Storage` on I/O failure.
    pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection, Error> {
        Inspection::open(path.as_ref())
    }

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

    /// Enqueues a task with its type's default options. Durable when it returns: the call
    /// blocks for the commit's sync (from async code, await `enqueue_async` instead, feature
    /// `tokio`, which leaves the runtime's thread free meanwhile).
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
        Ok(self.handles::<T>(ids))
    }

    /// The handles of tasks of type `T` just enqueued (a duplicate's is its holder's).
    pub(crate) fn handles<T: Task>(&self, ids: Vec<Enqueued>) -> Vec<TaskHandle<T::Output>> {
        ids.into_iter()
            .map(|e| TaskHandle::enqueued(e.id, e.duplicate, T::NAME, &self.shared))
            .collect()
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

    /// Revokes every task `filter` matches that has not finished,
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

    /// A page of the tasks `filter` matches — by state, queue, name, schedule and enqueue
    /// time — oldest or newest first, from a cursor on: what `celery inspect`, Flower's task
    /// list and Oban Web's job list show. Read from an index of tasks by state, so a page of
    /// the few failed tasks among a million succeeded ones reads those few; each page reads at
    /// most [`SCAN_BUDGET`](crate::SCAN_BUDGET) index entries and may hold fewer tasks than
    /// asked when few match (its `next` says where to go on). A running task is listed as
    /// running.
    ///
    /// ```
    /// # use taskspool::{Paging, Spool, TaskFilter, TaskState};
    /// # let spool = Spool::temporary()?;
    /// let filter = TaskFilter::new().state(TaskState::Failed);
    /// let mut paging = Paging::first(100).newest_first();
    /// loop {
    ///     let page = spool.tasks(&filter, &paging)?;
    ///     for task in &page.tasks {
    ///         println!("{} {} {:?}", task.id, task.name, task.errors.last());
    ///     }
    ///     match page.next {
    ///         Some(next) => paging = paging.after(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidOption` for a page size out of 1 to [`MAX_PAGE`](crate::MAX_PAGE); `Storage`
    /// on a read failure.
    pub fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        self.shared.engine.tasks(filter, paging)
    }

    /// A subscription to this spool's events — tasks enqueued, started, succeeded, failed,
    /// retried, expired and revoked, schedules fired, attempts recovered at open — each sent
    /// once the change is durable, like Celery's task events. It has a buffer of
    /// [`DEFAULT_EVENT_BUFFER`](crate::DEFAULT_EVENT_BUFFER) events (see
    /// [`events_with_buffer`](Self::events_with_buffer)); a subscriber that falls behind
    /// misses events and hears [`Event::Lagged`](crate::Event::Lagged) with how many — it
    /// never slows the spool down.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use taskspool::{Context, Event, Spool, Task, TaskError};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Hello;
    /// # impl Task for Hello {
    /// #     const NAME: &'static str = "hello";
    /// #     type Output = ();
    /// #     fn run(self, _ctx: &Context) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// let spool = Spool::temporary()?;
    /// let mut events = spool.events();
    /// let handle = spool.enqueue(Hello)?;
    /// match events.recv_timeout(Duration::from_secs(5))? {
    ///     Some(Event::Enqueued(task)) => assert_eq!(task.id, handle.id()),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    pub fn events(&self) -> Events {
        self.events_with_buffer(crate::DEFAULT_EVENT_BUFFER)
    }

    /// As [`events`](Self::events), with a buffer of `buffer` events (at least 1).
    pub fn events_with_buffer(&self, buffer: usize) -> Events {
        self.shared.engine.events(buffer)
    }

    /// [`stats`](Self::stats) as Prometheus text: `taskspool_tasks{queue,state}` (gauges),
    /// `taskspool_queue_paused{queue}`, the `taskspool_tasks_*_total{queue,task}` counters
    /// since the spool opened, and the `taskspool_attempt_seconds{queue,task}` histogram of
    /// attempt run times — what a `/metrics` endpoint serves.
    ///
    /// # Errors
    /// As [`stats`](Self::stats).
    pub fn prometheus(&self) -> Result<String, Error> {
        Ok(crate::prometheus::prometheus(&self.stats()?))
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

    /// Enqueues a schedule's task now, as a fire at this moment (the task's origin names the
    /// schedule and now), durably — Flower's and Oban Web's "run now". The schedule's timing
    /// is left as it is: its next fire stays, its last fire is its last scheduled one, and a
    /// paused schedule stays paused. Returns whether a task was created: `false` when the
    /// task's unique key ([`Options::unique`](crate::Options::unique)) was held.
    ///
    /// # Errors
    /// `ScheduleNotFound` if no schedule has this name; `DiskFull`/`Storage` if the change
    /// could not be made durable.
    pub fn run_schedule_now(&self, name: &str) -> Result<bool, Error> {
        self.schedule_op(ScheduleOp::RunNow(name.to_string()))
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

    /// Returns once every change acknowledged before the call is in the queue file itself
    /// and the write-ahead log beside it has started over — what the spool does on its own
    /// after [`SpoolBuilder::checkpoint_after`](crate::SpoolBuilder::checkpoint_after) bytes
    /// of log, and at close. A copy of the queue file alone taken after it (a backup) holds
    /// every change acknowledged before the call; since such a copy cannot tell whether its
    /// log had more, it opens with [`SpoolBuilder::accept_log_damage`](crate::SpoolBuilder::accept_log_damage).
    ///
    /// # Errors
    /// `Storage` or `DiskFull` if the commit fails (nothing is lost: the log still has the
    /// changes); `Closed` if the spool is shutting down.
    pub fn checkpoint(&self) -> Result<(), Error> {
        self.shared.engine.checkpoint()
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
