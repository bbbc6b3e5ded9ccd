//! What a running attempt can reach: the [`Context`] passed to [`Task::run`](crate::Task::run)
//! — the attempt's own facts, the app data its pool was given, and the spool.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::to_system_time;
use crate::error::Error;
use crate::model::{Origin, TaskId};
use crate::shared::{Shared, Spool};
use crate::signal::{AttemptSignal, StopReason};
use crate::store::{Inputs, NewTask, Reporter};
use crate::task_error::TaskError;

/// The inputs of task `id` (a JSON array), as `T` (an array or a `Vec` of the input type).
fn decode_input<T: DeserializeOwned>(id: TaskId, json: &[u8]) -> Result<T, TaskError> {
    serde_json::from_slice(json).map_err(|e| {
        TaskError::fail(format!(
            "the inputs of task {id} do not decode as {}: {e}",
            type_name::<T>()
        ))
    })
}

/// Values of any `Send + Sync + 'static` type given to a pool with
/// [`WorkerBuilder::data`](crate::WorkerBuilder::data), one per type.
#[derive(Clone, Default)]
pub(crate) struct AppData {
    values: HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
    /// The first type given twice, reported when the pool starts.
    given_twice: Option<&'static str>,
}

impl AppData {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let previous = self
            .values
            .insert(TypeId::of::<T>(), (type_name::<T>(), Arc::new(value)));
        if previous.is_some() && self.given_twice.is_none() {
            self.given_twice = Some(type_name::<T>());
        }
    }

    /// # Errors
    /// `InvalidOption` if a type was given twice (the second value would silently replace
    /// the first).
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.given_twice {
            Some(ty) => Err(Error::InvalidOption(format!(
                "app data of type `{ty}` was given twice to one worker; a handler reads one value \
                 per type — give it once (wrap the values in a struct, or use newtypes to give \
                 several of one type)"
            ))),
            None => Ok(()),
        }
    }

    fn get<T: 'static>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(_, value)| value.downcast_ref::<T>())
    }

    /// The types given, sorted, for messages and `Debug`.
    pub(crate) fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.values.values().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names
    }
}

/// What every attempt of one pool shares.
pub(crate) struct Env {
    pub(crate) data: AppData,
    /// Weak: a running task never keeps the spool open on its own.
    pub(crate) spool: Weak<Shared>,
    /// Where progress goes.
    pub(crate) reporter: Arc<dyn Reporter>,
}

impl Env {
    pub(crate) fn new(
        data: AppData,
        shared: &Arc<Shared>,
        reporter: Arc<dyn Reporter>,
    ) -> Arc<Env> {
        Arc::new(Env {
            data,
            spool: Arc::downgrade(shared),
            reporter,
        })
    }
}

/// The most bytes one progress report may take as JSON.
pub const MAX_PROGRESS_BYTES: usize = 64 * 1024;

/// What a running attempt knows about itself, and what it can reach: the app data its worker
/// was given ([`data`](Self::data)) and the spool ([`spool`](Self::spool)).
///
/// ```
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use taskspool::{Context, Spool, Task, TaskError};
///
/// struct Config { greeting: String }
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet { name: String }
///
/// impl Task for Greet {
///     const NAME: &'static str = "greet";
///     type Output = String;
///     fn run(self, ctx: &Context) -> Result<String, TaskError> {
///         let config = ctx.data::<Config>()?;
///         if self.name != "world" {
///             // A follow-up task, stored with this attempt's success.
///             ctx.enqueue(Greet { name: "world".into() })?;
///         }
///         Ok(format!("{}, {}", config.greeting, self.name))
///     }
/// }
///
/// let spool = Spool::temporary()?;
/// let worker = spool
///     .worker()
///     .data(Config { greeting: "hello".into() })
///     .register::<Greet>()
///     .start()?;
/// let handle = spool.enqueue(Greet { name: "Ada".into() })?;
/// assert_eq!(handle.wait(Duration::from_secs(5))?, "hello, Ada");
/// worker.shutdown(Duration::from_secs(5))?;
/// # Ok::<(), taskspool::Error>(())
/// ```
pub struct Context {
    pub(crate) id: TaskId,
    pub(crate) name: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) max_retries: u32,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) origin: Option<Origin>,
    pub(crate) env: Arc<Env>,
    /// Shared with the engine and the timekeeper: asks the attempt to stop.
    pub(crate) signal: Arc<AttemptSignal>,
    /// The hard time limit's deadline, on the spool's clock.
    pub(crate) deadline_ms: Option<u64>,
    /// What the handler enqueued through [`Context::enqueue`]: stored with the attempt's
    /// success (see `spool::follow_ups`). Made on first use (an enqueue, or a clone, which
    /// shares it), so an attempt that uses neither allocates nothing; `None` inside once
    /// the attempt has ended.
    pub(crate) follow_ups: OnceLock<FollowUps>,
    /// A workflow step's inputs: its parents' outputs, in order.
    pub(crate) inputs: Option<Arc<Inputs>>,
}

/// An attempt's follow-ups, shared by its context's clones.
pub(crate) type FollowUps = Arc<Mutex<Option<Vec<NewTask>>>>;

impl Clone for Context {
    fn clone(&self) -> Self {
        Context {
            id: self.id,
            name: self.name.clone(),
            queue: self.queue.clone(),
            attempt: self.attempt,
            max_retries: self.max_retries,
            enqueued_at_ms: self.enqueued_at_ms,
            origin: self.origin.clone(),
            env: self.env.clone(),
            signal: self.signal.clone(),
            deadline_ms: self.deadline_ms,
            follow_ups: OnceLock::from(self.shared_follow_ups().clone()),
            inputs: self.inputs.clone(),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .field("max_retries", &self.max_retries)
            .field("origin", &self.origin)
            .field("data", &self.env.data.type_names())
            .field("cancelled", &self.is_cancelled())
            .field("deadline", &self.deadline())
            .finish()
    }
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

    /// The output of the step before this one, for a step of a chain
    /// ([`Spool::chain`](crate::Spool::chain)): what Celery passes to a `.s()` signature. A
    /// step that ignores its input (Celery's immutable `.si()`) simply does not read it.
    ///
    /// # Errors
    /// A permanent [`TaskError`] if the task has no input (it is not a step after another),
    /// has several (a chord's body: read them with [`inputs`](Self::inputs)), or if the
    /// input does not decode as `T`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        match self.inputs.as_deref() {
            Some(one) if one.count == 1 => {
                let [input]: [T; 1] = decode_input(self.id, &one.json)?;
                Ok(input)
            }
            Some(many) if many.count > 1 => Err(TaskError::fail(format!(
                "task {} has {} inputs (it is a chord's body): read them with ctx.inputs()",
                self.id, many.count
            ))),
            _ => Err(TaskError::fail(format!(
                "task {} has no input: it is not a workflow step after another",
                self.id
            ))),
        }
    }

    /// The outputs of every task this step waits for, in order: a chord's members'
    /// ([`Spool::chord`](crate::Spool::chord)), or the one step before it in a chain.
    ///
    /// # Errors
    /// A permanent [`TaskError`] if the task is not a workflow step after others, or if an
    /// input does not decode as `T`.
    pub fn inputs<T: DeserializeOwned>(&self) -> Result<Vec<T>, TaskError> {
        let Some(inputs) = self.inputs.as_deref() else {
            return Err(TaskError::fail(format!(
                "task {} has no inputs: it is not a workflow step after others",
                self.id
            )));
        };
        decode_input(self.id, &inputs.json)
    }

    /// The result of every task this step waits for, in order, for a step that runs however
    /// they ended ([`Workflow::after_settled`](crate::Workflow::after_settled),
    /// [`Spool::chord_settled`](crate::Spool::chord_settled)): each one's output, or the
    /// [`Failure`](crate::Failure) that ended it.
    ///
    /// # Errors
    /// A permanent [`TaskError`] if the task is not such a step, or if an output does not
    /// decode as `T`.
    pub fn results<T: DeserializeOwned>(
        &self,
    ) -> Result<Vec<Result<T, crate::Failure>>, TaskError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Settled<T> {
            Ok(T),
            Err(crate::Failure),
        }
        let Some(inputs) = self.inputs.as_deref() else {
            return Err(TaskError::fail(format!(
                "task {} has no results to read: it is not a step that waits for others",
                self.id
            )));
        };
        let settled: Vec<Settled<T>> = decode_input(self.id, &inputs.json).map_err(|_| {
            TaskError::fail(format!(
                "task {} reads results, but it does not run whatever its parents did (declare \
                 it with after_settled or chord_settled), or an output is not a {}",
                self.id,
                type_name::<T>()
            ))
        })?;
        Ok(settled
            .into_iter()
            .map(|s| match s {
                Settled::Ok(v) => Ok(v),
                Settled::Err(f) => Err(f),
            })
            .collect())
    }

    /// The value of type `T` this task's worker was given with
    /// [`WorkerBuilder::data`](crate::WorkerBuilder::data): a database pool, an HTTP client,
    /// configuration. Shared by every attempt of the pool, so it is read-only (use interior
    /// mutability, a `Mutex` or an atomic, for state that changes).
    ///
    /// # Errors
    /// A retryable [`TaskError`] naming `T` and the types the worker has, if it was not given
    /// a `T`: with `?`, the attempt fails and the task is retried after its backoff, so a
    /// worker started again with the data can still run it.
    pub fn data<T: Send + Sync + 'static>(&self) -> Result<&T, TaskError> {
        self.env.data.get::<T>().ok_or_else(|| {
            let have = self.env.data.type_names();
            TaskError::retry(format!(
                "task `{}` asked for app data of type `{}`, which its worker was not given \
                 (it has {}); give it with WorkerBuilder::data(value)",
                self.name,
                type_name::<T>(),
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })
    }

    /// Whether this attempt is asked to stop: the task was revoked
    /// ([`Spool::revoke`](crate::Spool::revoke)) or its soft time limit passed
    /// ([`Options::soft_time_limit`](crate::Options::soft_time_limit)). One atomic load; a
    /// long handler checks it between steps. After a revoke, whatever the handler returns,
    /// the task ends `Revoked`.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_stopped()
    }

    /// `Err` if this attempt is asked to stop, to end it with `?` between steps of a long
    /// handler: after a revoke the task ends `Revoked`; after the soft time limit the attempt
    /// fails as a time limit and is retried by the task's policy.
    ///
    /// # Errors
    /// A [`TaskError`] that says why the attempt stops.
    pub fn check(&self) -> Result<(), TaskError> {
        match self.signal.stop_reason() {
            None => Ok(()),
            Some(StopReason::Revoked) => Err(TaskError::stopped("the task was revoked")),
            Some(StopReason::SoftLimit) => Err(TaskError::stopped(
                "the soft time limit passed; the attempt stopped",
            )),
        }
    }

    /// Sleeps for `duration`, or until the attempt is asked to stop, whichever comes first —
    /// a wait that a revoke or the soft time limit cuts short, without a busy loop.
    ///
    /// # Errors
    /// As [`check`](Self::check), when a stop cut the sleep short.
    pub fn sleep(&self, duration: std::time::Duration) -> Result<(), TaskError> {
        self.signal.sleep(duration);
        self.check()
    }

    /// Resolves once this attempt is asked to stop, as [`is_cancelled`](Self::is_cancelled)
    /// turns true (feature `tokio`): for an [`AsyncTask`](crate::AsyncTask) to race its work
    /// against with `tokio::select!` and stop cleanly at the soft time limit. (A revoke does
    /// not need it: it drops the attempt's future.) The future holds no borrow of the
    /// context. A sync handler uses [`sleep`](Self::sleep) or [`check`](Self::check).
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use taskspool::{AsyncTask, Context, TaskError};
    /// # #[derive(Serialize, Deserialize)] struct Crawl;
    /// impl AsyncTask for Crawl {
    ///     const NAME: &'static str = "crawl";
    ///     type Output = u32;
    ///     async fn run(self, ctx: Context) -> Result<u32, TaskError> {
    ///         let mut pages = 0;
    ///         loop {
    ///             tokio::select! {
    ///                 _ = ctx.cancelled() => return Ok(pages), // keep what was done
    ///                 _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => pages += 1,
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    #[cfg(feature = "tokio")]
    pub fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let signal = self.signal.clone();
        std::future::poll_fn(move |cx| signal.poll_interrupt(cx, true, true).map(|_| ()))
    }

    /// When the hard time limit ends this attempt ([`Options::time_limit`](crate::Options::time_limit)),
    /// on the spool's clock; `None` without a hard limit.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline_ms.map(to_system_time)
    }

    /// Reports this attempt's progress: any value that serializes to JSON of at most
    /// [`MAX_PROGRESS_BYTES`] (64 KiB). It shows in [`Spool::status`](crate::Spool::status)
    /// at once (the latest report wins) and is kept with the task when the attempt ends; a
    /// report costs no sync of its own (it is stored with the next commit).
    ///
    /// # Errors
    /// `Json` if the value does not serialize; `InvalidOption` if it is over the limit.
    pub fn set_progress<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let json = serde_json::to_vec(value).map_err(|e| {
            Error::Json(format!(
                "cannot encode the progress of task `{}`: {e}",
                self.name
            ))
        })?;
        if json.len() > MAX_PROGRESS_BYTES {
            return Err(Error::InvalidOption(format!(
                "a progress report of {} bytes is over the limit of {MAX_PROGRESS_BYTES} bytes; \
                 report a summary (a fraction, a count, a short message)",
                json.len()
            )));
        }
        if !self.signal.is_abandoned() {
            self.env.reporter.progress(self.id, self.attempt, json);
        }
        Ok(())
    }

    /// A handle to the spool this task runs in, to enqueue tasks or read statuses. A task
    /// enqueued there is durable when its `enqueue` returns, before this attempt's outcome is
    /// recorded: if this attempt then fails and runs again, it enqueues the task again. For
    /// follow-ups that exist only with this attempt's success, use
    /// [`Context::enqueue`].
    ///
    /// The handle keeps the spool open while it lives, like any [`Spool`]; drop it when the
    /// handler returns (do not store it in a global).
    ///
    /// # Errors
    /// [`Error::Closed`] if every `Spool` and `Worker` of this spool was dropped while the task
    /// was still running (a shutdown that timed out).
    pub fn spool(&self) -> Result<Spool, Error> {
        self.env
            .spool
            .upgrade()
            .map(|shared| Spool { shared })
            .ok_or(Error::Closed)
    }

    /// Keeps validated follow-ups until the attempt ends.
    ///
    /// # Errors
    /// [`Error::AttemptEnded`] once it has.
    pub(crate) fn push_follow_ups(
        &self,
        tasks: impl IntoIterator<Item = NewTask>,
    ) -> Result<(), Error> {
        let mut buffer = self
            .shared_follow_ups()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let open = buffer.as_mut().ok_or(Error::AttemptEnded(self.id))?;
        open.extend(tasks);
        Ok(())
    }

    /// The follow-ups the handler enqueued, taken when the attempt ends (later ones are
    /// refused).
    pub(crate) fn take_follow_ups(&self) -> Vec<NewTask> {
        match self.follow_ups.get() {
            Some(shared) => shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The attempt's follow-ups, made on first use.
    fn shared_follow_ups(&self) -> &FollowUps {
        self.follow_ups
            .get_or_init(|| Arc::new(Mutex::new(Some(Vec::new()))))
    }
}
