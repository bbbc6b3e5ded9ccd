//! Results: the typed [`TaskHandle`] and `wait`, which sleeps until the engine says the task
//! finished (no polling).

use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::model::TaskId;
use crate::shared::Shared;
use crate::sync::{Waiters, Woken};
use crate::views::TaskStatus;

/// A typed reference to an enqueued task, returned by `enqueue`. `O` is the task's `Output`.
///
/// The handle is a convenience: the id alone is enough to ask for the status later
/// ([`Spool::status`](crate::Spool::status)) or to rebuild a handle
/// ([`Spool::handle`](crate::Spool::handle)).
///
/// A handle does not keep its spool open: once every [`Spool`](crate::Spool) and
/// [`Worker`](crate::Worker) of the file is dropped, the file is closed and the handle
/// answers [`Error::Closed`] (a thread blocked in [`wait`](Self::wait) wakes with it).
pub struct TaskHandle<O> {
    id: TaskId,
    /// The task name the handle was made for, checked against the stored task's.
    name: &'static str,
    /// The enqueue that made it found the task already there (see [`Self::is_duplicate`]).
    duplicate: bool,
    shared: Weak<Shared>,
    waiters: Arc<Waiters>,
    _output: PhantomData<fn() -> O>,
}

impl<O> Clone for TaskHandle<O> {
    fn clone(&self) -> Self {
        TaskHandle {
            id: self.id,
            name: self.name,
            duplicate: self.duplicate,
            shared: self.shared.clone(),
            waiters: self.waiters.clone(),
            _output: PhantomData,
        }
    }
}

impl<O> TaskHandle<O> {
    /// A handle of task `id` made from this one (the same name and spool).
    pub(crate) fn sibling(&self, id: TaskId, duplicate: bool) -> Self {
        TaskHandle {
            id,
            duplicate,
            ..self.clone()
        }
    }
}

impl<O> std::fmt::Debug for TaskHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

impl<O: DeserializeOwned> TaskHandle<O> {
    /// A handle for task `id`, expected to be a `name` task.
    pub(crate) fn new(id: TaskId, name: &'static str, shared: &Arc<Shared>) -> Self {
        TaskHandle {
            id,
            name,
            duplicate: false,
            shared: Arc::downgrade(shared),
            waiters: shared.waiters.clone(),
            _output: PhantomData,
        }
    }

    /// A handle from an enqueue: for a duplicate, the handle of the task that holds the
    /// unique key.
    pub(crate) fn enqueued(
        id: TaskId,
        duplicate: bool,
        name: &'static str,
        shared: &Arc<Shared>,
    ) -> Self {
        TaskHandle {
            duplicate,
            ..TaskHandle::new(id, name, shared)
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// Whether the enqueue that returned this handle created nothing, because a task of the
    /// same type held its unique key ([`Options::unique`](crate::Options::unique)): the
    /// handle is that task's. `false` for a handle from [`Spool::handle`](crate::Spool::handle).
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// The spool, while it is open.
    fn shared(&self) -> Result<Arc<Shared>, Error> {
        self.shared.upgrade().ok_or(Error::Closed)
    }

    /// The task's current state, times and attempt history.
    ///
    /// # Errors
    /// `NotFound` if the task was pruned after its results TTL; `Storage` on a read failure;
    /// `Closed` once the spool is closed.
    pub fn status(&self) -> Result<TaskStatus, Error> {
        self.shared()?.engine.status(self.id)
    }

    /// The output if the task has succeeded, `None` while it has not reached a final state.
    ///
    /// # Errors
    /// `WrongTask` if the task is of another name than the handle's type (a handle built
    /// with [`Spool::handle`](crate::Spool::handle) for the wrong type); `TaskFailed` (with
    /// the error history) or `TaskExpired` for the other final states; `NotFound` after
    /// pruning; `Json` if the stored output does not decode into `O`; `Closed` once the
    /// spool is closed.
    pub fn try_get(&self) -> Result<Option<O>, Error> {
        match self.shared()?.engine.result(self.id, Some(self.name))? {
            Some(bytes) => decode_output(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Blocks until the task reaches a final state or `timeout` passes.
    ///
    /// The wait wakes on the commit that stores the result (no polling), so an output seen
    /// here is already durable. It blocks the calling thread: from async code, await
    /// `wait_async` instead (feature `tokio`), or the runtime's thread waits with it. On the
    /// thread of a current-thread runtime, nothing else of that runtime runs meanwhile — a
    /// pool on it cannot run the task, and the wait ends only at its timeout — so there it
    /// logs a warning that says so (feature `tokio`).
    ///
    /// # Errors
    /// `Timeout` if the task is still unfinished at the deadline (it keeps going); `Closed`
    /// as soon as the spool closes; plus every error of [`try_get`](Self::try_get).
    pub fn wait(&self, timeout: Duration) -> Result<O, Error> {
        #[cfg(feature = "tokio")]
        if tokio::runtime::worker_index().is_some()
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
        {
            tracing::warn!(
                task.id = self.id.0,
                "TaskHandle::wait blocks the thread of a current-thread tokio runtime: nothing \
                 else on that runtime runs until it returns (a pool on it cannot run the task, \
                 so the wait could only end at its timeout); await wait_async instead"
            );
        }
        let output = wait_output(
            &self.shared,
            &self.waiters,
            self.id,
            Some(self.name),
            Instant::now() + timeout,
        )?;
        decode_output(&output)
    }
}

#[cfg(feature = "tokio")]
impl<O: DeserializeOwned> TaskHandle<O> {
    /// As [`wait`](Self::wait), awaited (feature `tokio`): the task is woken by the commit
    /// that stores the result, through a one-shot — no thread per waiter, no polling. The
    /// timeout needs the runtime's timer (`enable_time`, or `enable_all`). Dropping the
    /// future leaves nothing registered.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub async fn wait_async(&self, timeout: Duration) -> Result<O, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut reg = self.waiters.register_async(self.id);
            let read = self
                .shared()
                .and_then(|shared| shared.engine.result(self.id, Some(self.name)));
            match read {
                Ok(None) => {}
                done => return done.and_then(|bytes| decode_output(&bytes.unwrap_or_default())),
            }
            match reg.wait(deadline).await {
                Woken::Notified => {}
                Woken::TimedOut => return Err(Error::Timeout(self.id)),
                Woken::Closed => return Err(Error::Closed),
            }
        }
    }
}

/// Blocks until task `id` reaches a final state or `deadline` passes; its output's JSON
/// bytes. `name`: the task name it must have (`WrongTask` otherwise). Holds the spool only
/// for each read, so a waiter never keeps it open (it hears `Closed` when it closes). What
/// [`TaskHandle::wait`] and a remote client's wait run.
///
/// # Errors
/// As [`TaskHandle::wait`], before the output is decoded.
pub(crate) fn wait_output(
    shared: &Weak<Shared>,
    waiters: &Waiters,
    id: TaskId,
    name: Option<&str>,
    deadline: Instant,
) -> Result<Vec<u8>, Error> {
    loop {
        let reg = waiters.register(id);
        let read = shared
            .upgrade()
            .ok_or(Error::Closed)
            .and_then(|shared| shared.engine.result(id, name));
        match read {
            Ok(None) => {}
            done => {
                waiters.forget(reg);
                return done.map(Option::unwrap_or_default);
            }
        }
        match reg.wait(deadline) {
            // The registration was used up by the notification; read again.
            Woken::Notified => {}
            Woken::TimedOut => {
                waiters.forget(reg);
                return Err(Error::Timeout(id));
            }
            Woken::Closed => return Err(Error::Closed),
        }
    }
}

/// A stored output (JSON bytes) as `O`.
///
/// # Errors
/// `Json` if it does not decode into `O`.
pub(crate) fn decode_output<O: DeserializeOwned>(bytes: &[u8]) -> Result<O, Error> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Json(format!("the stored result does not decode: {e}")))
}
