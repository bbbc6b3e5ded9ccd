//! Synchronisation primitives of the crate, in one place.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// The sending half of a one-shot reply: the writer answers a caller exactly once.
///
/// A caller waiting for a durable commit should go to sleep at once and leave both cores to
/// the writer and the workers; a channel's receive spins and yields first, which showed up
/// as hundreds of thousands of `sched_yield` calls per second under concurrent enqueues.
pub(crate) struct Promise<T> {
    inner: Arc<Slot<T>>,
}

/// The receiving half of a one-shot reply.
pub(crate) struct Answer<T> {
    inner: Arc<Slot<T>>,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

enum State<T> {
    Waiting,
    Answered(T),
    Abandoned,
}

/// A new promise and the answer it will fulfil.
pub(crate) fn oneshot<T>() -> (Promise<T>, Answer<T>) {
    let inner = Arc::new(Slot {
        state: Mutex::new(State::Waiting),
        ready: Condvar::new(),
    });
    (
        Promise {
            inner: inner.clone(),
        },
        Answer { inner },
    )
}

impl<T> Promise<T> {
    /// Answers the waiting caller (if it is still waiting).
    pub(crate) fn send(self, value: T) {
        self.settle(State::Answered(value));
    }

    fn settle(&self, state: State<T>) {
        let mut slot = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !matches!(*slot, State::Waiting) {
            return;
        }
        *slot = state;
        drop(slot);
        // Woken after the lock is released: a caller woken while it is still held would
        // block on it at once and need a second wake-up.
        self.inner.ready.notify_one();
    }
}

impl<T> Drop for Promise<T> {
    /// A promise dropped unanswered (the writer stopped) wakes the caller with an error.
    fn drop(&mut self) {
        self.settle(State::Abandoned);
    }
}

/// The promise was dropped without an answer.
#[derive(Debug)]
pub(crate) struct Abandoned;

impl<T> Answer<T> {
    /// Blocks until the answer arrives.
    pub(crate) fn recv(self) -> Result<T, Abandoned> {
        let mut slot = self
            .inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            match std::mem::replace(&mut *slot, State::Abandoned) {
                State::Answered(value) => return Ok(value),
                State::Abandoned => return Err(Abandoned),
                State::Waiting => {
                    *slot = State::Waiting;
                    slot = self
                        .inner
                        .ready
                        .wait(slot)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_arrives_across_threads_and_abandonment_is_seen() {
        let (promise, answer) = oneshot();
        let t = std::thread::spawn(move || promise.send(42));
        assert_eq!(answer.recv().unwrap(), 42);
        t.join().unwrap();
        let (promise, answer) = oneshot::<u8>();
        drop(promise);
        assert!(answer.recv().is_err());
    }
}
