//! Synchronisation primitives of the crate, in one place: the one-shot reply a caller waits
//! on, and the registry of threads waiting for tasks to finish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::model::TaskId;

/// The sending half of a one-shot reply: the writer answers a caller exactly once.
///
/// A caller waiting for a durable commit should go to sleep at once and leave both cores to
/// the writer and the workers; a channel's receive spins and yields first, which showed up
/// as hundreds of thousands of `sched_yield` calls per second under concurrent enqueues.
pub(crate) struct Promise<T> {
    to: To<T>,
}

/// Who hears a promise's answer.
enum To<T> {
    /// A caller blocked in [`Answer::recv`].
    Waiting(Arc<Slot<T>>),
    /// A function, run by whoever answers (the writer's thread, or the caller's own when it
    /// led its group): `None` if the promise was dropped unanswered. It must not block.
    Call(Option<Then<T>>),
}

/// What a callback promise runs with its answer.
pub(crate) type Then<T> = Box<dyn FnOnce(Option<T>) + Send>;

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
            to: To::Waiting(inner.clone()),
        },
        Answer { inner },
    )
}

impl<T> Promise<T> {
    /// A promise whose answer is handed to `then` by whoever answers: for a caller that
    /// does not wait on a thread of its own (a control socket's enqueue).
    pub(crate) fn calling(then: Then<T>) -> Promise<T> {
        Promise {
            to: To::Call(Some(then)),
        }
    }

    /// Answers the waiting caller (if it is still waiting).
    pub(crate) fn send(mut self, value: T) {
        self.settle(Some(value));
    }

    fn settle(&mut self, value: Option<T>) {
        let inner = match &mut self.to {
            To::Call(then) => {
                if let Some(then) = then.take() {
                    then(value);
                }
                return;
            }
            To::Waiting(inner) => inner,
        };
        let mut slot = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !matches!(*slot, State::Waiting) {
            return;
        }
        *slot = match value {
            Some(value) => State::Answered(value),
            None => State::Abandoned,
        };
        drop(slot);
        // Woken after the lock is released: a caller woken while it is still held would
        // block on it at once and need a second wake-up.
        inner.ready.notify_one();
    }
}

impl<T> Drop for Promise<T> {
    /// A promise dropped unanswered (the writer stopped) wakes the caller with an error.
    fn drop(&mut self) {
        self.settle(None);
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

/// Threads blocked in `wait`, keyed by task id; the engine wakes them once a task's final
/// state can be read.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<TaskId, Vec<Waker>>>,
    count: AtomicUsize,
    next_token: AtomicU64,
    /// Set when the spool closes: every waiter wakes as [`Woken::Closed`], and later
    /// registrations wake so at once.
    closed: AtomicBool,
}

/// A registration token and the channel that wakes it.
type Waker = (u64, Sender<()>);

/// One registered waiter.
pub(crate) struct Registration {
    id: TaskId,
    token: u64,
    wake: Receiver<()>,
}

/// What ended a [`Registration::wait`].
pub(crate) enum Woken {
    /// The task may have finished: read it again (the registration was used up).
    Notified,
    /// The deadline passed.
    TimedOut,
    /// The engine stopped.
    Closed,
}

impl Registration {
    /// Blocks until the task is notified, the deadline passes or the engine stops.
    pub(crate) fn wait(&self, deadline: Instant) -> Woken {
        match self.wake.recv_deadline(deadline) {
            Ok(()) => Woken::Notified,
            Err(RecvTimeoutError::Timeout) => Woken::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Woken::Closed,
        }
    }
}

impl Waiters {
    /// Registers interest in `id` before its state is read (so a commit in between is not missed).
    pub(crate) fn register(&self, id: TaskId) -> Registration {
        let (tx, wake) = crossbeam_channel::bounded(1);
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            // Dropping the sender makes `wait` return `Closed` at once.
            return Registration { id, token, wake };
        }
        map.entry(id).or_default().push((token, tx));
        self.count.fetch_add(1, Ordering::Release);
        Registration { id, token, wake }
    }

    /// Removes a registration whose waiter returned without being woken.
    pub(crate) fn forget(&self, reg: Registration) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = map.get_mut(&reg.id) {
            let before = list.len();
            list.retain(|(token, _)| *token != reg.token);
            self.count.fetch_sub(before - list.len(), Ordering::Release);
            if list.is_empty() {
                map.remove(&reg.id);
            }
        }
    }

    /// Whether any of these tasks has a waiter.
    pub(crate) fn any(&self, ids: &[TaskId]) -> bool {
        if ids.is_empty() || self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        ids.iter().any(|id| map.contains_key(id))
    }

    /// Wakes every waiter as [`Woken::Closed`], now and for every later registration: the
    /// spool is closing, so nothing will notify them.
    pub(crate) fn close(&self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
        let waiting: usize = map.values().map(Vec::len).sum();
        self.count.fetch_sub(waiting, Ordering::Release);
        // Dropping the senders disconnects every registration.
        map.clear();
    }

    /// Wakes every waiter of these tasks.
    pub(crate) fn notify(&self, ids: &[TaskId]) {
        if ids.is_empty() || self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            if let Some(list) = map.remove(id) {
                self.count.fetch_sub(list.len(), Ordering::Release);
                for (_, tx) in list {
                    let _ = tx.try_send(());
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
