//! One attempt, on a pool's thread or a draining caller: note its start, hand its time
//! limits to the timekeeper, run its handler under `catch_unwind` in a `tracing` span, and
//! report the outcome — unless the hard limit ended the attempt first. (The pool's threads
//! themselves are in `crew`.)

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::context::{Context, Env};
use crate::model::{Outcome, PoolId};
use crate::options::Limits;
use crate::registry::Registry;
use crate::signal::StopReason;
use crate::store::{Completion, Job, NewTask, Reporter, ThreadSlot};
use crate::task_error::TaskError;
use crate::timekeeper::{LazyKeeper, OnHardLimit, Slot, Watched};

/// What an attempt needs besides its job: the pool's handlers, app data and spool, the
/// clock, and what enforces time limits.
pub(super) struct Runner {
    pub(super) registry: Arc<Registry>,
    pub(super) env: Arc<Env>,
    pub(super) clock: Clock,
    /// The spool's default time limits.
    pub(super) default_limits: Limits,
    pub(super) keeper: Arc<LazyKeeper>,
}

/// A pool's threads, as an attempt's hard limit sees them: the pool, and how to give up
/// one thread for a replacement (the crew does it).
pub(super) trait PoolThreads: Send + Sync {
    fn pool(&self) -> PoolId;

    /// The attempt of thread `number` (in slot `index`) was abandoned at its hard limit.
    fn abandon(self: Arc<Self>, index: usize, number: u64);
}

/// Who runs an attempt: a pool's thread (which a hard time limit can abandon and replace),
/// or a drain's caller.
#[derive(Clone)]
pub(super) enum Owner {
    Pool {
        threads: Arc<dyn PoolThreads>,
        index: usize,
        number: u64,
    },
    Drain,
}

/// A thread's watch on its attempts' time limits: who it is, and its timekeeper slot (made
/// with the first attempt that has a limit).
pub(super) struct Watcher {
    owner: Owner,
    slot: Option<Arc<Slot>>,
}

impl Watcher {
    pub(super) fn new(owner: Owner) -> Self {
        Watcher { owner, slot: None }
    }
}

impl Runner {
    /// Runs one attempt on this thread: notes its start, runs it, and says what happened —
    /// `None` if the hard time limit ended the attempt first (the timekeeper reported it; the
    /// handler's late outcome is dropped).
    ///
    /// The attempt runs in a `task` span (id, name, queue, attempt) with an INFO event when
    /// it starts and one when it succeeds, with its run time; what a failure leads to (a
    /// retry after a delay, or the end) is logged by the engine, which decides it.
    pub(super) fn attempt(
        &self,
        reporter: &Arc<dyn Reporter>,
        slot: &mut ThreadSlot,
        job: &Job,
        watcher: &mut Watcher,
    ) -> Option<Completion> {
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
        let (watch, deadline_ms) = self.watch(reporter, job, started_at_ms, watcher);
        let (outcome, follow_ups) = self.run_job(job, deadline_ms);
        if let Some(slot) = watch {
            slot.clear();
        }
        let elapsed = timer.elapsed();
        if !job.signal.returned() {
            tracing::warn!(
                run_time_s = elapsed.as_secs_f64(),
                "the handler returned after its hard time limit ended the attempt; what it \
                 returned is dropped"
            );
            return None;
        }
        if matches!(outcome, Outcome::Succeeded(_)) {
            tracing::info!(
                run_time_s = elapsed.as_secs_f64(),
                "task succeeded in {:.6}s",
                elapsed.as_secs_f64()
            );
        }
        Some(Completion {
            id: job.id,
            attempt: job.attempt,
            started_at_ms,
            run_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            // Follow-ups go with a success only.
            follow_ups: if matches!(outcome, Outcome::Succeeded(_)) {
                follow_ups
            } else {
                Vec::new()
            },
            outcome,
            progress: None,
            past_soft_limit: job.signal.stop_reason() == Some(StopReason::SoftLimit),
        })
    }

    /// Puts the attempt's time limits (its own, or the spool's defaults) in the hands of
    /// the timekeeper, through the thread's slot; returns the slot to clear when the handler
    /// returns, and the hard deadline.
    fn watch(
        &self,
        reporter: &Arc<dyn Reporter>,
        job: &Job,
        started_at_ms: u64,
        watcher: &mut Watcher,
    ) -> (Option<Arc<Slot>>, Option<u64>) {
        let limits = job.limits.or(self.default_limits);
        if limits.is_none() {
            return (None, None);
        }
        let slot = match &watcher.slot {
            Some(slot) => slot.clone(),
            None => {
                let Some(keeper) = self.keeper.get() else {
                    return (None, None);
                };
                let on_hard = HardLimit {
                    reporter: reporter.clone(),
                    threads: match &watcher.owner {
                        Owner::Pool {
                            threads,
                            index,
                            number,
                        } => Some((threads.clone(), *index, *number)),
                        Owner::Drain => None,
                    },
                };
                let slot = keeper.slot(Box::new(on_hard));
                watcher.slot = Some(slot.clone());
                slot
            }
        };
        let soft_at = limits
            .soft_time_limit_ms
            .map(|ms| started_at_ms.saturating_add(ms));
        let hard_at = limits
            .time_limit_ms
            .map(|ms| started_at_ms.saturating_add(ms));
        let watched = Watched {
            id: job.id,
            attempt: job.attempt,
            signal: job.signal.clone(),
            started_at_ms,
            limit_ms: limits.time_limit_ms.unwrap_or(0),
        };
        slot.watch(watched, soft_at, hard_at);
        (Some(slot), hard_at)
    }

    /// Runs one attempt's handler under `catch_unwind`. Never panics.
    /// Runs the handler; returns its outcome and the follow-ups it enqueued.
    fn run_job(&self, job: &Job, deadline_ms: Option<u64>) -> (Outcome, Vec<NewTask>) {
        let Some(handler) = self.registry.get(&job.name) else {
            let error = format!("no handler registered for task `{}`", job.name);
            return (TaskError::retry(error).into_outcome(), Vec::new());
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
            signal: job.signal.clone(),
            deadline_ms,
            follow_ups: OnceLock::new(),
            inputs: job.inputs.clone(),
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(&job.payload, &ctx)))
            .unwrap_or_else(|panic| Outcome::Panicked(panic_message(panic.as_ref())));
        (outcome, ctx.take_follow_ups())
    }
}

/// What the timekeeper does at the hard limit of an attempt of one thread: ends the attempt
/// (unless its handler returned first), replaces a pool's thread, and reports the attempt as
/// timed out.
struct HardLimit {
    reporter: Arc<dyn Reporter>,
    /// A pool's thread: its pool's threads, its slot and number. `None` for a drain.
    threads: Option<(Arc<dyn PoolThreads>, usize, u64)>,
}

impl OnHardLimit for HardLimit {
    fn fire(&self, attempt: Watched) {
        if !attempt.signal.abandon() {
            return;
        }
        let limit = Duration::from_millis(attempt.limit_ms);
        tracing::error!(
            task.id = attempt.id.0,
            attempt = attempt.attempt,
            "task ran past its hard time limit of {limit:?}; the attempt is over and its \
             thread abandoned"
        );
        let pool = self.threads.as_ref().map(|(threads, _, _)| threads.pool());
        if let Some((threads, index, number)) = &self.threads {
            threads.clone().abandon(*index, *number);
        }
        let completion = Completion {
            id: attempt.id,
            attempt: attempt.attempt,
            started_at_ms: attempt.started_at_ms,
            run_us: attempt.limit_ms.saturating_mul(1000),
            outcome: Outcome::TimedOut(format!(
                "the hard time limit of {limit:?} passed; the attempt was ended and its \
                 handler abandoned (what it returns later is dropped)"
            )),
            progress: None,
            past_soft_limit: false,
            follow_ups: Vec::new(),
        };
        // A closed spool recovers the attempt at the next open.
        let _ = self.reporter.complete(pool, completion);
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
