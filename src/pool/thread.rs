//! One attempt, on a pool thread or a draining caller: note its start, run its handler under
//! `catch_unwind` in a `tracing` span, and report the outcome.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::clock::Clock;
use crate::context::{Context, Env};
use crate::model::{Outcome, PoolId, TaskId};
use crate::registry::Registry;
use crate::store::{Completion, Job, Reporter, ThreadSlot};
use crate::task_error::TaskError;

/// The task each thread of a pool is running (0 while idle: ids start at 1).
pub(super) struct Busy {
    slots: Box<[AtomicU64]>,
}

impl Busy {
    pub(super) fn new(threads: usize) -> Arc<Busy> {
        Arc::new(Busy {
            slots: (0..threads).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The tasks running now, by id.
    pub(super) fn running(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|id| *id != 0)
            .map(TaskId)
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// What an attempt needs besides its job: the pool's handlers, app data and spool, and the
/// clock.
pub(super) struct Runner {
    pub(super) registry: Arc<Registry>,
    pub(super) env: Arc<Env>,
    pub(super) clock: Clock,
}

/// One pool thread's view.
pub(super) struct WorkerThread {
    pub(super) pool: PoolId,
    /// This thread's slot in `busy`.
    pub(super) index: usize,
    pub(super) runner: Arc<Runner>,
    pub(super) jobs: Receiver<Job>,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) stopping: Arc<AtomicBool>,
    pub(super) busy: Arc<Busy>,
    /// Dropped when the thread exits; shutdown waits for all of them.
    pub(super) _done: Sender<()>,
}

impl WorkerThread {
    pub(super) fn run(self) {
        let mut slot = self.reporter.join();
        self.serve(&mut slot);
        self.reporter.leave(slot);
    }

    fn serve(&self, slot: &mut ThreadSlot) {
        let busy = &self.busy.slots[self.index];
        for job in self.jobs.iter() {
            let sent = if self.stopping.load(Ordering::SeqCst) {
                self.reporter.release(self.pool, job.id, job.attempt)
            } else {
                busy.store(job.id.0, Ordering::SeqCst);
                let completion = self.runner.attempt(&*self.reporter, slot, &job);
                busy.store(0, Ordering::SeqCst);
                self.reporter.complete(Some(self.pool), completion)
            };
            if sent.is_err() {
                // The spool is closed; whatever this attempt did is recovered at the next open.
                return;
            }
        }
    }
}

impl Runner {
    /// Runs one attempt on this thread: notes its start, runs it, and says what happened.
    ///
    /// The attempt runs in a `task` span (id, name, queue, attempt) with an INFO event when
    /// it starts and one when it succeeds, with its run time; what a failure leads to (a
    /// retry after a delay, or the end) is logged by the engine, which decides it.
    pub(super) fn attempt(
        &self,
        reporter: &dyn Reporter,
        slot: &mut ThreadSlot,
        job: &Job,
    ) -> Completion {
        let span = tracing::info_span!(
            "task",
            id = job.id.0,
            name = %job.name,
            queue = %job.queue,
            attempt = job.attempt
        );
        let _entered = span.enter();
        reporter.starting(slot, job.id, job.attempt);
        tracing::info!("task started");
        let started_at_ms = self.clock.now_ms();
        let timer = Instant::now();
        let outcome = self.run_job(job);
        let elapsed = timer.elapsed();
        if matches!(outcome, Outcome::Succeeded(_)) {
            tracing::info!(
                run_time_s = elapsed.as_secs_f64(),
                "task succeeded in {:.6}s",
                elapsed.as_secs_f64()
            );
        }
        Completion {
            id: job.id,
            attempt: job.attempt,
            started_at_ms,
            run_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            outcome,
        }
    }

    /// Runs one attempt's handler under `catch_unwind`. Never panics.
    fn run_job(&self, job: &Job) -> Outcome {
        let Some(handler) = self.registry.get(&job.name) else {
            return TaskError::retry(format!("no handler registered for task `{}`", job.name))
                .into_outcome();
        };
        let ctx = Context {
            id: job.id,
            name: job.name.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            max_retries: job.max_retries,
            enqueued_at_ms: job.enqueued_at_ms,
            origin: job.origin.clone(),
            env: self.env.clone(),
        };
        catch_unwind(AssertUnwindSafe(|| handler(&job.payload, &ctx)))
            .unwrap_or_else(|panic| Outcome::Panicked(panic_message(panic.as_ref())))
    }
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
