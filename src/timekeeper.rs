//! Time limits of running attempts: one thread per spool, started with the first attempt
//! that has a limit, sleeps until the next deadline on the spool's clock — no polling; a
//! manual clock wakes it when it moves — then asks the attempt to stop (a soft limit) or
//! ends it (a hard limit, through the action its thread gave).
//!
//! Each thread that runs attempts has a [`Slot`] of its own, for the one attempt it runs:
//! watching an attempt is a store into the thread's slot (an uncontended lock, no
//! allocation), and the timekeeper, when it wakes, looks at every slot. It wakes at the
//! earliest deadline it saw; a new deadline earlier than that wakes it at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use crate::clock::Clock;
use crate::error::Error;
use crate::model::TaskId;
use crate::signal::{AttemptSignal, StopReason};

/// What a thread does when its attempt's hard limit passes.
pub(crate) trait OnHardLimit: Send + Sync {
    fn fire(&self, attempt: Watched);
}

/// The attempt a slot watches.
pub(crate) struct Watched {
    pub id: TaskId,
    pub attempt: u32,
    pub signal: Arc<AttemptSignal>,
    pub started_at_ms: u64,
    /// The hard limit, in ms.
    pub limit_ms: u64,
}

/// `next_wake` while the timekeeper is looking at the slots: every new deadline wakes it.
const SCANNING: u64 = 0;

/// The spool's timekeeper. Dropping it stops its thread.
pub(crate) struct Timekeeper {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Clock,
    /// Guards `stop` and pairs with `wake`.
    state: Mutex<bool>,
    wake: Condvar,
    /// The earliest deadline the thread saw ([`SCANNING`] while it looks; `u64::MAX`: none).
    next_wake: AtomicU64,
    slots: Mutex<Vec<Weak<Slot>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, bool> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the thread (taking its lock first, so a wake-up between its look at the slots
    /// and its wait is not lost).
    fn notify(&self) {
        let _stop = self.lock();
        self.wake.notify_all();
    }
}

/// One thread's place for the attempt it runs.
pub(crate) struct Slot {
    keeper: Arc<Inner>,
    state: Mutex<SlotState>,
    on_hard: Box<dyn OnHardLimit>,
}

#[derive(Default)]
struct SlotState {
    watched: Option<Watched>,
    soft_at: Option<u64>,
    hard_at: Option<u64>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches `attempt`: at `soft_at` its signal is asked to stop, at `hard_at` the slot's
    /// action runs (deadlines in ms on the spool's clock), unless [`clear`](Self::clear)
    /// comes first.
    pub(crate) fn watch(&self, attempt: Watched, soft_at: Option<u64>, hard_at: Option<u64>) {
        {
            let mut state = self.lock();
            state.watched = Some(attempt);
            state.soft_at = soft_at;
            state.hard_at = hard_at;
        }
        let next = self.keeper.next_wake.load(Ordering::SeqCst);
        let earliest = [soft_at, hard_at].into_iter().flatten().min();
        if earliest.is_some_and(|at| next == SCANNING || at < next) {
            self.keeper.notify();
        }
    }

    /// The attempt returned: nothing fires for it.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.watched = None;
        state.soft_at = None;
        state.hard_at = None;
    }
}

impl Timekeeper {
    /// Starts the timekeeper's thread.
    ///
    /// # Errors
    /// `Storage` if the thread cannot be started.
    pub(crate) fn start(clock: Clock) -> Result<Timekeeper, Error> {
        let inner = Arc::new(Inner {
            clock,
            state: Mutex::new(false),
            wake: Condvar::new(),
            next_wake: AtomicU64::new(u64::MAX),
            slots: Mutex::new(Vec::new()),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        inner.clock.subscribe(move || match weak.upgrade() {
            Some(inner) => {
                inner.notify();
                true
            }
            None => false,
        });
        let thread = inner.clone();
        std::thread::Builder::new()
            .name("taskspool-timekeeper".into())
            .spawn(move || run(&thread))
            .map_err(|e| Error::storage_from("cannot start the timekeeper thread", e))?;
        Ok(Timekeeper { inner })
    }

    /// A slot for one thread's attempts, whose hard limits run `on_hard`.
    pub(crate) fn slot(&self, on_hard: Box<dyn OnHardLimit>) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            keeper: self.inner.clone(),
            state: Mutex::new(SlotState::default()),
            on_hard,
        });
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.retain(|s| s.strong_count() > 0);
        slots.push(Arc::downgrade(&slot));
        slot
    }
}

/// A timekeeper started on first use: the spool and every pool's attempts share one.
pub(crate) struct LazyKeeper {
    clock: Clock,
    cell: std::sync::OnceLock<Option<Timekeeper>>,
}

impl LazyKeeper {
    pub(crate) fn new(clock: Clock) -> Arc<LazyKeeper> {
        Arc::new(LazyKeeper {
            clock,
            cell: std::sync::OnceLock::new(),
        })
    }

    /// The timekeeper, started now if it was not (`None` if its thread cannot be started:
    /// time limits are then not enforced, which is logged once).
    pub(crate) fn get(&self) -> Option<&Timekeeper> {
        self.cell
            .get_or_init(|| match Timekeeper::start(self.clock.clone()) {
                Ok(keeper) => Some(keeper),
                Err(e) => {
                    tracing::error!(error = %e, "time limits are not enforced");
                    None
                }
            })
            .as_ref()
    }
}

impl Drop for Timekeeper {
    fn drop(&mut self) {
        *self.inner.lock() = true;
        self.inner.wake.notify_all();
    }
}

/// What one look at the slots found due.
enum Due {
    Soft(Arc<AttemptSignal>),
    Hard(Arc<Slot>, Watched),
}

/// The timekeeper's thread: fires what is due, then sleeps until the next deadline.
fn run(inner: &Inner) {
    let mut stop = inner.lock();
    loop {
        if *stop {
            return;
        }
        inner.next_wake.store(SCANNING, Ordering::SeqCst);
        let now = inner.clock.now_ms();
        let slots: Vec<Arc<Slot>> = inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut due = Vec::new();
        let mut next = u64::MAX;
        for slot in slots {
            let mut state = slot.lock();
            if state.soft_at.is_some_and(|at| at <= now) {
                state.soft_at = None;
                if let Some(w) = &state.watched {
                    due.push(Due::Soft(w.signal.clone()));
                }
            }
            if state.hard_at.is_some_and(|at| at <= now) {
                state.hard_at = None;
                state.soft_at = None;
                if let Some(w) = state.watched.take() {
                    drop(state);
                    due.push(Due::Hard(slot, w));
                    continue;
                }
            }
            for at in [state.soft_at, state.hard_at].into_iter().flatten() {
                next = next.min(at);
            }
        }
        if !due.is_empty() {
            // Outside the lock: a hard limit's action reports to the engine and may start a
            // thread.
            drop(stop);
            for d in due {
                match d {
                    Due::Soft(signal) => signal.stop(StopReason::SoftLimit),
                    Due::Hard(slot, watched) => slot.on_hard.fire(watched),
                }
            }
            stop = inner.lock();
            continue;
        }
        inner.next_wake.store(next, Ordering::SeqCst);
        let timeout = (next != u64::MAX)
            .then(|| inner.clock.sleep_until(next))
            .flatten();
        stop = match timeout {
            Some(timeout) => {
                inner
                    .wake
                    .wait_timeout(stop, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            // Nothing due, or a manual clock (which wakes this thread when it moves).
            None => inner
                .wake
                .wait(stop)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    struct Count(Arc<AtomicUsize>);

    impl OnHardLimit for Count {
        fn fire(&self, _attempt: Watched) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn watched(signal: &Arc<AttemptSignal>) -> Watched {
        Watched {
            id: TaskId::from_u64(1),
            attempt: 1,
            signal: signal.clone(),
            started_at_ms: 1_000,
            limit_ms: 1_000,
        }
    }

    /// On a manual clock nothing fires until the clock reaches the deadline; a cleared watch
    /// never fires.
    #[test]
    fn deadlines_fire_when_the_clock_reaches_them_and_not_after_their_watch_is_cleared() {
        let clock = ManualClock::from_unix_ms(1_000);
        let keeper = Timekeeper::start(Clock::Manual(clock.clone())).unwrap();
        let hard = Arc::new(AtomicUsize::new(0));
        let slot = keeper.slot(Box::new(Count(hard.clone())));
        let soft = Arc::new(AttemptSignal::default());
        slot.watch(watched(&soft), Some(1_500), Some(2_000));
        let gone = Arc::new(AtomicUsize::new(0));
        let other = keeper.slot(Box::new(Count(gone.clone())));
        other.watch(watched(&Arc::default()), None, Some(1_200));
        other.clear();
        clock.set_ms(1_499);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!soft.is_stopped());
        clock.set_ms(1_500);
        wait_for(|| soft.is_stopped());
        assert_eq!(soft.stop_reason(), Some(StopReason::SoftLimit));
        assert_eq!(hard.load(Ordering::SeqCst), 0);
        clock.set_ms(2_000);
        wait_for(|| hard.load(Ordering::SeqCst) == 1);
        assert_eq!(gone.load(Ordering::SeqCst), 0);
        // A new, earlier deadline after a later one wakes the timekeeper.
        slot.watch(watched(&Arc::default()), None, Some(9_000));
        slot.watch(watched(&Arc::default()), None, Some(3_000));
        clock.set_ms(3_000);
        wait_for(|| hard.load(Ordering::SeqCst) == 2);
    }

    fn wait_for(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
