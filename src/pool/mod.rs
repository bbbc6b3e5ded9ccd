//! Worker pools: [`WorkerBuilder`] configures one and starts its threads (or drains the due
//! tasks on the calling thread, for tests); `worker` is the running pool and its shutdown;
//! `crew` its threads; `thread` runs one attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::context::{AppData, Env};
use crate::error::Error;
use crate::model::{DEFAULT_QUEUE, Outcome, PoolId};
use crate::options::check_queue_name;
use crate::registry::Registry;
use crate::shared::Shared;
use crate::store::{PoolGauges, PoolSpec, Reporter, Serves, ThreadSlot};
use crate::task::Task;

mod crew;
#[cfg(feature = "tokio")]
mod runtime;
mod thread;
mod worker;

use crew::Crew;
use thread::{Owner, Runner, Watcher};
use worker::Running;
pub use worker::Worker;

/// How long dropping a [`Worker`] waits for running tasks, unless configured otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most tasks a pool claims ahead of its free threads unless configured otherwise.
pub const DEFAULT_MAX_PREFETCH: usize = 1024;

/// Tasks claimed per round by [`WorkerBuilder::drain`].
const DRAIN_BATCH: usize = 32;

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// Configures a worker pool: how many threads, which queues, which task types.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # use taskspool::{Context, Spool, Task, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Ping;
/// # impl Task for Ping {
/// #     const NAME: &'static str = "ping";
/// #     type Output = ();
/// #     fn run(self, _: &Context) -> Result<(), TaskError> { Ok(()) }
/// # }
/// let spool = Spool::temporary()?;
/// let worker = spool
///     .worker()
///     .concurrency(2)
///     .queues(["default", "mail"])
///     .register::<Ping>()
///     .start()?;
/// worker.shutdown(std::time::Duration::from_secs(5))?;
/// # Ok::<(), taskspool::Error>(())
/// ```
pub struct WorkerBuilder {
    shared: Arc<Shared>,
    concurrency: usize,
    /// `None`: the default queue only.
    queues: Option<Vec<String>>,
    registry: Registry,
    data: AppData,
    prefetch: usize,
    shutdown_timeout: Duration,
    /// Where attempts run as futures (feature `tokio`); `None`: on the pool's threads.
    #[cfg(feature = "tokio")]
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .field("tasks", &self.registry.names())
            .field("data", &self.data.type_names())
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WorkerBuilder {
            shared,
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queues: None,
            registry: Registry::default(),
            data: AppData::default(),
            prefetch: DEFAULT_MAX_PREFETCH,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            #[cfg(feature = "tokio")]
            runtime: None,
        }
    }

    /// How many tasks run at once (one thread each). Default: the number of CPUs.
    ///
    /// On a runtime (`WorkerBuilder::runtime`, feature `tokio`) it bounds the attempts in
    /// flight instead, not threads: a pool of 1,000 waits on 1,000 HTTP calls at once.
    pub fn concurrency(mut self, threads: usize) -> Self {
        self.concurrency = threads;
        self
    }

    /// Serves exactly these queues. Across queues, higher priority runs first, then older
    /// tasks. Without `queues` or [`queue`](Self::queue), a pool serves `"default"`.
    pub fn queues<S: Into<String>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Adds a queue to the ones this pool serves. As with Celery's `-Q`, naming any queue
    /// means the pool serves only the queues named: `.queue("mail")` serves `mail` and not
    /// `"default"` (add `.queue("default")` to serve both).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.get_or_insert_with(Vec::new).push(queue.into());
        self
    }

    /// The most tasks claimed ahead of free threads. Default [`DEFAULT_MAX_PREFETCH`].
    ///
    /// The pool claims ahead only as many tasks as its threads finish during one claim cycle
    /// (a commit of the writer; on PostgreSQL, a claim's round trip; measured as it runs), so threads do not sit idle waiting for a commit when
    /// tasks are short, while long tasks are claimed only as threads free up — a newly
    /// enqueued high-priority task never waits behind a long local backlog. Arguments held
    /// ahead are also capped at about 8 MiB. `0` disables
    /// claiming ahead. A claimed task that had not started when the process died is requeued
    /// without losing an attempt.
    pub fn prefetch(mut self, tasks: usize) -> Self {
        self.prefetch = tasks;
        self
    }

    /// How long dropping the [`Worker`] waits for running tasks. Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Registers a task type this pool can run.
    ///
    /// A task name means one Rust type in a spool: registering another type under a `NAME`
    /// already registered — in this pool or another pool of the spool — makes
    /// [`start`](Self::start) and [`drain`](Self::drain) fail with `InvalidOption` naming
    /// both types. (Otherwise a task could run with another type's handler whenever its JSON
    /// happened to fit.)
    ///
    /// An `AsyncTask` (feature `tokio`) is registered with `register_async` instead:
    /// registering one here makes `start` fail with `InvalidOption`.
    pub fn register<T: Task>(mut self) -> Self {
        self.registry.register::<T>();
        self
    }

    /// Runs this pool's attempts on a tokio runtime (feature `tokio`): each attempt is a
    /// task spawned with `handle`, and [`concurrency`](Self::concurrency) bounds how many
    /// are in flight. Async tasks ([`register_async`](Self::register_async)) need it; sync
    /// tasks of the same pool run on the runtime's blocking threads (`spawn_blocking`).
    ///
    /// The runtime must be running while the pool is: a multi-thread runtime, or a
    /// current-thread one whose thread is in `block_on`. If it shuts down while the pool
    /// runs, its attempts' futures are dropped — an attempt that had started fails and is
    /// retried by its policy, one that had not goes back to its queue — and the pool stops
    /// claiming (a line is logged); its tasks wait for another pool. A blocking
    /// [`Worker::shutdown`] on the thread of the current-thread runtime the pool runs on
    /// cannot wait for the attempts, which need that thread: it stops claiming and returns
    /// [`Error::WouldDeadlock`]; await [`Worker::shutdown_async`] there instead.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use taskspool::{AsyncTask, Context, Spool, TaskError};
    /// # #[derive(Serialize, Deserialize)] struct Ping;
    /// # impl AsyncTask for Ping {
    /// #     const NAME: &'static str = "ping";
    /// #     type Output = ();
    /// #     async fn run(self, _: Context) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// let runtime = tokio::runtime::Builder::new_multi_thread()
    ///     .worker_threads(2)
    ///     .enable_all()
    ///     .build()
    ///     .unwrap();
    /// let spool = Spool::temporary()?;
    /// let worker = spool
    ///     .worker()
    ///     .runtime(runtime.handle().clone())
    ///     .concurrency(64)
    ///     .register_async::<Ping>()
    ///     .start()?;
    /// let handle = spool.enqueue(Ping)?;
    /// handle.wait(std::time::Duration::from_secs(5))?;
    /// worker.shutdown(std::time::Duration::from_secs(5))?;
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    #[cfg(feature = "tokio")]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Registers an async task type this pool can run (feature `tokio`), on the runtime
    /// given with [`runtime`](Self::runtime) (without one, `start` and `drain` fail with
    /// `InvalidOption`). Names are checked as for [`register`](Self::register).
    #[cfg(feature = "tokio")]
    pub fn register_async<T: crate::AsyncTask>(mut self) -> Self {
        self.registry.register_async::<T>();
        self
    }

    /// Gives every task of this pool a value of type `T`, read in a handler with
    /// [`Context::data`](crate::Context::data): a database pool, an HTTP client,
    /// configuration. One value per type; give several types by calling `data` for each.
    /// The value is shared by every attempt (wrap state that changes in a `Mutex` or an
    /// atomic) and dropped when the pool is.
    ///
    /// Giving the same type twice makes [`start`](Self::start) and [`drain`](Self::drain)
    /// fail with `InvalidOption` (use newtypes for two values of one type).
    pub fn data<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.data.insert(value);
        self
    }

    /// What the pool can run, checked: at least one task type, one type per name (also
    /// across the spool's pools, which claims the names), app data given once per type,
    /// and valid queue names (`"default"` when none is named).
    fn serves(&self) -> Result<Serves, Error> {
        self.registry.check()?;
        #[cfg(feature = "tokio")]
        if self.registry.has_async() && self.runtime.is_none() {
            return Err(Error::InvalidOption(
                "register_async::<T>() needs a runtime to run the task's futures on: give the \
                 pool one with .runtime(handle) (for example tokio::runtime::Handle::current())"
                    .into(),
            ));
        }
        self.data.check()?;
        let queues = match &self.queues {
            None => vec![DEFAULT_QUEUE.to_string()],
            Some(queues) if queues.is_empty() => {
                return Err(Error::InvalidOption(
                    "queues([]) names no queue, so the worker would never run anything; name \
                     at least one queue (without queues(..) a worker serves \"default\")"
                        .into(),
                ));
            }
            Some(queues) => queues.clone(),
        };
        for queue in &queues {
            check_queue_name(queue)?;
        }
        self.shared.claim_names(&self.registry.types())?;
        Ok(Serves {
            queues,
            names: self.registry.names().into_iter().collect(),
        })
    }

    /// What every attempt of this pool runs with.
    fn runner(&self, reporter: &Arc<dyn Reporter>) -> Arc<Runner> {
        Arc::new(Runner {
            registry: Arc::new(self.registry.clone()),
            env: Env::new(self.data.clone(), &self.shared, reporter.clone()),
            clock: self.shared.clock.clone(),
            default_limits: self.shared.default_limits,
            keeper: self.shared.timekeeper.clone(),
        })
    }

    /// Starts the threads. They run until [`Worker::shutdown`] or until the `Worker` is dropped.
    ///
    /// # Errors
    /// `InvalidOption` for zero concurrency, no queue or an invalid queue name, no registered
    /// task type, a task name registered with two types (here or in another pool of the
    /// spool) or app data given twice; `Closed` if the spool's writer has stopped.
    pub fn start(self) -> Result<Worker, Error> {
        if self.concurrency == 0 {
            return Err(Error::InvalidOption(
                "concurrency must be at least 1".into(),
            ));
        }
        let serves = self.serves()?;
        let id = PoolId(NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed));
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        // A thread's ring of start notes outlives its attempts' completions until they are
        // durable (see `store::inflight`); a runtime's places share a bounded journal.
        let ring = self.concurrency.saturating_add(self.prefetch);
        #[cfg(feature = "tokio")]
        let ring = if self.runtime.is_some() {
            runtime::notes_per_place(self.concurrency, self.prefetch)
        } else {
            ring
        };
        let reporter = self.shared.engine.reporter(ring);
        let gauges = Arc::new(PoolGauges::new(self.concurrency));
        let runner = self.runner(&reporter);
        #[cfg(feature = "tokio")]
        let on_runtime = match &self.runtime {
            Some(handle) => Some(Running::Runtime(runtime::RuntimePool::start(
                id,
                runner.clone(),
                jobs_rx.clone(),
                reporter.clone(),
                handle.clone(),
                &self.shared,
                gauges.clone(),
            )?)),
            None => None,
        };
        #[cfg(not(feature = "tokio"))]
        let on_runtime = None;
        // On error, the threads started exit once the job channel (`jobs_tx`) is dropped.
        let running = match on_runtime {
            Some(running) => running,
            None => {
                let crew = Crew::new(id, runner, jobs_rx, reporter, gauges.clone());
                for index in 0..self.concurrency {
                    crew.start(index)?;
                }
                Running::Threads(crew)
            }
        };
        let spec = PoolSpec {
            id,
            serves,
            threads: self.concurrency,
            max_prefetch: self.prefetch,
            gauges,
        };
        if let Err(e) = self.shared.engine.register(spec, jobs_tx) {
            // The threads exit once the engine drops the pool's job channel.
            self.shared.engine.unregister(id);
            return Err(e);
        }
        Ok(Worker::new(running, self.shared, self.shutdown_timeout))
    }

    /// Runs everything that is due, synchronously, on the calling thread, and returns when
    /// nothing due is left — for your own tests. Retries whose backoff has not passed are not
    /// due; with a [`ManualClock`](crate::ManualClock), advance it and drain again with the
    /// same builder.
    ///
    /// Async tasks (feature `tokio`) run one at a time on the pool's runtime while this
    /// thread waits: call it outside the runtime, or inside a multi-thread one (in a
    /// current-thread runtime's own thread it returns [`Error::WouldDeadlock`]).
    ///
    /// # Errors
    /// `InvalidOption` as for [`start`](Self::start); `Storage`/`Closed` from the writer;
    /// `WouldDeadlock` as above.
    pub fn drain(&self) -> Result<DrainReport, Error> {
        let serves = self.serves()?;
        #[cfg(feature = "tokio")]
        if let Some(handle) = &self.runtime
            && self.registry.has_async()
            && runtime::drives(handle)
        {
            return Err(Error::WouldDeadlock(
                "drain waits on the calling thread for async attempts, which run on the \
                 pool's runtime — and this is the thread of that current-thread runtime: call \
                 drain from outside the runtime (for example in spawn_blocking), or use a \
                 multi-thread runtime"
                    .into(),
            ));
        }
        let mut report = DrainReport::default();
        let reporter = self.shared.engine.reporter(DRAIN_BATCH);
        let runner = self.runner(&reporter);
        let mut slot = reporter.join();
        let result = self.drain_rounds(&runner, &serves, &reporter, &mut slot, &mut report);
        reporter.leave(slot);
        result.map(|()| report)
    }

    fn drain_rounds(
        &self,
        runner: &Arc<Runner>,
        serves: &Serves,
        reporter: &Arc<dyn Reporter>,
        slot: &mut ThreadSlot,
        report: &mut DrainReport,
    ) -> Result<(), Error> {
        let engine = &self.shared.engine;
        let mut watcher = Watcher::new(Owner::Drain);
        loop {
            let jobs = engine.claim(serves, DRAIN_BATCH)?;
            if jobs.is_empty() {
                return Ok(());
            }
            for job in jobs {
                report.attempts += 1;
                let Some(completion) = self.drain_one(runner, reporter, slot, job, &mut watcher)?
                else {
                    // Ended by its hard limit while it ran: already reported.
                    continue;
                };
                if matches!(completion.outcome, Outcome::Succeeded(_)) {
                    report.succeeded += 1;
                }
                reporter.complete(None, completion)?;
            }
            engine.sync()?;
        }
    }

    /// One attempt of a drain: on this thread, or an async task's on the pool's runtime.
    fn drain_one(
        &self,
        runner: &Arc<Runner>,
        reporter: &Arc<dyn Reporter>,
        slot: &mut ThreadSlot,
        job: crate::store::Job,
        watcher: &mut Watcher,
    ) -> Result<Option<crate::store::Completion>, Error> {
        #[cfg(feature = "tokio")]
        if let Some(handle) = &self.runtime
            && runner.is_async(&job.name)
        {
            return runtime::drain_one(handle, runner, reporter, slot, job, watcher);
        }
        Ok(runner.attempt(reporter, slot, &job, watcher))
    }
}

/// What [`WorkerBuilder::drain`] ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Attempts run.
    pub attempts: usize,
    /// Attempts that succeeded.
    pub succeeded: usize,
}
