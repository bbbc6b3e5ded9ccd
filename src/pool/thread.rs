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
use crate::registry::{Handler, Registry};
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
/// a place of a pool on a runtime (whose future the attempt's end drops: nothing to
/// replace), or a drain's caller.
#[derive(Clone)]
pub(super) enum Owner {
    Pool {
        threads: Arc<dyn PoolThreads>,
        index: usize,
        number: u64,
    },
    #[cfg(feature = "tokio")]
    Runtime(PoolId),
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
        let span = span(job);
        let _entered = span.enter();
        let begun = self.begin(reporter, slot, job, watcher);
        let (outcome, follow_ups) = self.run_job(job, begun.deadline_ms);
        self.finish(job, begun, outcome, follow_ups)
    }

    /// Notes the attempt's start (in `slot`) and hands its time limits to the timekeeper.
    pub(super) fn begin(
        &self,
        reporter: &Arc<dyn Reporter>,
        slot: &mut ThreadSlot,
        job: &Job,
        watcher: &mut Watcher,
    ) -> Begun {
        reporter.starting(slot, job.id, job.attempt);
        tracing::info!("task started");
        let started_at_ms = self.clock.now_ms();
        let timer = Instant::now();
        let (watch, deadline_ms) = self.watch(reporter, job, started_at_ms, watcher);
        Begun {
            started_at_ms,
            timer,
            watch,
            deadline_ms,
        }
    }

    /// What the handler returned, as the attempt's completion — `None` if the hard time
    /// limit ended the attempt first (the timekeeper reported it; the late outcome is
    /// dropped).
    pub(super) fn finish(
        &self,
        job: &Job,
        begun: Begun,
        outcome: Outcome,
        follow_ups: Vec<NewTask>,
    ) -> Option<Completion> {
        begun.unwatch();
        let elapsed = begun.timer.elapsed();
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
            started_at_ms: begun.started_at_ms,
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
                        #[cfg(feature = "tokio")]
                        Owner::Runtime(_) => None,
                        Owner::Drain => None,
                    },
                    pool: match &watcher.owner {
                        Owner::Pool { threads, .. } => Some(threads.pool()),
                        #[cfg(feature = "tokio")]
                        Owner::Runtime(pool) => Some(*pool),
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

    /// Runs the handler under `catch_unwind`; returns its outcome and the follow-ups it
    /// enqueued. Never panics.
    fn run_job(&self, job: &Job, deadline_ms: Option<u64>) -> (Outcome, Vec<NewTask>) {
        let handler = match self.registry.get(&job.name) {
            Some(Handler::Sync(handler)) => handler,
            #[cfg(feature = "tokio")]
            Some(Handler::Async(_)) => {
                // `WorkerBuilder` gives a pool with async tasks a runtime.
                let error = format!("async task `{}` reached a pool without a runtime", job.name);
                return (TaskError::retry(error).into_outcome(), Vec::new());
            }
            None => return (unregistered(job), Vec::new()),
        };
        let ctx = self.context(job, deadline_ms);
        let outcome = catch_unwind(AssertUnwindSafe(|| handler(&job.payload, &ctx)))
            .unwrap_or_else(|panic| Outcome::Panicked(panic_message(panic.as_ref())));
        (outcome, ctx.take_follow_ups())
    }

    /// Whether task `name` is an async task.
    #[cfg(feature = "tokio")]
    pub(super) fn is_async(&self, name: &str) -> bool {
        matches!(self.registry.get(name), Some(Handler::Async(_)))
    }

    /// The context the attempt's handler sees.
    pub(super) fn context(&self, job: &Job, deadline_ms: Option<u64>) -> Context {
        Context {
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
        }
    }
}

/// The outcome of an attempt of a task no handler is registered for (the pool's names are
/// checked when it claims, so only a race with a change of registry gets here).
pub(super) fn unregistered(job: &Job) -> Outcome {
    let error = format!("no handler registered for task `{}`", job.name);
    TaskError::retry(error).into_outcome()
}

/// The `task` span an attempt runs in.
pub(super) fn span(job: &Job) -> tracing::Span {
    tracing::info_span!(
        "task",
        id = job.id.0,
        name = %job.name,
        queue = %job.queue,
        attempt = job.attempt
    )
}

/// An attempt that has begun: when, and the watch on its time limits.
pub(super) struct Begun {
    pub(super) started_at_ms: u64,
    timer: Instant,
    watch: Option<Arc<Slot>>,
    /// The hard time limit's deadline, on the spool's clock.
    pub(super) deadline_ms: Option<u64>,
}

impl Begun {
    /// Takes the attempt's time limits back from the timekeeper.
    pub(super) fn unwatch(&self) {
        if let Some(slot) = &self.watch {
            slot.clear();
        }
    }
}

/// What the timekeeper does at the hard limit of an attempt of one thread: ends the attempt
/// (unless its handler returned first), replaces a pool's thread, and reports the attempt as
/// timed out.
struct HardLimit {
    reporter: Arc<dyn Reporter>,
    /// A pool's thread: its pool's threads, its slot and number. `None` for a drain or a
    /// pool on a runtime.
    threads: Option<(Arc<dyn PoolThreads>, usize, u64)>,
    /// The pool the attempt is of; `None` for a drain.
    pool: Option<PoolId>,
}

impl OnHardLimit for HardLimit {
    fn fire(&self, attempt: Watched) {
        if !attempt.signal.abandon() {
            return;
        }
        let limit = Duration::from_millis(attempt.limit_ms);
        // On a runtime, an async attempt's future is dropped (and a sync one's blocking
        // thread abandoned); elsewhere the thread is abandoned.
        let ended = if cfg!(feature = "tokio") && self.threads.is_none() && self.pool.is_some() {
            "its handler abandoned (an async task's future is dropped)"
        } else {
            "its handler abandoned"
        };
        tracing::error!(
            task.id = attempt.id.0,
            attempt = attempt.attempt,
            "task ran past its hard time limit of {limit:?}; the attempt is over and {ended}"
        );
        let pool = self.pool;
        if let Some((threads, index, number)) = &self.threads {
            threads.clone().abandon(*index, *number);
        }
        let completion = Completion {
            id: attempt.id,
            attempt: attempt.attempt,
            started_at_ms: attempt.started_at_ms,
            run_us: attempt.limit_ms.saturating_mul(1000),
            outcome: Outcome::TimedOut(format!(
                "the hard time limit of {limit:?} passed; the attempt was ended and {ended} \
                 (what it returns later is dropped)"
            )),
            progress: None,
            past_soft_limit: false,
            follow_ups: Vec::new(),
        };
        // A closed spool recovers the attempt at the next open.
        let _ = self.reporter.complete(pool, completion);
    }
}

pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    };
    format!("panicked: {text}")
}
