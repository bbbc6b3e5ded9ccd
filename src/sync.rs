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

/// A registration token and what wakes it.
type Waker = (u64, Wake);

/// How a registered waiter is woken: a thread blocked on a channel, or (feature `tokio`) an
/// awaiting task, through a one-shot. Dropping it unwoken wakes the waiter as closed.
enum Wake {
    Thread(Sender<()>),
    #[cfg(feature = "tokio")]
    Task(tokio::sync::oneshot::Sender<()>),
}

impl Wake {
    fn wake(self) {
        match self {
            Wake::Thread(tx) => {
                let _ = tx.try_send(());
            }
            #[cfg(feature = "tokio")]
            Wake::Task(tx) => {
                let _ = tx.send(());
            }
        }
    }
}

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

/// One registered waiter that awaits (feature `tokio`): [`Waiters::register_async`].
#[cfg(feature = "tokio")]
pub(crate) struct AsyncRegistration {
    waiters: Arc<Waiters>,
    id: TaskId,
    token: u64,
    wake: tokio::sync::oneshot::Receiver<()>,
}

#[cfg(feature = "tokio")]
impl AsyncRegistration {
    /// Waits until the task is notified, the deadline passes or the engine stops. The
    /// deadline needs the runtime's timer (a runtime built with `enable_time`).
    pub(crate) async fn wait(&mut self, deadline: Instant) -> Woken {
        let deadline = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(deadline, &mut self.wake).await {
            Ok(Ok(())) => Woken::Notified,
            Ok(Err(_)) => Woken::Closed,
            Err(_) => Woken::TimedOut,
        }
    }
}

#[cfg(feature = "tokio")]
impl Drop for AsyncRegistration {
    fn drop(&mut self) {
        // Already removed if it was woken; otherwise it goes now.
        self.waiters.forget_token(self.id, self.token);
    }
}

impl Waiters {
    /// Registers interest in `id` before its state is read (so a commit in between is not missed).
    pub(crate) fn register(&self, id: TaskId) -> Registration {
        let (tx, wake) = crossbeam_channel::bounded(1);
        let token = self.enroll(id, Wake::Thread(tx));
        Registration { id, token, wake }
    }

    /// As [`register`](Self::register), for a task that awaits (feature `tokio`); the
    /// registration forgets itself when dropped, so a wait whose future is dropped leaves
    /// nothing behind.
    #[cfg(feature = "tokio")]
    pub(crate) fn register_async(self: &Arc<Self>, id: TaskId) -> AsyncRegistration {
        let (tx, wake) = tokio::sync::oneshot::channel();
        let token = self.enroll(id, Wake::Task(tx));
        AsyncRegistration {
            waiters: self.clone(),
            id,
            token,
            wake,
        }
    }

    /// Adds `wake` under `id`; its token. Once closed, `wake` is dropped at once, which wakes
    /// its waiter as closed.
    fn enroll(&self, id: TaskId, wake: Wake) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return token;
        }
        map.entry(id).or_default().push((token, wake));
        self.count.fetch_add(1, Ordering::Release);
        token
    }

    /// Removes a registration whose waiter returned without being woken.
    pub(crate) fn forget(&self, reg: Registration) {
        self.forget_token(reg.id, reg.token);
    }

    fn forget_token(&self, id: TaskId, token: u64) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(list) = map.get_mut(&id) {
            let before = list.len();
            list.retain(|(t, _)| *t != token);
            self.count.fetch_sub(before - list.len(), Ordering::Release);
            if list.is_empty() {
                map.remove(&id);
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

    /// Wakes every waiter, to read its task again: for an engine that may have missed
    /// notifications (a PostgreSQL listener that reconnected).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn notify_all(&self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting: usize = map.values().map(Vec::len).sum();
        self.count.fetch_sub(waiting, Ordering::Release);
        for (_, list) in map.drain() {
            for (_, wake) in list {
                wake.wake();
            }
        }
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
                for (_, wake) in list {
                    wake.wake();
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

    #[test]
    fn a_callback_promise_hears_its_answer_or_its_abandonment() {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        Promise::calling(Box::new(move |v: Option<u8>| h.lock().unwrap().push(v))).send(7);
        let h = heard.clone();
        drop(Promise::calling(Box::new(move |v: Option<u8>| {
            h.lock().unwrap().push(v)
        })));
        assert_eq!(*heard.lock().unwrap(), vec![Some(7), None]);
    }

    /// An awaiting waiter forgets itself when dropped, woken or not, and a notification wakes
    /// it; a close wakes it as closed.
    #[cfg(feature = "tokio")]
    #[test]
    fn async_registrations_are_woken_and_forget_themselves() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let waiters = Arc::new(Waiters::default());
        let id = TaskId(7);
        drop(waiters.register_async(id));
        assert_eq!(waiters.count.load(Ordering::SeqCst), 0, "dropped unwoken");
        let mut reg = waiters.register_async(id);
        assert!(waiters.any(&[id]));
        waiters.notify(&[id]);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        assert!(matches!(rt.block_on(reg.wait(deadline)), Woken::Notified));
        drop(reg);
        assert_eq!(waiters.count.load(Ordering::SeqCst), 0);
        let mut reg = waiters.register_async(id);
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(matches!(rt.block_on(reg.wait(soon)), Woken::TimedOut));
        waiters.close();
        assert!(matches!(rt.block_on(reg.wait(deadline)), Woken::Closed));
    }
}
