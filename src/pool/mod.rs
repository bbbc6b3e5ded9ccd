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
mod thread;
mod worker;

use crew::Crew;
use thread::{Owner, Runner, Watcher};
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
        }
    }

    /// How many tasks run at once (one thread each). Default: the number of CPUs.
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
    /// The pool claims ahead only as many tasks as its threads finish during one commit of
    /// the writer (measured as it runs), so threads do not sit idle waiting for a commit when
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
    pub fn register<T: Task>(mut self) -> Self {
        self.registry.register::<T>();
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
        let reporter = self
            .shared
            .engine
            .reporter(self.concurrency.saturating_add(self.prefetch));
        let gauges = Arc::new(PoolGauges::new(self.concurrency));
        let crew = Crew::new(
            id,
            self.runner(&reporter),
            jobs_rx,
            reporter,
            gauges.clone(),
        );
        for index in 0..self.concurrency {
            // On error, the threads started exit once the job channel (`jobs_tx`) is dropped.
            crew.start(index)?;
        }
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
        Ok(Worker::new(crew, self.shared, self.shutdown_timeout))
    }

    /// Runs everything that is due, synchronously, on the calling thread, and returns when
    /// nothing due is left — for your own tests. Retries whose backoff has not passed are not
    /// due; with a [`ManualClock`](crate::ManualClock), advance it and drain again with the
    /// same builder.
    ///
    /// # Errors
    /// `InvalidOption` as for [`start`](Self::start); `Storage`/`Closed` from the writer.
    pub fn drain(&self) -> Result<DrainReport, Error> {
        let serves = self.serves()?;
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
        runner: &Runner,
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
                let Some(completion) = runner.attempt(reporter, slot, &job, &mut watcher) else {
                    // Ended by its hard limit while it ran: already reported.
                    report.attempts += 1;
                    continue;
                };
                report.attempts += 1;
                if matches!(completion.outcome, Outcome::Succeeded(_)) {
                    report.succeeded += 1;
                }
                reporter.complete(None, completion)?;
            }
            engine.sync()?;
        }
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
