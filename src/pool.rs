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
use crate::store::command::Command;
use crate::store::inflight::Inflight;
use crate::store::transitions::Completion;
use crate::task::{Context, Outcome, Registry, Task, TaskError, TaskId};

/// How long dropping a [`Worker`] waits for running tasks, unless configured otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The most tasks a pool claims ahead of its free threads unless configured otherwise.
pub const DEFAULT_MAX_PREFETCH: usize = 1024;

/// Tasks claimed per round by [`WorkerBuilder::drain`].
const DRAIN_BATCH: usize = 32;

static NEXT_WORKER_ID: AtomicU64 = AtomicU64::new(1);

/// The running pools of a spool, as readers see them: which queues each serves and which task
/// names it knows. A due task is *unregistered* when some pool serves its queue and none of
/// those pools knows its name.
#[derive(Default)]
pub(crate) struct LiveWorkers {
    pools: std::sync::RwLock<Vec<LivePool>>,
}

/// A running pool's id, queues and task names.
type LivePool = (u64, Vec<String>, HashSet<String>);

impl LiveWorkers {
    fn add(&self, id: u64, queues: Vec<String>, names: HashSet<String>) {
        self.pools
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, queues, names));
    }

    fn remove(&self, id: u64) {
        self.pools
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|p| p.0 != id);
    }

    /// Whether a pool serves `queue` and none of the pools serving it knows `name`.
    pub(crate) fn is_unregistered(&self, queue: &str, name: &str) -> bool {
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        let serving: Vec<_> = pools
            .iter()
            .filter(|p| p.1.iter().any(|q| q == queue))
            .collect();
        !serving.is_empty() && !serving.iter().any(|p| p.2.contains(name))
    }

    /// The queues at least one pool serves.
    pub(crate) fn served_queues(&self) -> HashSet<String> {
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        pools.iter().flat_map(|p| p.1.iter().cloned()).collect()
    }
}

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
                inflight: self.spool.inflight().clone(),
                _done: done_tx.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("taskspool-worker-{id}-{n}"))
                .spawn(move || thread.run())
                .map_err(|e| Error::Storage(format!("cannot start a worker thread: {e}")))?;
            threads.push(handle);
        }
        drop(done_tx);
        let names: HashSet<String> = registry.names().into_iter().collect();
        self.spool.live().add(id, queues.clone(), names.clone());
        let slots = WorkerSlots::new(id, queues, names, self.concurrency, self.prefetch, jobs_tx);
        if let Err(e) = self
            .spool
            .writer()
            .request(|reply| Command::Register { slots, reply })
        {
            self.spool.live().remove(id);
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
        let slot = self.spool.inflight().acquire();
        let result = self.drain_rounds(&queues, &names, slot, &mut report);
        self.spool.inflight().release(slot);
        result.map(|()| report)
    }

    fn drain_rounds(
        &self,
        queues: &[String],
        names: &HashSet<String>,
        slot: u64,
        report: &mut DrainReport,
    ) -> Result<(), Error> {
        loop {
            let jobs = self.spool.writer().request(|reply| Command::ClaimOnce {
                queues: queues.to_vec(),
                names: names.clone(),
                max: DRAIN_BATCH,
                reply,
            })?;
            if jobs.is_empty() {
                return Ok(());
            }
            for job in jobs {
                let completion = attempt(
                    &self.registry,
                    self.spool.inflight(),
                    slot,
                    self.spool.clock(),
                    &job,
                );
                report.attempts += 1;
                if matches!(completion.outcome, Outcome::Succeeded(_)) {
                    report.succeeded += 1;
                }
                self.spool.writer().send(Command::Complete {
                    worker: None,
                    completion,
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
        self.spool.live().remove(running.id);
        // The writer drops our job channel: threads finish what they hold and exit.
        let (tx, rx) = crate::sync::oneshot();
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
    inflight: Arc<Inflight>,
    /// Dropped when the thread exits; shutdown waits for all of them.
    _done: Sender<()>,
}

impl WorkerThread {
    fn run(self) {
        let slot = self.inflight.acquire();
        self.serve(slot);
        self.inflight.release(slot);
    }

    fn serve(&self, slot: u64) {
        for job in self.jobs.iter() {
            let cmd = if self.stopping.load(Ordering::SeqCst) {
                Command::Release {
                    worker: self.worker,
                    id: job.id,
                    attempt: job.attempt,
                }
            } else {
                self.busy.fetch_add(1, Ordering::SeqCst);
                let completion = attempt(&self.registry, &self.inflight, slot, &self.clock, &job);
                self.busy.fetch_sub(1, Ordering::SeqCst);
                Command::Complete {
                    worker: Some(self.worker),
                    completion,
                }
            };
            if self.writer.send(cmd).is_err() {
                // The spool is closed; whatever this attempt did is recovered at the next open.
                return;
            }
        }
    }
}

/// Runs one attempt on this thread: records its start in the journal slot, runs it, and
/// reports what happened.
fn attempt(
    registry: &Registry,
    inflight: &Inflight,
    slot: u64,
    clock: &Clock,
    job: &Job,
) -> Completion {
    inflight.mark(slot, job.id, job.attempt);
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
