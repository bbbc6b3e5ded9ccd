//! The signal one running attempt shares with the engine and the timekeeper: whether it was
//! asked to stop (revoked, or past its soft time limit) — read by the handler without a
//! lock — and who ended it, the handler by returning or the timekeeper at its hard limit
//! (exactly one of them wins).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
#[cfg(feature = "tokio")]
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A revoke was requested while the attempt ran.
const REVOKED: u8 = 1;
/// The soft time limit passed.
const SOFT_LIMIT: u8 = 2;
/// The handler returned, and its outcome is the attempt's.
const RETURNED: u8 = 4;
/// The hard time limit ended the attempt; whatever the handler returns later is dropped.
const ABANDONED: u8 = 8;

/// Why an attempt was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A revoke was requested.
    Revoked,
    /// The soft time limit passed.
    SoftLimit,
}

/// What interrupts an async attempt (feature `tokio`): see [`AttemptSignal::poll_interrupt`].
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// The hard time limit ended the attempt.
    Abandoned,
    /// A stop was asked: a revoke, or (when asked for) the soft time limit.
    Stopped,
}

/// One attempt's signal.
#[derive(Debug, Default)]
pub(crate) struct AttemptSignal {
    state: AtomicU8,
    /// Wakes handlers in `Context::sleep` when a stop is asked, and (feature `tokio`) the
    /// futures registered by [`poll_interrupt`](Self::poll_interrupt), kept here.
    lock: Mutex<Wakers>,
    wake: Condvar,
}

/// The futures to wake when the attempt is asked to stop or abandoned.
#[cfg(feature = "tokio")]
type Wakers = Vec<Waker>;
#[cfg(not(feature = "tokio"))]
type Wakers = ();

impl AttemptSignal {
    /// Asks the attempt to stop (the first reason asked is kept by [`stop_reason`]).
    pub(crate) fn stop(&self, reason: StopReason) {
        let bit = match reason {
            StopReason::Revoked => REVOKED,
            StopReason::SoftLimit => SOFT_LIMIT,
        };
        self.state.fetch_or(bit, Ordering::SeqCst);
        self.wake_all();
    }

    fn lock(&self) -> MutexGuard<'_, Wakers> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every sleeper and registered future (after a state change).
    fn wake_all(&self) {
        let guard = self.lock();
        self.wake.notify_all();
        #[cfg(feature = "tokio")]
        {
            let mut guard = guard;
            let wakers = std::mem::take(&mut *guard);
            drop(guard);
            for waker in wakers {
                waker.wake();
            }
        }
        #[cfg(not(feature = "tokio"))]
        drop(guard);
    }

    /// Whether the attempt was interrupted — abandoned at its hard limit, or (as asked)
    /// revoked or past its soft limit; if not, `cx`'s waker is woken when it is.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_interrupt(
        &self,
        cx: &mut std::task::Context<'_>,
        revoke: bool,
        soft_limit: bool,
    ) -> Poll<Interrupt> {
        let stops = if revoke { REVOKED } else { 0 } | if soft_limit { SOFT_LIMIT } else { 0 };
        let mut wakers = self.lock();
        // Read under the lock that `wake_all` takes after changing the state: either the
        // change is seen here, or the waker registered here is woken.
        let state = self.state.load(Ordering::SeqCst);
        if state & ABANDONED != 0 {
            return Poll::Ready(Interrupt::Abandoned);
        }
        if state & stops != 0 {
            return Poll::Ready(Interrupt::Stopped);
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Whether the attempt was asked to stop. One atomic load.
    pub(crate) fn is_stopped(&self) -> bool {
        self.state.load(Ordering::Relaxed) & (REVOKED | SOFT_LIMIT) != 0
    }

    /// Why it was asked to stop; a revoke wins over the soft limit.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        let state = self.state.load(Ordering::SeqCst);
        if state & REVOKED != 0 {
            Some(StopReason::Revoked)
        } else if state & SOFT_LIMIT != 0 {
            Some(StopReason::SoftLimit)
        } else {
            None
        }
    }

    /// Sleeps until `timeout` passes or a stop is asked; returns whether a stop was asked.
    pub(crate) fn sleep(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.lock();
        loop {
            if self.is_stopped() {
                return true;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return false;
            }
            guard = self
                .wake
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The handler returned: its outcome is the attempt's, unless the hard limit ended the
    /// attempt first (then `false`, and the outcome is dropped).
    pub(crate) fn returned(&self) -> bool {
        self.claim_end(RETURNED, ABANDONED)
    }

    /// The hard limit passed: the attempt ends now, unless the handler returned first
    /// (then `false`).
    pub(crate) fn abandon(&self) -> bool {
        let won = self.claim_end(ABANDONED, RETURNED);
        if won {
            // An async attempt waits on this to drop its future.
            self.wake_all();
        }
        won
    }

    /// Whether the hard limit ended the attempt.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.state.load(Ordering::SeqCst) & ABANDONED != 0
    }

    fn claim_end(&self, mine: u8, theirs: u8) -> bool {
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            if state & theirs != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state | mine,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn exactly_one_of_the_handler_and_the_hard_limit_ends_an_attempt() {
        for _ in 0..200 {
            let s = Arc::new(AttemptSignal::default());
            let other = s.clone();
            let t = std::thread::spawn(move || other.abandon());
            let returned = s.returned();
            let abandoned = t.join().unwrap();
            assert!(returned ^ abandoned, "{returned} {abandoned}");
            assert_eq!(s.is_abandoned(), abandoned);
        }
    }

    /// A waker that counts its wakes.
    #[cfg(feature = "tokio")]
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    #[cfg(feature = "tokio")]
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[cfg(feature = "tokio")]
    #[test]
    fn an_interrupt_wakes_the_futures_that_wait_for_it_and_only_what_they_ask_ends_them() {
        let count = Arc::new(Count::default());
        let waker = std::task::Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let woken = || count.0.load(Ordering::SeqCst);
        let s = AttemptSignal::default();
        // A sync task's race: only the hard limit ends it.
        assert!(s.poll_interrupt(&mut cx, false, false).is_pending());
        assert!(
            s.poll_interrupt(&mut cx, false, false).is_pending(),
            "registered once"
        );
        s.stop(StopReason::SoftLimit);
        assert_eq!(woken(), 1, "every stop wakes the waiters, once");
        assert!(
            s.poll_interrupt(&mut cx, true, false).is_pending(),
            "no revoke yet"
        );
        assert_eq!(
            s.poll_interrupt(&mut cx, true, true),
            Poll::Ready(Interrupt::Stopped),
            "`cancelled()` sees the soft limit"
        );
        s.stop(StopReason::Revoked);
        assert_eq!(woken(), 2);
        assert_eq!(
            s.poll_interrupt(&mut cx, true, false),
            Poll::Ready(Interrupt::Stopped)
        );
        assert!(s.poll_interrupt(&mut cx, false, false).is_pending());
        assert!(s.abandon());
        assert_eq!(
            woken(),
            3,
            "the hard limit wakes the race to drop its future"
        );
        assert_eq!(
            s.poll_interrupt(&mut cx, false, false),
            Poll::Ready(Interrupt::Abandoned)
        );
        assert!(
            !s.returned(),
            "abandoned: the handler's late outcome is dropped"
        );
    }

    #[test]
    fn a_stop_wakes_a_sleeper_and_a_revoke_wins_over_the_soft_limit() {
        let s = Arc::new(AttemptSignal::default());
        assert!(!s.sleep(Duration::from_millis(1)));
        let other = s.clone();
        let t = std::thread::spawn(move || other.sleep(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        s.stop(StopReason::SoftLimit);
        assert!(t.join().unwrap());
        assert_eq!(s.stop_reason(), Some(StopReason::SoftLimit));
        s.stop(StopReason::Revoked);
        assert_eq!(s.stop_reason(), Some(StopReason::Revoked));
        assert!(s.is_stopped());
    }
}
