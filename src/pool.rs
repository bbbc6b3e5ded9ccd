//! Worker threads: each runs one attempt at a time — decode, `catch_unwind(handler)`, report
//! the outcome to the engine. Also the synchronous `drain` used by tests.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::clock::Clock;
use crate::error::Error;
use crate::model::{DEFAULT_QUEUE, Outcome, PoolId};
use crate::options::check_queue_name;
use crate::shared::Shared;
use crate::store::{Completion, Job, PoolSpec, Reporter, Serves, ThreadSlot};
use crate::task::{Context, Registry, Task, TaskError};

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
    queues: Vec<String>,
    registry: Registry,
    prefetch: usize,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .field("tasks", &self.registry.names())
            .field("prefetch", &self.prefetch)
            .finish()
    }
}

impl WorkerBuilder {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        WorkerBuilder {
            shared,
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queues: Vec::new(),
            registry: Registry::default(),
            prefetch: DEFAULT_MAX_PREFETCH,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// How many tasks run at once (one thread each). Default: the number of CPUs.
    pub fn concurrency(mut self, threads: usize) -> Self {
        self.concurrency = threads;
        self
    }

    /// Serves these queues (replacing the default `"default"`). Across queues, higher
    /// priority runs first, then older tasks.
    pub fn queues<S: Into<String>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one queue to serve.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queues.push(queue.into());
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
    pub fn register<T: Task>(mut self) -> Self {
        self.registry.register::<T>();
        self
    }

    /// What the pool can run, checked: at least one task type, and valid queue names
    /// (`"default"` when none is named).
    fn serves(&self) -> Result<Serves, Error> {
        if self.registry.is_empty() {
            return Err(Error::InvalidOption(
                "a worker needs at least one task type: call register::<T>()".into(),
            ));
        }
        let queues = if self.queues.is_empty() {
            vec![DEFAULT_QUEUE.to_string()]
        } else {
            self.queues.clone()
        };
        for queue in &queues {
            check_queue_name(queue)?;
        }
        Ok(Serves {
            queues,
            names: self.registry.names().into_iter().collect(),
        })
    }

    /// Starts the threads. They run until [`Worker::shutdown`] or until the `Worker` is dropped.
    ///
    /// # Errors
    /// `InvalidOption` for zero concurrency, an empty or over-long queue name or no registered
    /// task type; `Closed` if the spool's writer has stopped.
    pub fn start(self) -> Result<Worker, Error> {
        let serves = self.serves()?;
        if self.concurrency == 0 {
            return Err(Error::InvalidOption(
                "concurrency must be at least 1".into(),
            ));
        }
        let id = PoolId(NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed));
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let stopping = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let registry = Arc::new(self.registry);
        let reporter = self
            .shared
            .engine
            .reporter(self.concurrency.saturating_add(self.prefetch));
        let mut threads = Vec::with_capacity(self.concurrency);
        for n in 0..self.concurrency {
            let thread = WorkerThread {
                pool: id,
                registry: registry.clone(),
                jobs: jobs_rx.clone(),
                reporter: reporter.clone(),
                clock: self.shared.clock.clone(),
                stopping: stopping.clone(),
                busy: busy.clone(),
                _done: done_tx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("taskspool-worker-{}-{n}", id.0))
                .spawn(move || thread.run())
                .map_err(|e| Error::storage_from("cannot start a worker thread", e))?;
            threads.push(handle);
        }
        drop(done_tx);
        let spec = PoolSpec {
            id,
            serves,
            threads: self.concurrency,
            max_prefetch: self.prefetch,
        };
        if let Err(e) = self.shared.engine.register(spec, jobs_tx) {
            // The threads exit once the engine drops the pool's job channel.
            self.shared.engine.unregister(id);
            return Err(e);
        }
        Ok(Worker {
            running: Mutex::new(Some(Running {
                id,
                stopping,
                busy,
                done: done_rx,
                threads,
            })),
            shared: self.shared,
            shutdown_timeout: self.shutdown_timeout,
        })
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
        let mut slot = reporter.join();
        let result = self.drain_rounds(&serves, &*reporter, &mut slot, &mut report);
        reporter.leave(slot);
        result.map(|()| report)
    }

    fn drain_rounds(
        &self,
        serves: &Serves,
        reporter: &dyn Reporter,
        slot: &mut ThreadSlot,
        report: &mut DrainReport,
    ) -> Result<(), Error> {
        let engine = &self.shared.engine;
        loop {
            let jobs = engine.claim(serves, DRAIN_BATCH)?;
            if jobs.is_empty() {
                return Ok(());
            }
            for job in jobs {
                let completion = attempt(&self.registry, reporter, slot, &self.shared.clock, &job);
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

/// A running worker pool. Dropping it shuts it down gracefully (see
/// [`WorkerBuilder::shutdown_timeout`]).
pub struct Worker {
    running: Mutex<Option<Running>>,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
}

struct Running {
    id: PoolId,
    stopping: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
    done: Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("busy", &self.busy())
            .finish()
    }
}

impl Worker {
    /// Stops claiming, lets running tasks finish, returns claimed-but-unstarted tasks to the
    /// queue, and waits until every outcome is committed. Once it has returned `Ok`, calling
    /// it again does nothing; after a `ShutdownTimeout`, calling it again waits again for the
    /// tasks still running.
    ///
    /// # Errors
    /// `ShutdownTimeout` if tasks are still running at the deadline: they keep their threads
    /// and report when they finish, if the spool is still open; if the process exits first,
    /// they run again at the next open.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let taken = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(running) = taken else {
            return Ok(());
        };
        if !running.stopping.swap(true, Ordering::SeqCst) {
            // The engine drops our job channel: threads finish what they hold and exit.
            self.shared.engine.unregister(running.id);
        }
        match running.done.recv_deadline(deadline) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                for t in running.threads {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let busy = running.busy.load(Ordering::SeqCst);
                // Not finished: a later call waits again.
                *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
                return Err(Error::ShutdownTimeout { running: busy });
            }
        }
        match self.shared.engine.sync() {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// How many attempts are executing right now.
    pub fn busy(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |r| r.busy.load(Ordering::SeqCst))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(self.shutdown_timeout) {
            tracing::warn!(error = %e, "worker shutdown on drop did not complete cleanly");
        }
    }
}

/// One pool thread's view.
struct WorkerThread {
    pool: PoolId,
    registry: Arc<Registry>,
    jobs: Receiver<Job>,
    reporter: Arc<dyn Reporter>,
    clock: Clock,
    stopping: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
    /// Dropped when the thread exits; shutdown waits for all of them.
    _done: Sender<()>,
}

impl WorkerThread {
    fn run(self) {
        let mut slot = self.reporter.join();
        self.serve(&mut slot);
        self.reporter.leave(slot);
    }

    fn serve(&self, slot: &mut ThreadSlot) {
        for job in self.jobs.iter() {
            let sent = if self.stopping.load(Ordering::SeqCst) {
                self.reporter.release(self.pool, job.id, job.attempt)
            } else {
                self.busy.fetch_add(1, Ordering::SeqCst);
                let completion = attempt(&self.registry, &*self.reporter, slot, &self.clock, &job);
                self.busy.fetch_sub(1, Ordering::SeqCst);
                self.reporter.complete(Some(self.pool), completion)
            };
            if sent.is_err() {
                // The spool is closed; whatever this attempt did is recovered at the next open.
                return;
            }
        }
    }
}

/// Runs one attempt on this thread: notes its start, runs it, and reports what happened.
fn attempt(
    registry: &Registry,
    reporter: &dyn Reporter,
    slot: &mut ThreadSlot,
    clock: &Clock,
    job: &Job,
) -> Completion {
    reporter.starting(slot, job.id, job.attempt);
    let started_at_ms = clock.now_ms();
    let timer = Instant::now();
    let outcome = run_job(registry, job);
    Completion {
        id: job.id,
        attempt: job.attempt,
        started_at_ms,
        run_us: u64::try_from(timer.elapsed().as_micros()).unwrap_or(u64::MAX),
        outcome,
    }
}

/// Runs one attempt under `catch_unwind`. Never panics.
fn run_job(registry: &Registry, job: &Job) -> Outcome {
    let ctx = Context {
        id: job.id,
        name: job.name.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
        max_retries: job.max_retries,
        enqueued_at_ms: job.enqueued_at_ms,
        origin: job.origin.clone(),
    };
    let Some(handler) = registry.get(&job.name) else {
        return TaskError::retry(format!("no handler registered for task `{}`", job.name))
            .into_outcome();
    };
    catch_unwind(AssertUnwindSafe(|| handler(&job.payload, &ctx)))
        .unwrap_or_else(|panic| Outcome::Panicked(panic_message(panic.as_ref())))
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    };
    format!("panicked: {text}")
}
