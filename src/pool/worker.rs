//! A running pool: [`Worker`], and its graceful shutdown — alone, or with other pools within
//! one deadline.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::model::TaskId;
use crate::pool::crew::Crew;
use crate::shared::Shared;

/// A running worker pool. Dropping it shuts it down gracefully (see
/// [`WorkerBuilder::shutdown_timeout`](crate::WorkerBuilder::shutdown_timeout)).
pub struct Worker {
    running: Mutex<Option<Running>>,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
}

/// The threads of a pool that has not finished shutting down.
pub(super) type Running = Arc<Crew>;

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
    /// exits first, they run again at the next open.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        Worker::shutdown_all([self], timeout)
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
            if !running.stopping.swap(true, Ordering::SeqCst) {
                // The engine drops the pool's job channel: threads finish what they hold and
                // exit.
                worker.shared.engine.unregister(running.pool);
            }
        }
        let mut still_running: Vec<TaskId> = Vec::new();
        let mut stopped: Vec<&Worker> = Vec::new();
        for (worker, running) in taken {
            if running.wait(deadline) {
                stopped.push(worker);
            } else {
                still_running.extend(running.running());
                // Not finished: a later call waits again.
                worker.put_back(running);
            }
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
            match worker.shared.engine.sync() {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                }
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
