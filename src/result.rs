//! Results: the typed [`TaskHandle`], `wait`, and the wake-ups that make waiting cheap.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::inspect::TaskStatus;
use crate::spool::Spool;
use crate::task::TaskId;

/// A typed reference to an enqueued task, returned by `enqueue`. `O` is the task's `Output`.
///
/// The handle is a convenience: the id alone is enough to ask for the status later
/// ([`Spool::status`]) or to rebuild a handle ([`Spool::handle`]). A handle keeps its spool
/// open.
pub struct TaskHandle<O> {
    id: TaskId,
    spool: Spool,
    _output: PhantomData<fn() -> O>,
}

impl<O> Clone for TaskHandle<O> {
    fn clone(&self) -> Self {
        TaskHandle {
            id: self.id,
            spool: self.spool.clone(),
            _output: PhantomData,
        }
    }
}

impl<O> std::fmt::Debug for TaskHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle").field("id", &self.id).finish()
    }
}

impl<O: DeserializeOwned> TaskHandle<O> {
    pub(crate) fn new(id: TaskId, spool: Spool) -> Self {
        TaskHandle {
            id,
            spool,
            _output: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's current state, times and attempt history.
    ///
    /// # Errors
    /// `NotFound` if the task was pruned after its results TTL; `Storage` on a read failure.
    pub fn status(&self) -> Result<TaskStatus, Error> {
        self.spool.status(self.id)
    }

    /// The output if the task has succeeded, `None` while it has not reached a final state.
    ///
    /// # Errors
    /// `TaskFailed` (with the error history), `TaskExpired` or `TaskRevoked` for the other
    /// final states; `NotFound` after pruning; `Json` if the stored output does not decode
    /// into `O`.
    pub fn try_get(&self) -> Result<Option<O>, Error> {
        match self.spool.final_output(self.id)? {
            Some(bytes) => decode_output(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Blocks until the task reaches a final state or `timeout` passes.
    ///
    /// The wait wakes on the commit that stores the result (no polling), so an output seen
    /// here is already durable.
    ///
    /// # Errors
    /// `Timeout` if the task is still unfinished at the deadline (it keeps going), plus every
    /// error of [`try_get`](Self::try_get).
    pub fn wait(&self, timeout: Duration) -> Result<O, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let reg = self.spool.waiters().register(self.id.0);
            match self.spool.final_output(self.id) {
                Ok(None) => {}
                done => {
                    self.spool.waiters().forget(reg);
                    return done.and_then(|bytes| decode_output(&bytes.unwrap_or_default()));
                }
            }
            match reg.wake.recv_deadline(deadline) {
                // Woken: the registration was consumed by `notify`; read again.
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.spool.waiters().forget(reg);
                    return Err(Error::Timeout(self.id));
                }
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Closed),
            }
        }
    }
}

fn decode_output<O: DeserializeOwned>(bytes: &[u8]) -> Result<O, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Json(format!("the stored result does not decode: {e}")))
}

/// Threads blocked in `wait`, keyed by task id; the writer wakes them after each commit.
#[derive(Default)]
pub(crate) struct Waiters {
    map: Mutex<HashMap<u64, Vec<Waker>>>,
    count: AtomicUsize,
    next_token: AtomicU64,
}

/// A registration token and the channel that wakes it.
type Waker = (u64, Sender<()>);

/// One registered waiter.
pub(crate) struct Registration {
    id: u64,
    token: u64,
    wake: Receiver<()>,
}

impl Waiters {
    /// Registers interest in `id` before its state is read (so a commit in between is not missed).
    pub(crate) fn register(&self, id: u64) -> Registration {
        let (tx, wake) = crossbeam_channel::bounded(1);
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
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
    pub(crate) fn any(&self, ids: &[u64]) -> bool {
        if ids.is_empty() || self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        ids.iter().any(|id| map.contains_key(id))
    }

    /// Wakes every waiter of these tasks.
    pub(crate) fn notify(&self, ids: &[u64]) {
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
