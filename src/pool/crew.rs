//! The threads of one pool: starting them, replacing one whose attempt its hard time limit
//! abandoned (a thread cannot be stopped from outside), and waiting for them at shutdown.
//!
//! A thread whose attempt was abandoned is "hung": it no longer counts as one of the pool's
//! threads, and a replacement takes its place, up to as many hung threads as the pool's
//! concurrency. Past that the pool runs short, and says so (a log line, and `stats`); when a
//! hung handler finally returns, its thread takes the missing place again, or exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::error::Error;
use crate::model::{PoolId, TaskId};
use crate::pool::thread::{Owner, PoolThreads, Runner, Watcher};
use crate::store::{Job, PoolGauges, Reporter, ThreadSlot};

/// What a pool's threads share.
pub(super) struct Crew {
    pub(super) pool: PoolId,
    pub(super) runner: Arc<Runner>,
    pub(super) jobs: Receiver<Job>,
    pub(super) reporter: Arc<dyn Reporter>,
    /// Set at shutdown: threads hand back what they hold instead of running it.
    pub(super) stopping: AtomicBool,
    threads: Mutex<Threads>,
    /// Signalled when a thread exits.
    changed: Condvar,
    /// What `stats` shows of the pool's threads, and the task each thread slot is running.
    gauges: Arc<PoolGauges>,
}

#[derive(Default)]
struct Threads {
    /// Threads serving the pool (not counting hung ones).
    alive: usize,
    /// Threads whose attempt was abandoned and whose handler has not returned.
    hung: usize,
    /// Places of hung threads that got no replacement (past the cap).
    missing: usize,
    /// The handles of threads not hung, by thread number.
    handles: HashMap<u64, JoinHandle<()>>,
    next: u64,
}

impl Crew {
    pub(super) fn new(
        pool: PoolId,
        runner: Arc<Runner>,
        jobs: Receiver<Job>,
        reporter: Arc<dyn Reporter>,
        gauges: Arc<PoolGauges>,
    ) -> Arc<Crew> {
        Arc::new(Crew {
            pool,
            runner,
            jobs,
            reporter,
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Threads::default()),
            changed: Condvar::new(),
            gauges,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a thread in slot `index`.
    ///
    /// # Errors
    /// `Storage` if the thread cannot be started.
    pub(super) fn start(self: &Arc<Self>, index: usize) -> Result<(), Error> {
        let mut threads = self.lock();
        self.spawn(&mut threads, index)
    }

    fn spawn(self: &Arc<Self>, threads: &mut Threads, index: usize) -> Result<(), Error> {
        let number = threads.next;
        threads.next += 1;
        let thread = WorkerThread {
            crew: self.clone(),
            index,
            number,
        };
        let handle = std::thread::Builder::new()
            .name(format!("taskspool-worker-{}-{number}", self.pool.0))
            .spawn(move || thread.run())
            .map_err(|e| Error::storage_from("cannot start a worker thread", e))?;
        threads.handles.insert(number, handle);
        threads.alive += 1;
        self.publish(threads);
        Ok(())
    }

    fn publish(&self, threads: &Threads) {
        self.gauges.threads.store(threads.alive, Ordering::SeqCst);
        self.gauges.abandoned.store(threads.hung, Ordering::SeqCst);
    }

    /// The slot `index` of the running tasks.
    pub(super) fn slot(&self, index: usize) -> &AtomicU64 {
        &self.gauges.running[index]
    }

    /// The tasks running now, by id.
    pub(super) fn running(&self) -> Vec<TaskId> {
        self.gauges.running_tasks()
    }

    /// The hard time limit ended the attempt of thread `number` (in slot `index`): the
    /// thread is hung, and a replacement takes its slot, unless the pool already has as many
    /// hung threads as its concurrency.
    fn abandon_thread(self: &Arc<Self>, index: usize, number: u64) {
        let mut threads = self.lock();
        // Detached: shutdown does not wait for a hung handler.
        threads.handles.remove(&number);
        threads.alive = threads.alive.saturating_sub(1);
        threads.hung += 1;
        self.gauges.running[index].store(0, Ordering::SeqCst);
        let stopping = self.stopping.load(Ordering::SeqCst);
        if !stopping && threads.hung <= self.gauges.running.len() {
            if let Err(e) = self.spawn(&mut threads, index) {
                tracing::error!(error = %e, "cannot replace a worker thread whose attempt was abandoned");
                threads.missing += 1;
            }
        } else if !stopping {
            threads.missing += 1;
            tracing::warn!(
                hung = threads.hung,
                threads = threads.alive,
                "a worker pool has as many threads hung past their hard time limit as its \
                 concurrency; it runs with {} thread(s) until a hung handler returns",
                threads.alive
            );
        }
        self.publish(&threads);
        self.changed.notify_all();
    }

    /// A hung thread's handler returned: the thread takes a missing place again (`true`),
    /// or exits.
    pub(super) fn resume_after_abandon(&self) -> bool {
        let mut threads = self.lock();
        threads.hung = threads.hung.saturating_sub(1);
        let resume = threads.missing > 0 && !self.stopping.load(Ordering::SeqCst);
        if resume {
            threads.missing -= 1;
            threads.alive += 1;
        }
        self.publish(&threads);
        resume
    }

    /// A thread that is not hung exits.
    pub(super) fn exited(&self) {
        let mut threads = self.lock();
        threads.alive = threads.alive.saturating_sub(1);
        self.publish(&threads);
        self.changed.notify_all();
    }

    /// Waits until every thread that is not hung has exited, or `deadline` passes; returns
    /// whether they have. Hung threads are not waited for: their attempts are over.
    pub(super) fn wait(&self, deadline: Instant) -> bool {
        let mut threads = self.lock();
        while threads.alive > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            threads = self
                .changed
                .wait_timeout(threads, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let handles: Vec<JoinHandle<()>> = threads.handles.drain().map(|(_, h)| h).collect();
        drop(threads);
        for handle in handles {
            let _ = handle.join();
        }
        true
    }
}

impl PoolThreads for Crew {
    fn pool(&self) -> PoolId {
        self.pool
    }

    fn abandon(self: Arc<Self>, index: usize, number: u64) {
        self.abandon_thread(index, number);
    }
}

/// One pool thread: its slot in the crew, and its number.
pub(super) struct WorkerThread {
    pub(super) crew: Arc<Crew>,
    pub(super) index: usize,
    pub(super) number: u64,
}

/// Why a thread stopped serving.
enum Ended {
    /// The job channel closed (shutdown), or the spool did.
    Done,
    /// The hard time limit abandoned its attempt, and the handler has now returned.
    Abandoned,
}

impl WorkerThread {
    pub(super) fn run(self) {
        let reporter = self.crew.reporter.clone();
        let mut slot = reporter.join();
        loop {
            match self.serve(&mut slot) {
                Ended::Done => {
                    reporter.leave(slot);
                    self.crew.exited();
                    return;
                }
                Ended::Abandoned => {
                    if !self.crew.resume_after_abandon() {
                        // A replacement serves the pool now.
                        reporter.leave(slot);
                        return;
                    }
                }
            }
        }
    }

    fn serve(&self, slot: &mut ThreadSlot) -> Ended {
        let crew = &self.crew;
        let busy = crew.slot(self.index);
        let mut watcher = Watcher::new(Owner::Pool {
            threads: crew.clone(),
            index: self.index,
            number: self.number,
        });
        for job in crew.jobs.iter() {
            let sent = if crew.stopping.load(Ordering::SeqCst) {
                crew.reporter.release(crew.pool, job.id, job.attempt)
            } else {
                busy.store(job.id.0, Ordering::SeqCst);
                let Some(completion) =
                    crew.runner
                        .attempt(&crew.reporter, slot, &job, &mut watcher)
                else {
                    // The crew cleared the slot when it abandoned the attempt.
                    return Ended::Abandoned;
                };
                busy.store(0, Ordering::SeqCst);
                crew.reporter.complete(Some(crew.pool), completion)
            };
            if sent.is_err() {
                // The spool is closed; whatever this attempt did is recovered at the next open.
                return Ended::Done;
            }
        }
        Ended::Done
    }
}
