//! A running pool: [`Worker`], and its graceful shutdown — alone, or with other pools within
//! one deadline.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::model::{PoolId, TaskId};
use crate::pool::crew::Crew;
#[cfg(feature = "tokio")]
use crate::pool::runtime::{self, RuntimePool};
use crate::shared::Shared;

/// A running worker pool. Dropping it shuts it down gracefully (see
/// [`WorkerBuilder::shutdown_timeout`](crate::WorkerBuilder::shutdown_timeout)).
pub struct Worker {
    running: Mutex<Option<Running>>,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
}

/// A pool that has not finished shutting down: its threads, or its place on a runtime.
#[derive(Clone)]
pub(super) enum Running {
    Threads(Arc<Crew>),
    #[cfg(feature = "tokio")]
    Runtime(Arc<RuntimePool>),
}

impl Running {
    fn pool(&self) -> PoolId {
        match self {
            Running::Threads(crew) => crew.pool,
            #[cfg(feature = "tokio")]
            Running::Runtime(pool) => pool.pool,
        }
    }

    /// Stops running what the pool is handed; returns whether this call stopped it.
    fn stop(&self) -> bool {
        match self {
            Running::Threads(crew) => !crew.stopping.swap(true, Ordering::SeqCst),
            #[cfg(feature = "tokio")]
            Running::Runtime(pool) => pool.stop(),
        }
    }

    /// Waits until the pool's attempts have ended, or `deadline`; returns whether they have.
    fn wait(&self, deadline: Instant) -> bool {
        match self {
            Running::Threads(crew) => crew.wait(deadline),
            #[cfg(feature = "tokio")]
            Running::Runtime(pool) => pool.wait(deadline),
        }
    }

    fn running(&self) -> Vec<TaskId> {
        match self {
            Running::Threads(crew) => crew.running(),
            #[cfg(feature = "tokio")]
            Running::Runtime(pool) => pool.running(),
        }
    }

    /// Whether waiting on this thread would stop the pool's attempts: it drives the
    /// current-thread runtime they run on.
    fn blocks_its_runtime(&self) -> bool {
        match self {
            Running::Threads(_) => false,
            #[cfg(feature = "tokio")]
            Running::Runtime(pool) => runtime::drives(&pool.handle),
        }
    }
}

/// Stops a pool claiming: the engine drops its job channel, and what the pool is handed
/// still goes back to the queue.
fn stop_claiming(shared: &Shared, running: &Running) {
    if running.stop() {
        shared.engine.unregister(running.pool());
    }
}

/// Waits until the outcomes reported so far are durable (a closed spool has nothing left to
/// wait for).
fn sync_outcomes(shared: &Shared) -> Result<(), Error> {
    match shared.engine.sync() {
        Ok(()) | Err(Error::Closed) => Ok(()),
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("running", &self.running_tasks())
            .finish()
    }
}

impl Worker {
    pub(super) fn new(running: Running, shared: Arc<Shared>, shutdown_timeout: Duration) -> Self {
        Worker {
            running: Mutex::new(Some(running)),
            shared,
            shutdown_timeout,
        }
    }

    /// Stops claiming, lets running tasks finish, returns claimed-but-unstarted tasks to the
    /// queue, and waits until every outcome is committed. Once it has returned `Ok`, calling
    /// it again does nothing; after a `ShutdownTimeout`, calling it again waits again for the
    /// tasks still running (and reports them again if they still run).
    ///
    /// # Errors
    /// `ShutdownTimeout`, with the ids of the tasks still running at the deadline: they keep
    /// their threads and report when they finish, if the spool is still open; if the process
    /// exits first, they run again at the next open. `WouldDeadlock` (feature `tokio`) when
    /// called on the thread of the current-thread runtime the pool's attempts run on: it
    /// stopped claiming, but cannot wait for attempts that need this thread — await
    /// `shutdown_async` there, which lets them run.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        Worker::shutdown_all([self], timeout)
    }

    /// As [`shutdown`](Self::shutdown), awaited (feature `tokio`): the waiting happens on
    /// one of the runtime's blocking threads, so this runtime's thread — and the pool's
    /// attempts, if they run on it — go on meanwhile. Works for any pool, on a runtime or
    /// on threads.
    ///
    /// # Errors
    /// As `shutdown` (never `WouldDeadlock`); `Closed` if the runtime is shutting down and
    /// did not run the wait.
    #[cfg(feature = "tokio")]
    pub async fn shutdown_async(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let Some(running) = self.take_running() else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let waited = tokio::task::spawn_blocking(move || {
            stop_claiming(&shared, &running);
            let stopped = running.wait(deadline);
            let synced = if stopped {
                sync_outcomes(&shared)
            } else {
                Ok(())
            };
            (running, stopped, synced)
        })
        .await;
        match waited {
            Ok((_, true, synced)) => synced,
            Ok((running, false, _)) => {
                let tasks = running.running();
                self.put_back(running);
                Err(Error::ShutdownTimeout {
                    running: tasks.len(),
                    tasks,
                })
            }
            Err(_) => Err(Error::Closed),
        }
    }

    /// Shuts down several pools together: all stop claiming at once, then their running
    /// tasks get the same `timeout` to finish — the whole call takes at most about `timeout`,
    /// not the sum of one timeout per pool.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use taskspool::{Context, Spool, Task, TaskError, Worker};
    /// # #[derive(Serialize, Deserialize)] struct Ping;
    /// # impl Task for Ping {
    /// #     const NAME: &'static str = "ping";
    /// #     type Output = ();
    /// #     fn run(self, _: &Context) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// let spool = Spool::temporary()?;
    /// let default = spool.worker().register::<Ping>().start()?;
    /// let mail = spool.worker().queue("mail").register::<Ping>().start()?;
    /// Worker::shutdown_all([&default, &mail], std::time::Duration::from_secs(10))?;
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `ShutdownTimeout` with the tasks of every pool still running at the deadline (see
    /// [`shutdown`](Self::shutdown)); otherwise the first error of committing their outcomes.
    pub fn shutdown_all<'a>(
        workers: impl IntoIterator<Item = &'a Worker>,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let workers: Vec<&Worker> = workers.into_iter().collect();
        let taken: Vec<(&Worker, Running)> = workers
            .iter()
            .filter_map(|w| w.take_running().map(|r| (*w, r)))
            .collect();
        // First every pool stops claiming, so none runs more while another is waited for.
        for (worker, running) in &taken {
            stop_claiming(&worker.shared, running);
        }
        let mut still_running: Vec<TaskId> = Vec::new();
        let mut stopped: Vec<&Worker> = Vec::new();
        let mut starved: Vec<TaskId> = Vec::new();
        for (worker, running) in taken {
            // On the thread its attempts need, only what has already ended can be seen.
            let blocks = running.blocks_its_runtime();
            if running.wait(if blocks { Instant::now() } else { deadline }) {
                stopped.push(worker);
            } else {
                let tasks = running.running();
                if blocks {
                    starved.extend(tasks);
                } else {
                    still_running.extend(tasks);
                }
                // Not finished: a later call waits again.
                worker.put_back(running);
            }
        }
        if !starved.is_empty() {
            starved.extend(still_running);
            starved.sort_unstable();
            return Err(Error::WouldDeadlock(format!(
                "Worker::shutdown was called on the thread of the current-thread tokio runtime \
                 that a pool's attempts run on, so it cannot wait for them: the pool stopped \
                 claiming, and {} attempt(s) still run (tasks {}); await \
                 Worker::shutdown_async instead, or shut down from outside the runtime",
                starved.len(),
                starved
                    .iter()
                    .map(TaskId::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !still_running.is_empty() {
            still_running.sort_unstable();
            return Err(Error::ShutdownTimeout {
                running: still_running.len(),
                tasks: still_running,
            });
        }
        let mut result = Ok(());
        for worker in stopped {
            if let Err(e) = sync_outcomes(&worker.shared)
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }

    fn take_running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn put_back(&self, running: Running) {
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
    }

    /// How many attempts are executing right now.
    pub fn busy(&self) -> usize {
        self.running_tasks().len()
    }

    /// The tasks executing right now, by id.
    pub fn running_tasks(&self) -> Vec<TaskId> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(Vec::new, |r| r.running())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown(self.shutdown_timeout) {
            tracing::warn!(error = %e, "worker shutdown on drop did not complete cleanly");
        }
    }
}
