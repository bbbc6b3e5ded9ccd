//! Time limits of running attempts: one thread per spool, started with the first attempt
//! that has a limit, sleeps until the next deadline on the spool's clock — no polling; a
//! manual clock wakes it when it moves — then asks the attempt to stop (a soft limit) or
//! ends it (a hard limit, whose action the pool provides).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use crate::clock::Clock;
use crate::error::Error;
use crate::signal::{AttemptSignal, StopReason};

/// What the pool does when an attempt's hard limit passes.
pub(crate) type OnHardLimit = Box<dyn FnOnce() + Send>;

/// The spool's timekeeper. Dropping it stops its thread.
pub(crate) struct Timekeeper {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Clock,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// What to do at each deadline, by (deadline ms, sequence).
    due: BTreeMap<(u64, u64), Action>,
    next_seq: u64,
    stop: bool,
}

enum Action {
    Soft(Arc<AttemptSignal>),
    Hard(OnHardLimit),
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The deadlines of one attempt; dropping it (the handler returned) removes them.
pub(crate) struct Watch {
    inner: Arc<Inner>,
    keys: [Option<(u64, u64)>; 2],
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        for key in self.keys.iter().flatten() {
            state.due.remove(key);
        }
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
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        inner.clock.subscribe(move || match weak.upgrade() {
            Some(inner) => {
                let _state = inner.lock();
                inner.wake.notify_all();
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

    /// Watches one attempt: at `soft` its signal is asked to stop, at `hard` the action runs
    /// (each a deadline in ms on the spool's clock), unless the returned watch is dropped
    /// first.
    pub(crate) fn watch(
        &self,
        soft: Option<(u64, Arc<AttemptSignal>)>,
        hard: Option<(u64, OnHardLimit)>,
    ) -> Watch {
        let mut state = self.inner.lock();
        let earliest = state.due.keys().next().map(|k| k.0);
        let mut keys = [None, None];
        let actions = [
            soft.map(|(at, s)| (at, Action::Soft(s))),
            hard.map(|(at, f)| (at, Action::Hard(f))),
        ];
        let mut wake = false;
        for (slot, action) in keys.iter_mut().zip(actions) {
            let Some((at, action)) = action else {
                continue;
            };
            let key = (at, state.next_seq);
            state.next_seq += 1;
            state.due.insert(key, action);
            *slot = Some(key);
            wake |= earliest.is_none_or(|e| at < e);
        }
        if wake {
            self.inner.wake.notify_all();
        }
        drop(state);
        Watch {
            inner: self.inner.clone(),
            keys,
        }
    }
}

impl Drop for Timekeeper {
    fn drop(&mut self) {
        self.inner.lock().stop = true;
        self.inner.wake.notify_all();
    }
}

/// The timekeeper's thread: fires what is due, then sleeps until the next deadline.
fn run(inner: &Inner) {
    let mut state = inner.lock();
    loop {
        if state.stop {
            return;
        }
        let now = inner.clock.now_ms();
        let mut fired = Vec::new();
        while let Some(entry) = state.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            fired.push(entry.remove());
        }
        if !fired.is_empty() {
            // Outside the lock: a hard limit's action reports to the engine and may start a
            // thread, and the attempts' own threads take the lock to drop their watches.
            drop(state);
            for action in fired {
                match action {
                    Action::Soft(signal) => signal.stop(StopReason::SoftLimit),
                    Action::Hard(act) => act(),
                }
            }
            state = inner.lock();
            continue;
        }
        let next = state.due.keys().next().map(|k| k.0);
        state = match next.and_then(|at| inner.clock.sleep_until(at)) {
            Some(timeout) => {
                inner
                    .wake
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            // Nothing due, or a manual clock (which wakes this thread when it moves).
            None => inner
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;

    /// On a manual clock nothing fires until the clock reaches the deadline; a dropped watch
    /// never fires.
    #[test]
    fn deadlines_fire_when_the_clock_reaches_them_and_not_after_their_watch_is_dropped() {
        let clock = ManualClock::from_unix_ms(1_000);
        let keeper = Timekeeper::start(Clock::Manual(clock.clone())).unwrap();
        let soft = Arc::new(AttemptSignal::default());
        let hard = Arc::new(AtomicUsize::new(0));
        let h = hard.clone();
        let watch = keeper.watch(
            Some((1_500, soft.clone())),
            Some((
                2_000,
                Box::new(move || {
                    h.fetch_add(1, Ordering::SeqCst);
                }),
            )),
        );
        let gone = Arc::new(AtomicUsize::new(0));
        let g = gone.clone();
        drop(keeper.watch(
            None,
            Some((
                1_200,
                Box::new(move || {
                    g.fetch_add(1, Ordering::SeqCst);
                }),
            )),
        ));
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
        drop(watch);
    }

    fn wait_for(cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
