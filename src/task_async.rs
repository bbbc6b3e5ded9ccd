//! Async tasks (feature `tokio`): [`AsyncTask`], whose attempts are futures run on the
//! runtime a pool is given ([`WorkerBuilder::runtime`](crate::WorkerBuilder::runtime)).

use std::future::Future;

use serde::{Serialize, de::DeserializeOwned};

use crate::context::Context;
use crate::options::Options;
use crate::task::Task;
use crate::task_error::TaskError;

/// A background task whose attempt is a future (feature `tokio`): an HTTP call, a database
/// query, anything awaited.
///
/// Like a [`Task`], it is a serializable struct that is its own arguments, with a stable
/// `NAME`; every `AsyncTask` is also a `Task`, so [`Spool::enqueue`](crate::Spool::enqueue)
/// and every other enqueue take it as they are. A pool runs it once registered with
/// [`WorkerBuilder::register_async`](crate::WorkerBuilder::register_async) on a runtime
/// given with [`WorkerBuilder::runtime`](crate::WorkerBuilder::runtime).
///
/// The future is dropped — so the attempt really stops at its next `.await` — when the task
/// is revoked while it runs, and when its hard time limit passes. The soft time limit only
/// asks it to stop: see [`Context::cancelled`]. A panic while it is polled is caught and
/// retried, as for a `Task`. The context's blocking calls ([`Context::sleep`]) block the
/// runtime's thread: await `tokio::time::sleep` or `ctx.cancelled()` instead.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskspool::{AsyncTask, Context, TaskError};
///
/// #[derive(Serialize, Deserialize)]
/// struct Fetch { url: String }
///
/// impl AsyncTask for Fetch {
///     const NAME: &'static str = "fetch";
///     type Output = usize;
///     async fn run(self, _ctx: Context) -> Result<usize, TaskError> {
///         tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///         Ok(self.url.len())
///     }
/// }
/// ```
pub trait AsyncTask: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name stored with every enqueued task. Keep it unchanged across deploys.
    const NAME: &'static str;

    /// What a successful attempt returns; stored as JSON with the task.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs one attempt: implement it as an `async fn`. The future must be `Send` (the
    /// runtime may move it between its threads). Errors mean what they mean for
    /// [`Task::run`].
    fn run(self, ctx: Context) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;

    /// Defaults for every enqueue of this type, as [`Task::defaults`].
    fn defaults() -> Options {
        Options::new()
    }
}

/// Every async task is enqueued as a task; only its registration differs.
impl<T: AsyncTask> Task for T {
    const NAME: &'static str = <T as AsyncTask>::NAME;
    type Output = <T as AsyncTask>::Output;
    const ASYNC: bool = true;

    /// Never called: `register::<T>()` of an async task makes the pool refuse to start.
    fn run(self, _ctx: &Context) -> Result<Self::Output, TaskError> {
        Err(TaskError::fail(format!(
            "`{}` is an async task: register it with register_async",
            <T as AsyncTask>::NAME
        )))
    }

    fn defaults() -> Options {
        <T as AsyncTask>::defaults()
    }
}
