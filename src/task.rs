//! What a user defines: the [`Task`] trait. The [`Context`] an attempt sees is in
//! `context`, the error a handler returns in `task_error`, and the registry that maps stored
//! names back to handlers in `registry`.

use serde::{Serialize, de::DeserializeOwned};

use crate::context::Context;
use crate::options::Options;
use crate::task_error::TaskError;

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

    /// Whether this is an [`AsyncTask`](crate::AsyncTask) (set by its blanket impl of
    /// `Task`, which enqueues it): such a type is registered with `register_async`.
    #[doc(hidden)]
    const ASYNC: bool = false;
}
