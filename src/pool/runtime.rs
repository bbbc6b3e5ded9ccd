//! A pool on a tokio runtime (feature `tokio`): its attempts are futures spawned on the
//! runtime the user gave, at most `concurrency` at once; one dispatcher thread takes the
//! engine's jobs and spawns them.
//!
//! Each attempt in flight holds one of the pool's `concurrency` places (an index into the
//! pool's gauges and a watch on time limits), given back when its future ends or is dropped.
//! An async task's future is raced against its signal: a revoke or the hard time limit drops
//! it. A sync task of the same pool runs on the runtime's blocking threads; only its hard
//! limit ends it early (its thread is abandoned, as in a thread pool).
//!
//! If the runtime shuts down, its futures are dropped: an attempt that had started is
//! reported as failed (and retried by its policy), one that had not is handed back, and the
//! pool stops claiming — it cannot run anything on a runtime that is gone.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Poll;
use std::time::Instant;

use crossbeam_channel::Receiver;
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::Instrument;

use crate::error::Error;
use crate::model::{Disposition, Outcome, PoolId, TaskId};
use crate::pool::thread::{Begun, Owner, Runner, Watcher, panic_message, span, unregistered};
use crate::registry::{AttemptFuture, Handler};
use crate::shared::Shared;
use crate::signal::Interrupt;
use crate::store::{Completion, Job, NewTask, PoolGauges, Reporter, ThreadSlot};

/// A pool whose attempts run on a runtime.
pub(super) struct RuntimePool {
    pub(super) pool: PoolId,
    runner: Arc<Runner>,
    jobs: Receiver<Job>,
    reporter: Arc<dyn Reporter>,
    pub(super) handle: Handle,
    /// Set at shutdown (or when the runtime is gone): jobs are handed back, not run.
    pub(super) stopping: AtomicBool,
    /// Set when a future was dropped before its first poll: the runtime has shut down.
    gone: AtomicBool,
    /// To stop claiming when the runtime is gone. Weak: the pool never keeps the spool open.
    spool: Weak<Shared>,
    gauges: Arc<PoolGauges>,
    places: Mutex<Places>,
    /// Signalled when a place is given back, the dispatcher exits, or the pool stops.
    changed: Condvar,
}

struct Places {
    free: Vec<Place>,
    /// Attempts holding a place.
    in_flight: usize,
    /// Whether the dispatcher thread still runs.
    dispatching: bool,
}

/// One of the pool's `concurrency` places: its index in the gauges, its ring of start notes
/// (a place runs one attempt at a time, as a thread does, so it needs a ring as a thread
/// does: see `store::inflight`), and its watch on the time limits of the attempt in it.
struct Place {
    index: usize,
    notes: ThreadSlot,
    watcher: Watcher,
}

/// Start-journal entries a pool on a runtime may use, at most, beyond 16 per place.
const JOURNAL_ENTRIES: usize = 65_536;

/// How long each place's ring of start notes is: as a thread's (`concurrency + prefetch`,
/// which keeps every note until its attempt's completion is durable), unless the pool's
/// places would then take more than [`JOURNAL_ENTRIES`] (a pool of 10,000 places would
/// otherwise write a journal of 1.7 GB, read whole at the next open); then shorter, at
/// least 16. A place's note is only overwritten by that place's later starts, which come
/// after its attempt returned: an attempt that never returns (one that kills the process)
/// always keeps its note, so it counts toward its retries however short the ring. What a
/// short ring can lose is the note of an attempt that returned but whose completion was not
/// yet durable at a crash: its attempt is then given back instead of counted.
pub(super) fn notes_per_place(concurrency: usize, prefetch: usize) -> usize {
    let places = concurrency.max(1);
    concurrency
        .saturating_add(prefetch)
        .min((JOURNAL_ENTRIES / places).max(16))
}

impl RuntimePool {
    /// Starts the pool's dispatcher thread.
    ///
    /// # Errors
    /// `Storage` if the thread cannot be started.
    pub(super) fn start(
        pool: PoolId,
        runner: Arc<Runner>,
        jobs: Receiver<Job>,
        reporter: Arc<dyn Reporter>,
        handle: Handle,
        spool: &Arc<Shared>,
        gauges: Arc<PoolGauges>,
    ) -> Result<Arc<RuntimePool>, Error> {
        let places = (0..gauges.running.len())
            .rev()
            .map(|index| Place {
                index,
                notes: reporter.join(),
                watcher: Watcher::new(Owner::Runtime(pool)),
            })
            .collect();
        gauges.threads.store(gauges.running.len(), Ordering::SeqCst);
        let this = Arc::new(RuntimePool {
            pool,
            runner,
            jobs,
            reporter,
            handle,
            stopping: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            spool: Arc::downgrade(spool),
            gauges,
            places: Mutex::new(Places {
                free: places,
                in_flight: 0,
                dispatching: true,
            }),
            changed: Condvar::new(),
        });
        let dispatcher = this.clone();
        std::thread::Builder::new()
            .name(format!("taskspool-dispatch-{}", pool.0))
            .spawn(move || dispatcher.dispatch())
            .map_err(|e| Error::storage_from("cannot start a pool's dispatcher thread", e))?;
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops running jobs (they are handed back); returns whether this call stopped it.
    pub(super) fn stop(&self) -> bool {
        let first = !self.stopping.swap(true, Ordering::SeqCst);
        let _places = self.lock();
        self.changed.notify_all();
        first
    }

    /// The dispatcher: waits for a free place, then for a job, and spawns its attempt.
    fn dispatch(self: Arc<Self>) {
        while let Some(place) = self.free_place() {
            let Ok(job) = self.jobs.recv() else {
                self.give_back(place);
                break;
            };
            if self.stopped() {
                self.give_back(place);
                let _ = self.reporter.release(self.pool, job.id, job.attempt);
                break;
            }
            self.launch(place, job);
        }
        self.wind_down();
        self.lock().dispatching = false;
        self.gauges.threads.store(0, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stopping.load(Ordering::SeqCst) || self.gone.load(Ordering::SeqCst)
    }

    /// A free place, once one is; `None` once the pool stops.
    fn free_place(&self) -> Option<Place> {
        let mut places = self.lock();
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(place) = places.free.pop() {
                places.in_flight += 1;
                return Some(place);
            }
            places = self
                .changed
                .wait(places)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, place: Place) {
        self.gauges.running[place.index].store(0, Ordering::SeqCst);
        let mut places = self.lock();
        places.free.push(place);
        places.in_flight = places.in_flight.saturating_sub(1);
        self.changed.notify_all();
    }

    /// The pool stopped: if the runtime is gone, it stops claiming; the jobs it still gets
    /// go back to their queues.
    fn wind_down(&self) {
        if self.gone.load(Ordering::SeqCst) && !self.stopping.swap(true, Ordering::SeqCst) {
            tracing::error!(
                pool = self.pool.0,
                "the tokio runtime of a worker pool has shut down; the pool stops claiming \
                 tasks (start a pool on a running runtime to run them)"
            );
            if let Some(shared) = self.spool.upgrade() {
                shared.engine.unregister(self.pool);
            }
        }
        for job in self.jobs.iter() {
            if self
                .reporter
                .release(self.pool, job.id, job.attempt)
                .is_err()
            {
                return;
            }
        }
    }

    /// Notes the attempt's start and spawns it on the runtime. The spawned task then runs
    /// the jobs already waiting in the channel, one after the other, before it gives its
    /// place back: under load, an attempt costs no spawn and no wake of the dispatcher.
    fn launch(self: &Arc<Self>, place: Place, job: Job) {
        let mut flight = Flight {
            pool: self.clone(),
            place: Some(place),
            job,
            begun: None,
            stage: Stage::Spawned,
        };
        let span = flight.begin();
        let attempts = async move {
            let mut span = span;
            loop {
                flight.stage = Stage::Running;
                let deadline_ms = flight.begun.as_ref().and_then(|b| b.deadline_ms);
                let ran = execute(&flight.pool.runner, &flight.job, deadline_ms)
                    .instrument(span)
                    .await;
                flight.end(ran);
                // Lets the runtime's other tasks in when this one has run for long.
                tokio::task::coop::consume_budget().await;
                match flight.next() {
                    Some(next) => span = next,
                    None => break,
                }
            }
        };
        // Detached: the flight reports its attempts and gives its place back, also when the
        // runtime drops the future.
        drop(self.handle.spawn(attempts));
    }

    /// The tasks running now, by id.
    pub(super) fn running(&self) -> Vec<TaskId> {
        self.gauges.running_tasks()
    }

    /// Waits until the dispatcher has exited and no attempt is in flight, or `deadline`
    /// passes; returns whether they have.
    pub(super) fn wait(&self, deadline: Instant) -> bool {
        let mut places = self.lock();
        while places.dispatching || places.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            places = self
                .changed
                .wait_timeout(places, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}

impl Drop for RuntimePool {
    fn drop(&mut self) {
        let places = std::mem::take(&mut self.lock().free);
        for place in places {
            self.reporter.leave(place.notes);
        }
    }
}

/// Where an attempt's future is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Spawned, never polled.
    Spawned,
    /// Polled at least once.
    Running,
    /// Its end is reported.
    Ended,
}

/// One attempt in flight: what its end reports, and its place, given back when it is
/// dropped — by the attempt's end, or by the runtime dropping its future.
struct Flight {
    pool: Arc<RuntimePool>,
    place: Option<Place>,
    job: Job,
    begun: Option<Begun>,
    stage: Stage,
}

impl Flight {
    /// Notes the start of the flight's job in its place; returns the attempt's span.
    fn begin(&mut self) -> tracing::Span {
        let span = span(&self.job);
        if let Some(place) = &mut self.place {
            let pool = &self.pool;
            pool.gauges.running[place.index].store(self.job.id.0, Ordering::SeqCst);
            let _entered = span.enter();
            let Place { notes, watcher, .. } = place;
            self.begun = Some(pool.runner.begin(&pool.reporter, notes, &self.job, watcher));
        }
        span
    }

    /// The next job waiting in the channel, begun in this flight's place; `None` when
    /// there is none (or the pool is stopping: the dispatcher hands back what is left).
    fn next(&mut self) -> Option<tracing::Span> {
        if self.pool.stopped() {
            return None;
        }
        self.job = self.pool.jobs.try_recv().ok()?;
        self.stage = Stage::Spawned;
        Some(self.begin())
    }

    /// The attempt ended: its completion goes to the engine, unless the hard limit ended it
    /// (the timekeeper reported that).
    fn end(&mut self, ran: Ran) {
        self.stage = Stage::Ended;
        let Some(begun) = self.begun.take() else {
            return;
        };
        if let Some(completion) = ran.completion(&self.pool.runner, &self.job, begun) {
            // A closed spool recovers the attempt at the next open.
            let _ = self
                .pool
                .reporter
                .complete(Some(self.pool.pool), completion);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let job = &self.job;
        match self.stage {
            Stage::Ended => {}
            Stage::Spawned => {
                // Dropped unpolled: the runtime is shutting down, or gone. The handler never
                // ran, so the attempt is handed back.
                if let Some(begun) = self.begun.take() {
                    begun.unwatch();
                }
                self.pool.gone.store(true, Ordering::SeqCst);
                if job.signal.returned() {
                    let _ = self
                        .pool
                        .reporter
                        .release(self.pool.pool, job.id, job.attempt);
                }
            }
            Stage::Running => {
                if let Some(begun) = self.begun.take() {
                    begun.unwatch();
                    if job.signal.returned() {
                        let completion = shut_down(job.id, job.attempt, begun.started_at_ms);
                        let _ = self
                            .pool
                            .reporter
                            .complete(Some(self.pool.pool), completion);
                    }
                }
            }
        }
        if let Some(place) = self.place.take() {
            self.pool.give_back(place);
        }
    }
}

/// How an attempt on a runtime ended.
pub(super) enum Ran {
    /// The handler returned (or panicked): its outcome, and its follow-ups.
    Returned(Outcome, Vec<NewTask>),
    /// A revoke dropped its future.
    Revoked,
    /// The hard time limit ended it.
    Abandoned,
}

impl Ran {
    /// The attempt's completion — `None` if the hard limit ended it (the timekeeper
    /// reported that).
    fn completion(self, runner: &Runner, job: &Job, begun: Begun) -> Option<Completion> {
        match self {
            Ran::Returned(outcome, follow_ups) => runner.finish(job, begun, outcome, follow_ups),
            Ran::Revoked => {
                // The engine ends a task revoked while it ran `Revoked`, whatever the outcome.
                let outcome = Outcome::Failed {
                    disposition: Disposition::Fail,
                    message: "revoked while it ran; its future was dropped".into(),
                };
                runner.finish(job, begun, outcome, Vec::new())
            }
            Ran::Abandoned => {
                begun.unwatch();
                None
            }
        }
    }
}

/// Whether this thread drives the current-thread runtime of `handle`: blocking it would stop
/// every task of that runtime, the pool's attempts included.
pub(super) fn drives(handle: &Handle) -> bool {
    handle.runtime_flavor() == RuntimeFlavor::CurrentThread
        && tokio::runtime::worker_index().is_some()
        && Handle::try_current().is_ok_and(|current| current.id() == handle.id())
}

/// Runs one attempt of a drain on `handle`, waiting on this thread; `Ok(None)` if its hard
/// time limit ended it.
///
/// # Errors
/// `Closed` if the runtime dropped the attempt's future (it is shutting down); the attempt
/// was reported failed, as a pool's is.
pub(super) fn drain_one(
    handle: &Handle,
    runner: &Arc<Runner>,
    reporter: &Arc<dyn Reporter>,
    notes: &mut ThreadSlot,
    job: Job,
    watcher: &mut Watcher,
) -> Result<Option<Completion>, Error> {
    let span = span(&job);
    let begun = {
        let _entered = span.enter();
        runner.begin(reporter, notes, &job, watcher)
    };
    let (id, attempt, signal) = (job.id, job.attempt, job.signal.clone());
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let deadline_ms = begun.deadline_ms;
    let on_runtime = runner.clone();
    let attempt_future = async move {
        let ran = execute(&on_runtime, &job, deadline_ms).await;
        let _ = tx.send((job, ran));
    };
    drop(handle.spawn(attempt_future.instrument(span.clone())));
    let _entered = span.enter();
    match rx.recv() {
        Ok((job, ran)) => Ok(ran.completion(runner, &job, begun)),
        Err(_) => {
            begun.unwatch();
            if signal.returned() {
                let _ = reporter.complete(None, shut_down(id, attempt, begun.started_at_ms));
            }
            Err(Error::Closed)
        }
    }
}

/// The completion of an attempt whose future the runtime dropped as it shut down.
fn shut_down(id: TaskId, attempt: u32, started_at_ms: u64) -> Completion {
    Completion {
        id,
        attempt,
        started_at_ms,
        run_us: 0,
        outcome: Outcome::Failed {
            disposition: Disposition::Retry,
            message: "the tokio runtime shut down while the attempt ran, dropping its future"
                .into(),
        },
        progress: None,
        past_soft_limit: false,
        follow_ups: Vec::new(),
    }
}

/// Runs one attempt's handler: an async task's future (dropped by a revoke or the hard
/// limit), or a sync task on the runtime's blocking threads (left behind at the hard limit).
pub(super) async fn execute(runner: &Runner, job: &Job, deadline_ms: Option<u64>) -> Ran {
    let ctx = runner.context(job, deadline_ms);
    let (attempt, revoke_drops): (AttemptFuture, bool) = match runner.registry.get(&job.name) {
        None => return Ran::Returned(unregistered(job), Vec::new()),
        Some(Handler::Async(start)) => {
            let started = catch_unwind(AssertUnwindSafe(|| start(&job.payload, ctx.clone())));
            match started {
                Ok(attempt) => (attempt, true),
                Err(panic) => {
                    let outcome = Outcome::Panicked(panic_message(panic.as_ref()));
                    return Ran::Returned(outcome, Vec::new());
                }
            }
        }
        Some(Handler::Sync(run)) => {
            let run = run.clone();
            let payload = job.payload.clone();
            let blocking_ctx = ctx.clone();
            let blocking = tokio::task::spawn_blocking(move || {
                catch_unwind(AssertUnwindSafe(|| run(&payload, &blocking_ctx)))
                    .unwrap_or_else(|panic| Outcome::Panicked(panic_message(panic.as_ref())))
            });
            let attempt = async move {
                blocking.await.unwrap_or_else(|e| Outcome::Failed {
                    disposition: Disposition::Retry,
                    message: format!("the blocking thread of a sync task did not return: {e}"),
                })
            };
            (Box::pin(attempt), false)
        }
    };
    let raced = Race {
        attempt,
        job,
        revoke_drops,
    }
    .await;
    match raced {
        Raced::Finished(outcome) => Ran::Returned(outcome, ctx.take_follow_ups()),
        Raced::Interrupted(Interrupt::Abandoned) => Ran::Abandoned,
        Raced::Interrupted(Interrupt::Stopped) => Ran::Revoked,
    }
}

enum Raced {
    Finished(Outcome),
    Interrupted(Interrupt),
}

/// An attempt's future against its signal; a panic while polling is the attempt's outcome.
struct Race<'a> {
    attempt: AttemptFuture,
    job: &'a Job,
    /// Whether a revoke drops the attempt (an async task) or only asks it to stop (a sync
    /// one, whose thread cannot be stopped).
    revoke_drops: bool,
}

impl Future for Race<'_> {
    type Output = Raced;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Raced> {
        let this = self.get_mut();
        if let Poll::Ready(interrupt) = this.job.signal.poll_interrupt(cx, this.revoke_drops, false)
        {
            return Poll::Ready(Raced::Interrupted(interrupt));
        }
        match catch_unwind(AssertUnwindSafe(|| this.attempt.as_mut().poll(cx))) {
            Ok(Poll::Ready(outcome)) => Poll::Ready(Raced::Finished(outcome)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Raced::Finished(Outcome::Panicked(panic_message(
                panic.as_ref(),
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_places_ring_is_a_threads_unless_the_journal_would_grow_past_its_bound() {
        assert_eq!(notes_per_place(8, 1024), 1032);
        assert_eq!(notes_per_place(64, 1024), 1024);
        assert_eq!(notes_per_place(1_000, 1024), 65);
        assert_eq!(notes_per_place(100_000, 1024), 16);
        assert_eq!(notes_per_place(4, 0), 4);
    }
}
