//! What a user defines: the [`Task`] trait, its error type, the [`Context`] an attempt sees,
//! and the registry that maps stored task names back to handlers.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Serialize, de::DeserializeOwned};

use crate::clock::to_system_time;
use crate::model::{Disposition, Origin, Outcome, TaskId};
use crate::options::Options;

/// A background task: a serializable struct that is its own arguments.
///
/// The struct is stored as JSON when enqueued and decoded again by the worker, so adding a
/// field with `#[serde(default)]` is a compatible change; renaming `NAME` is not (stored tasks
/// keep the old name and wait, visible as unregistered, until a worker registers it).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskspool::{Context, Task, TaskError};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { path: String, width: u32 }
///
/// impl Task for Resize {
///     const NAME: &'static str = "images.resize";
///     type Output = u64;
///     fn run(self, ctx: &Context) -> Result<u64, TaskError> {
///         if self.width == 0 {
///             return Err(TaskError::fail("width must be positive"));
///         }
///         Ok(u64::from(self.width) * u64::from(ctx.attempt()))
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name stored with every enqueued task. Keep it unchanged across deploys.
    const NAME: &'static str;

    /// What a successful attempt returns; stored as JSON with the task.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs one attempt.
    ///
    /// Return `Err(TaskError::retry(..))` (or any `std::error::Error` through `?`) to retry with
    /// the task's backoff, `TaskError::retry_after` for an explicit delay, and `TaskError::fail`
    /// to fail permanently. A panic counts as a retryable failure.
    fn run(self, ctx: &Context) -> Result<Self::Output, TaskError>;

    /// Defaults for every enqueue of this type (queue, priority, retries, backoff, …).
    /// Options passed to `enqueue_with` override them field by field.
    fn defaults() -> Options {
        Options::new()
    }
}

/// The error a task handler returns: a message and what should happen next.
///
/// Any `std::error::Error` converts into a retryable `TaskError`, so `?` works in handlers.
/// (For that reason `TaskError` itself does not implement `std::error::Error`, as with
/// `anyhow::Error`.)
pub struct TaskError {
    disposition: Disposition,
    message: String,
}

impl TaskError {
    /// A retryable failure: the task runs again after its backoff, while retries remain.
    pub fn retry(message: impl Into<String>) -> Self {
        TaskError {
            disposition: Disposition::Retry,
            message: message.into(),
        }
    }

    /// A retryable failure with an explicit delay instead of the backoff (like Celery's
    /// `self.retry(countdown=…)`). It still counts toward `max_retries`.
    pub fn retry_after(delay: Duration, message: impl Into<String>) -> Self {
        TaskError {
            disposition: Disposition::RetryAfter(delay),
            message: message.into(),
        }
    }

    /// A permanent failure: the task ends `Failed` now, whatever retries remain.
    pub fn fail(message: impl Into<String>) -> Self {
        TaskError {
            disposition: Disposition::Fail,
            message: message.into(),
        }
    }

    /// The message recorded in the task's error history.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this error lets the task run again (if retries remain).
    pub fn is_retryable(&self) -> bool {
        self.disposition != Disposition::Fail
    }

    /// The attempt's outcome when its handler returned this error.
    pub(crate) fn into_outcome(self) -> Outcome {
        Outcome::Failed {
            disposition: self.disposition,
            message: self.message,
        }
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskError")
            .field("disposition", &self.disposition)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::retry(e.to_string())
    }
}

/// What a running attempt knows about itself.
#[derive(Debug, Clone)]
pub struct Context {
    pub(crate) id: TaskId,
    pub(crate) name: String,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) max_retries: u32,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) origin: Option<Origin>,
}

impl Context {
    /// This task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's registered name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue it was enqueued on.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// This attempt's number: 1 for the first run, 2 for the first retry, and so on. Attempts
    /// lost to a crash count, so a handler can tell it may be re-running after a partial run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many retries the task allows after its first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Whether a retryable error from this attempt would end the task as `Failed`.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt > self.max_retries
    }

    /// When the task was enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        to_system_time(self.enqueued_at_ms)
    }

    /// The periodic schedule that fired this task, if any.
    pub fn schedule(&self) -> Option<&str> {
        self.origin.as_ref().map(|o| o.schedule.as_str())
    }

    /// The fire time this task was enqueued for, if a periodic schedule fired it. Together
    /// with [`schedule`](Self::schedule) it identifies the fire: each (schedule, fire time)
    /// is enqueued at most once.
    pub fn fire_time(&self) -> Option<SystemTime> {
        self.origin.as_ref().map(|o| to_system_time(o.fire_at_ms))
    }
}

/// A type-erased handler: decode the JSON arguments, run, encode the output.
pub(crate) type Handler = Arc<dyn Fn(&[u8], &Context) -> Outcome + Send + Sync>;

/// Task names a worker can run, mapped to their handlers.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    handlers: HashMap<&'static str, Handler>,
}

impl Registry {
    pub(crate) fn register<T: Task>(&mut self) {
        let handler: Handler = Arc::new(|payload: &[u8], ctx: &Context| {
            let mut de = serde_json::Deserializer::from_slice(payload);
            let task: T = match serde_path_to_error::deserialize(&mut de) {
                Ok(task) => task,
                Err(e) => {
                    let path = e.path().to_string();
                    return Outcome::Undecodable(format!(
                        "cannot decode the arguments of task `{}` at field `{}`: {}",
                        T::NAME,
                        path,
                        e.inner()
                    ));
                }
            };
            match task.run(ctx) {
                Ok(output) => match serde_json::to_vec(&output) {
                    Ok(bytes) => Outcome::Succeeded(bytes),
                    Err(e) => TaskError::fail(format!(
                        "cannot encode the output of task `{}` as JSON: {e}",
                        T::NAME
                    ))
                    .into_outcome(),
                },
                Err(e) => e.into_outcome(),
            }
        });
        self.handlers.insert(T::NAME, handler);
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }
}
