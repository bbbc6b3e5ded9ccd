//! Worker threads: each runs one attempt at a time — decode, `catch_unwind(handler)`, report
//! the outcome to the writer. Also the synchronous `drain` used by tests.

use std::any::Any;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::clock::Clock;
use crate::dispatch::{Job, WorkerSlots};
use crate::error::Error;
use crate::options::DEFAULT_QUEUE;
use crate::spool::Spool;
use crate::store::transitions::Completion;
use crate::store::writer::Command;
use crate::task::{Context, Outcome, Registry, Task, TaskError, TaskId};

/// How long dropping a [`Worker`] waits for running tasks, unless configured otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Tasks claimed per round by [`WorkerBuilder::drain`].
const DRAIN_BATCH: usize = 32;

static NEXT_WORKER_ID: AtomicU64 = AtomicU64::new(1);

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
    spool: Spool,
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
    pub(crate) fn new(spool: Spool) -> Self {
        WorkerBuilder {
            spool,
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queues: Vec::new(),
            registry: Registry::default(),
            prefetch: 0,
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

    /// Tasks claimed ahead of free threads, so threads never wait for a commit between tasks.
    /// Default 0: claims never exceed free threads.
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

    fn validated_queues(&self) -> Result<Vec<String>, Error> {
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
        if queues.iter().any(String::is_empty) {
            return Err(Error::InvalidOption("queue name must not be empty".into()));
        }
        Ok(queues)
    }

    /// Starts the threads. They run until [`Worker::shutdown`] or until the `Worker` is dropped.
    ///
    /// # Errors
    /// `InvalidOption` for zero concurrency, an empty queue name or no registered task type;
    /// `Closed` if the spool's writer has stopped.
    pub fn start(self) -> Result<Worker, Error> {
        let queues = self.validated_queues()?;
        if self.concurrency == 0 {
            return Err(Error::InvalidOption(
                "concurrency must be at least 1".into(),
            ));
        }
        let id = NEXT_WORKER_ID.fetch_add(1, Ordering::Relaxed);
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        let stopping = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        let registry = Arc::new(self.registry);
        let mut threads = Vec::with_capacity(self.concurrency);
        for n in 0..self.concurrency {
            let thread = WorkerThread {
                worker: id,
                registry: registry.clone(),
                jobs: jobs_rx.clone(),
                writer: self.spool.writer().tx.clone(),
                clock: self.spool.clock().clone(),
                stopping: stopping.clone(),
                busy: busy.clone(),
                _done: done_tx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("taskspool-worker-{id}-{n}"))
                .spawn(move || thread.run())
                .map_err(|e| Error::Storage(format!("cannot start a worker thread: {e}")))?;
            threads.push(handle);
        }
        drop(done_tx);
        let slots = WorkerSlots {
            id,
            names: registry.names().into_iter().collect(),
            queues,
            capacity: self.concurrency + self.prefetch,
            outstanding: 0,
            jobs: jobs_tx,
        };
        self.spool
            .writer()
            .request(|reply| Command::Register { slots, reply })?;
        Ok(Worker {
            running: Mutex::new(Some(Running {
                id,
                stopping,
                busy,
                done: done_rx,
                threads,
            })),
            spool: self.spool,
            shutdown_timeout: self.shutdown_timeout,
        })
    }

    /// Runs everything that is due, synchronously, on the calling thread, and returns when
    /// nothing due is left — for your own tests. Retries whose backoff has not passed are not
    /// due; with a [`ManualClock`](crate::ManualClock), advance it and drain again.
    ///
    /// # Errors
    /// `InvalidOption` as for [`start`](Self::start); `Storage`/`Closed` from the writer.
    pub fn drain(self) -> Result<DrainReport, Error> {
        let queues = self.validated_queues()?;
        let names: HashSet<String> = self.registry.names().into_iter().collect();
        let mut report = DrainReport::default();
        loop {
            let jobs = self.spool.writer().request(|reply| Command::ClaimOnce {
                queues: queues.clone(),
                names: names.clone(),
                max: DRAIN_BATCH,
                reply,
            })?;
            if jobs.is_empty() {
                return Ok(report);
            }
            for job in jobs {
                let started_at_ms = self.spool.clock().now_ms();
                let outcome = run_job(&self.registry, &job);
                report.attempts += 1;
                if matches!(outcome, Outcome::Succeeded(_)) {
                    report.succeeded += 1;
                }
                self.spool.writer().send(Command::Complete {
                    worker: None,
                    completion: Completion {
                        id: job.id,
                        attempt: job.attempt,
                        started_at_ms,
                        outcome,
                    },
                })?;
            }
            self.spool.sync()?;
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
    spool: Spool,
    shutdown_timeout: Duration,
}

struct Running {
    id: u64,
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
    /// queue, and waits until every outcome is committed. Calling it again does nothing.
    ///
    /// # Errors
    /// `ShutdownTimeout` if tasks are still running at the deadline: they keep their threads
    /// and report when they finish, if the spool is still open; if the process exits first,
    /// they run again at the next open.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(running) = running else {
            return Ok(());
        };
        running.stopping.store(true, Ordering::SeqCst);
        // The writer drops our job channel: threads finish what they hold and exit.
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .spool
            .writer()
            .send(Command::Unregister {
                worker: running.id,
                reply: tx,
            })
            .is_ok()
        {
            let _ = rx.recv();
        }
        match running.done.recv_deadline(deadline) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => {
                for t in running.threads {
                    let _ = t.join();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::ShutdownTimeout {
                    running: running.busy.load(Ordering::SeqCst),
                });
            }
        }
        match self.spool.sync() {
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
    worker: u64,
    registry: Arc<Registry>,
    jobs: Receiver<Job>,
    writer: Sender<Command>,
    clock: Clock,
    stopping: Arc<AtomicBool>,
    busy: Arc<AtomicUsize>,
    /// Dropped when the thread exits; shutdown waits for all of them.
    _done: Sender<()>,
}

impl WorkerThread {
    fn run(self) {
        for job in self.jobs.iter() {
            let cmd = if self.stopping.load(Ordering::SeqCst) {
                Command::Release {
                    worker: self.worker,
                    id: job.id,
                    attempt: job.attempt,
                }
            } else {
                self.busy.fetch_add(1, Ordering::SeqCst);
                let started_at_ms = self.clock.now_ms();
                let outcome = run_job(&self.registry, &job);
                self.busy.fetch_sub(1, Ordering::SeqCst);
                Command::Complete {
                    worker: Some(self.worker),
                    completion: Completion {
                        id: job.id,
                        attempt: job.attempt,
                        started_at_ms,
                        outcome,
                    },
                }
            };
            if self.writer.send(cmd).is_err() {
                // The spool is closed; whatever this attempt did is recovered at the next open.
                return;
            }
        }
    }
}

/// Runs one attempt under `catch_unwind`. Never panics.
fn run_job(registry: &Registry, job: &Job) -> Outcome {
    let ctx = Context {
        id: TaskId(job.id),
        name: job.name.clone(),
        queue: job.queue.clone(),
        attempt: job.attempt,
        max_retries: job.max_retries,
        enqueued_at_ms: job.enqueued_at_ms,
        origin: job.origin.clone(),
    };
    let Some(handler) = registry.get(&job.name) else {
        return Outcome::Error(TaskError::retry(format!(
            "no handler registered for task `{}`",
            job.name
        )));
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
