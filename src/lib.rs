//! Celery-grade background jobs with no broker.
//!
//! taskspool keeps tasks, their state and their results in one embedded [redb] file and runs
//! them on an in-process thread pool. When [`Spool::enqueue`] returns, the task is on disk: it
//! survives `kill -9` and a power cut, and runs at least once.
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use taskspool::{Context, Spool, Task, TaskError};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! impl Task for Add {
//!     const NAME: &'static str = "add";
//!     type Output = i64;
//!     fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
//!         Ok(self.a + self.b)
//!     }
//! }
//!
//! let spool = Spool::temporary()?;            // or Spool::open("jobs.redb")
//! let worker = spool.worker().concurrency(2).register::<Add>().start()?;
//! let handle = spool.enqueue(Add { a: 2, b: 3 })?;   // durable when it returns
//! assert_eq!(handle.wait(Duration::from_secs(5))?, 5);
//! worker.shutdown(Duration::from_secs(5))?;
//! # Ok::<(), taskspool::Error>(())
//! ```
//!
//! # A tour
//!
//! - **Defining tasks.** A task is a serializable struct implementing [`Task`]: a stable
//!   `NAME`, an `Output`, and `run`. Arguments and results are stored as JSON, so tools can
//!   read them ([`TaskStatus`] carries both) and added fields survive deploys. Every error
//!   retries by default: a handler returns [`TaskError::retry`] (or any error via `?`) to
//!   retry with backoff, [`TaskError::retry_after`] for an explicit delay, or
//!   [`TaskError::fail`] to stop. Panics are caught and retried like errors.
//! - **What a handler reaches.** Its [`Context`]: the attempt's id, name, queue and number,
//!   the app data its worker was given ([`WorkerBuilder::data`], read with
//!   [`Context::data`]), follow-ups stored with the attempt's success only
//!   ([`Context::enqueue`]), and the spool ([`Context::spool`]). Each
//!   attempt runs in a `tracing` span with events for its start, success, retry and failure.
//! - **Enqueueing.** [`Spool::enqueue`], [`Spool::enqueue_with`] with [`Options`] (queue,
//!   priority 0–9, retries, [`RetryPolicy`], countdown/ETA, expiry), and
//!   [`Spool::enqueue_many`] for a batch in one transaction.
//! - **Running.** [`Spool::worker`] configures a pool ([`WorkerBuilder`]): concurrency, queues,
//!   task types, app data. [`Worker::shutdown`] is graceful ([`Worker::shutdown_all`] stops
//!   several pools within one deadline); dropping the worker does the same.
//!   [`WorkerBuilder::drain`] runs everything due on the calling thread, for tests.
//! - **Results.** [`TaskHandle::wait`] returns the output or the final failure with every
//!   attempt's error. [`Spool::status`] shows state, times, history, arguments and output;
//!   an unknown id is [`Error::NotFound`]. Every view serializes to JSON. Finished tasks are
//!   pruned after a TTL (one day by default).
//! - **Periodic tasks.** [`Spool::schedule`] declares a [`Schedule`] — a 5-field crontab in a
//!   time zone, or an interval — with a [`MisfirePolicy`] for fires missed while the file was
//!   closed. Declaring is an upsert; [`Spool::schedules`] lists them with their next fire.
//!   Each (schedule, fire time) is enqueued exactly once.
//! - **Time.** Every time read goes through a clock; tests use a [`ManualClock`], which wakes
//!   the spool when it moves, so tests never sleep for a countdown.
//! - **Options.** [`SpoolBuilder`] sets the results TTL, redb's cache size, the clock, the
//!   [`Durability`] mode and how much write-ahead log accumulates between checkpoints.
//!
//! - **Control.** [`Spool::revoke`] (durable; a running task's handler sees
//!   [`Context::is_cancelled`], and it ends `Revoked` even across a crash),
//!   [`Spool::revoke_where`], soft and hard time limits ([`Options::time_limit`]),
//!   [`TaskError::snooze`], [`Spool::retry`] and [`Spool::forget`] of finished tasks, and
//!   progress ([`Context::set_progress`], shown by [`Spool::status`]).
//! - **Flow control.** [`Spool::limit`] declares a [`Limit`] on a task type or a queue — a
//!   [`Rate`] (`"10/s"`), a concurrency, a concurrency per [`Options::limit_key`] — held by
//!   the writer for every pool at once and stored in the file; [`Spool::pause_queue`] stops
//!   claims from a queue, also across restarts. [`Options::unique`] makes an enqueue return
//!   the waiting task with the same key instead of a second one
//!   ([`TaskHandle::is_duplicate`]), exactly, however many producers race.
//!
//! - **Workflows.** [`Spool::chain`] (each step reads the one before's output with
//!   [`Context::input`]), [`Spool::group`] ([`GroupHandle::wait`] returns every output in
//!   order) and [`Spool::chord`] (a body that runs once after every member succeeded,
//!   reading their outputs with [`Context::inputs`]), each stored in one transaction and
//!   advanced in the transactions of the completions that trigger it; callbacks on success
//!   or failure ([`Spool::enqueue_linked`], [`Link`]); any shape with [`Spool::workflow`];
//!   [`Spool::workflow_status`] and [`Spool::revoke_workflow`].
//! - **Seeing a queue.** [`Spool::tasks`] lists tasks by [`TaskFilter`] (states, queue,
//!   name, schedule, enqueue time) a [`Paging`] at a time, from an index by state;
//!   [`Spool::events`] subscribes to lifecycle [`Event`]s, each sent once durable, through a
//!   bounded buffer ([`Event::Lagged`] says what a slow subscriber missed);
//!   [`Stats::metrics`] and [`Spool::prometheus`] give counts, recent outcomes and run-time
//!   histograms per queue and task name; [`Spool::inspect`] reads a closed file without
//!   writing to it.
//! - **Other processes.** The owner serves a control socket beside the file;
//!   [`Client::connect`] in another process offers the spool's calls (an enqueue by name with
//!   [`Client::enqueue_json`], durable after the owner's sync) and its events. The
//!   `taskspool` binary (feature `cli`) uses it, and reads closed files through
//!   [`Spool::inspect`].
//! - **A web dashboard** (feature `dashboard`): `Spool::serve_dashboard`,
//!   `Client::serve_dashboard` and `Inspection::serve_dashboard` serve an overview, task
//!   lists and pages, failures, schedules and pools in a browser, a JSON API and `/metrics`;
//!   read-only unless given a token (`DashboardOptions`); `taskspool dashboard FILE`.
//!
//! - **From async code** (feature `tokio`): an `AsyncTask` is an async handler, registered
//!   with `WorkerBuilder::register_async` on the application's runtime
//!   (`WorkerBuilder::runtime`): concurrency bounds the attempts in flight, a revoke or the
//!   hard time limit drops the future, `Context::cancelled` resolves at the soft limit.
//!   `Spool::enqueue_async` and its batch forms resolve once durable without syncing on the
//!   runtime's thread; `TaskHandle::wait_async` is woken by the writer through a one-shot;
//!   `Worker::shutdown_async` waits off the runtime's threads. `examples/web_service.rs` is
//!   an axum service built on them.
//!
//! - **On PostgreSQL** (feature `postgres`): `Spool::connect_postgres(url)` in place of
//!   `Spool::open(path)` keeps every task type, option, schedule and worker, for any number
//!   of processes and machines on one database: claims by `FOR UPDATE SKIP LOCKED`,
//!   wake-ups by `LISTEN/NOTIFY`, leases with heartbeats for crash recovery, exactly-once
//!   schedule fires, batched enqueues and completions, metrics per process, and the
//!   `taskspool` command line given the database. `SpoolBuilder::connect_postgres_temporary`
//!   gives a test a schema of its own.
//!
//! # Guarantees
//!
//! - *Durable acknowledgement*: `enqueue` returns after its change is in the write-ahead log
//!   and the log is `fdatasync`ed (concurrent callers share one sync). The opt-in
//!   [`Durability::Buffered`] mode acknowledges once the record is written to the OS and syncs
//!   within a bound: a process crash still loses nothing, a power cut loses at most the bound.
//! - *At-least-once*: an attempt running when the process died runs again at the next open,
//!   at once (the file lock makes this process the only owner, so no timeout is guessed).
//!   Lost attempts count toward `max_retries`, so a task that kills the process ends
//!   `Failed` instead of looping.
//! - *Fenced attempts*: a report from an attempt that is no longer current is discarded.
//! - *Nothing silently dropped*: undecodable arguments end `Failed` with the decode error;
//!   unknown task names wait, visible in [`Spool::stats`], until a worker registers them;
//!   expired tasks end `Expired` with the reason.
//! - *Clear errors on bad files*: [`Error`] tells a locked, damaged, foreign or newer-format
//!   file apart, and a full disk, without modifying the file.
//!
//! # Data flow
//!
//! One writer at a time folds everything pending (enqueues, completions, schedule fires,
//! promotions of due tasks, expiries, pruning, claims for free worker slots) into one redb
//! transaction, appends the rows it changed to a write-ahead log (`<file>.wal`) with one
//! `fdatasync`, and only then replies and hands out jobs. The transaction stays open for the
//! next group and is committed to redb (without a sync) when a reader needs it. The writer is
//! a thread that callers send commands to; an `enqueue` that finds it idle runs its own group
//! instead, which saves two thread wake-ups. Every 16 MiB of log the queue file is committed
//! durably and the log starts over; an open after a crash replays the log. Worker threads run
//! attempts and send outcomes back. Reads (`status`, `wait`) use snapshots, after the writer
//! has committed what it holds; `stats` reads the writer's in-memory counts.
//! See `docs/design.md` in the repository for the tables and state machine.
//!
//! [redb]: https://docs.rs/redb

#![deny(missing_docs)]

// The public face, top down: the spool handle, its pools and task handles, the registry of
// task types a pool runs, the user's task definitions, the context an attempt sees and what
// the handles share, options, the views reads return, the storage engine (`store`, the only
// module that names redb), and at the bottom the model and utilities.
mod spool;

mod pool;
mod result;

mod registry;

mod schedule;
mod task;
#[cfg(feature = "tokio")]
mod task_async;

mod context;
mod shared;
mod task_error;

mod flow;
mod options;
mod prometheus;
mod protocol;
mod query;
mod views;

mod store;

mod client;
mod clock;
#[cfg(feature = "dashboard")]
mod dashboard;
mod error;
mod events;
mod inspect;
mod metrics;
mod model;
mod retry;
mod serve;
mod signal;
mod sync;
mod timekeeper;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod power_tests;

pub use client::{Client, RemoteEvents};
pub use clock::ManualClock;
pub use context::{Context, MAX_PROGRESS_BYTES};
#[cfg(feature = "dashboard")]
pub use dashboard::{DEFAULT_DASHBOARD_ADDR, Dashboard, DashboardOptions};
pub use error::{Error, ErrorKind, Failure};
pub use events::{DEFAULT_EVENT_BUFFER, Event, Events, TaskEvent};
pub use flow::{Limit, LimitTarget, Rate};
pub use inspect::Inspection;
pub use metrics::{Outcomes, RUNTIME_BUCKETS_US, RunTimes, TaskMetrics};
pub use model::{
    AttemptError, AttemptErrorKind, DEFAULT_MAX_RETRIES, DEFAULT_QUEUE, MAX_DELAY, MAX_PRIORITY,
    Revoke, Revoked, TaskId, TaskState,
};
pub use options::{Expiry, MAX_KEY_BYTES, Options, Unique};
pub use pool::{
    DEFAULT_MAX_PREFETCH, DEFAULT_SHUTDOWN_TIMEOUT, DrainReport, Worker, WorkerBuilder,
};
pub use query::{MAX_PAGE, Paging, SCAN_BUDGET, TaskFilter};
pub use result::TaskHandle;
pub use retry::RetryPolicy;
pub use schedule::{MISFIRE_GRACE, MisfirePolicy, Schedule, ScheduleInfo};
pub use spool::{
    Chain, ChordHandle, DEFAULT_CACHE_BYTES, DEFAULT_CHECKPOINT_BYTES, DEFAULT_RESULT_TTL,
    Durability, GroupHandle, Link, Spool, SpoolBuilder, Step, StepId, StoredWorkflow, Workflow,
};
#[cfg(feature = "postgres")]
pub use spool::{DEFAULT_LEASE, DEFAULT_POSTGRES_SCHEMA, MIN_LEASE};
pub use task::Task;
#[cfg(feature = "tokio")]
pub use task_async::AsyncTask;
pub use task_error::TaskError;
pub use views::{PoolStats, QueueStats, Stats, TaskPage, TaskStatus, WorkflowStatus};
