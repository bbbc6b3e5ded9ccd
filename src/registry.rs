//! The task types a pool can run: stored task names mapped back to type-erased handlers that
//! decode the JSON arguments, run the task and encode its output.

use std::any::type_name;
use std::collections::HashMap;
#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Error;
use crate::model::Outcome;
use crate::task::Task;
#[cfg(feature = "tokio")]
use crate::task_async::AsyncTask;
use crate::task_error::TaskError;

/// A type-erased handler: decode the JSON arguments, run, encode the output.
#[derive(Clone)]
pub(crate) enum Handler {
    /// A [`Task`]: runs on the calling thread.
    Sync(Arc<RunFn>),
    /// An [`AsyncTask`]: decodes on the calling thread and returns the attempt's future.
    #[cfg(feature = "tokio")]
    Async(Arc<StartFn>),
}

/// A sync task's attempt.
pub(crate) type RunFn = dyn Fn(&[u8], &Context) -> Outcome + Send + Sync;

/// An async task's attempt, as its future.
#[cfg(feature = "tokio")]
pub(crate) type StartFn = dyn Fn(&[u8], Context) -> AttemptFuture + Send + Sync;

/// One attempt of an async task, ending in its outcome.
#[cfg(feature = "tokio")]
pub(crate) type AttemptFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Task names a worker can run, mapped to their Rust types and handlers.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    handlers: HashMap<&'static str, (&'static str, Handler)>,
    /// The first name registered with two types, reported when the pool starts.
    conflict: Option<String>,
}

impl Registry {
    /// Adds `T`. Registering a type again changes nothing; registering another type under a
    /// name already taken is remembered and refused by [`check`](Self::check).
    pub(crate) fn register<T: Task>(&mut self) {
        if T::ASYNC {
            self.refuse(format!(
                "`{}` (task `{}`) is an AsyncTask: register it with register_async::<T>() on a \
                 pool given a runtime",
                type_name::<T>(),
                T::NAME
            ));
            return;
        }
        self.insert(T::NAME, type_name::<T>(), Handler::Sync(Arc::new(run::<T>)));
    }

    /// Adds the async task `T` (see [`register`](Self::register)).
    #[cfg(feature = "tokio")]
    pub(crate) fn register_async<T: AsyncTask>(&mut self) {
        let handler = Handler::Async(Arc::new(start::<T>));
        self.insert(<T as AsyncTask>::NAME, type_name::<T>(), handler);
    }

    fn insert(&mut self, name: &'static str, ty: &'static str, handler: Handler) {
        if let Some((other, _)) = self.handlers.get(name) {
            if *other != ty {
                self.refuse(format!(
                    "task name `{name}` is registered twice in one worker, with types `{other}` \
                     and `{ty}`: a name must mean one type — give one of them another `NAME`"
                ));
            }
            return;
        }
        self.handlers.insert(name, (ty, handler));
    }

    /// Remembers the first registration to refuse at [`check`](Self::check).
    fn refuse(&mut self, problem: String) {
        if self.conflict.is_none() {
            self.conflict = Some(problem);
        }
    }

    /// Whether an async task is registered.
    #[cfg(feature = "tokio")]
    pub(crate) fn has_async(&self) -> bool {
        self.handlers
            .values()
            .any(|(_, h)| matches!(h, Handler::Async(_)))
    }

    /// # Errors
    /// `InvalidOption` if no type was registered, or a name was registered with two types.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(conflict) = &self.conflict {
            return Err(Error::InvalidOption(conflict.clone()));
        }
        if self.handlers.is_empty() {
            return Err(Error::InvalidOption(
                "a worker needs at least one task type: call register::<T>()".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name).map(|(_, handler)| handler)
    }

    /// Every registered (task name, Rust type name).
    pub(crate) fn types(&self) -> Vec<(&'static str, &'static str)> {
        self.handlers
            .iter()
            .map(|(name, (ty, _))| (*name, *ty))
            .collect()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.handlers.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }
}

/// One attempt of `T`: decode, run, encode.
fn run<T: Task>(payload: &[u8], ctx: &Context) -> Outcome {
    match decode_task::<T>(payload) {
        Ok(task) => outcome::<T>(task.run(ctx)),
        Err(undecodable) => undecodable,
    }
}

/// One attempt of the async task `T`: decode now, then run and encode in the future.
#[cfg(feature = "tokio")]
fn start<T: AsyncTask>(payload: &[u8], ctx: Context) -> AttemptFuture {
    match decode_task::<T>(payload) {
        Ok(task) => Box::pin(async move { outcome::<T>(AsyncTask::run(task, ctx).await) }),
        Err(undecodable) => Box::pin(std::future::ready(undecodable)),
    }
}

/// The task's arguments, or the outcome of arguments that do not decode.
fn decode_task<T: Task>(payload: &[u8]) -> Result<T, Outcome> {
    decode_json(payload).map_err(|e| {
        Outcome::Undecodable(format!(
            "cannot decode the arguments of task `{}`: {e}",
            T::NAME
        ))
    })
}

/// The outcome of what a handler returned.
fn outcome<T: Task>(returned: Result<T::Output, TaskError>) -> Outcome {
    match returned {
        Ok(output) => match encode_output::<T>(&output) {
            Ok(bytes) => Outcome::Succeeded(bytes),
            Err(message) => TaskError::fail(message).into_outcome(),
        },
        Err(e) => e.into_outcome(),
    }
}

/// The output as the JSON stored with the task, checked to read back as `T::Output`: JSON
/// cannot hold everything a `Serialize` impl may write (serde_json writes a NaN or an
/// infinite float as `null`), and a result that does not read back would make every later
/// `wait` fail.
fn encode_output<T: Task>(output: &T::Output) -> Result<Vec<u8>, String> {
    let bytes = serde_json::to_vec(output).map_err(|e| {
        format!(
            "cannot encode the output of task `{}` as JSON: {e}",
            T::NAME
        )
    })?;
    match decode_json::<T::Output>(&bytes) {
        Ok(_) => Ok(bytes),
        Err(e) => Err(format!(
            "the output of task `{}` does not read back from JSON as `{}` ({e}); it was \
             encoded as {}. JSON has no NaN or infinity (serde_json writes them as null): \
             return a type that round-trips, for example an Option<f64>",
            T::NAME,
            type_name::<T::Output>(),
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)]),
        )),
    }
}

/// Decodes JSON, naming the field that failed.
/// A task's arguments as the JSON stored with it.
///
/// serde_json writes a NaN or an infinite float as `null`, which then does not decode as the
/// float: when the JSON holds a `null`, it is decoded again here, so such arguments are
/// refused at enqueue instead of failing the task when it runs. (Without a `null` nothing was
/// lost that way, and the check is skipped: it would cost an enqueue a second decode.)
pub(crate) fn encode_arguments<T: Task>(task: &T) -> Result<Vec<u8>, Error> {
    let bytes = serde_json::to_vec(task)
        .map_err(|e| Error::Json(format!("cannot encode the arguments of `{}`: {e}", T::NAME)))?;
    if bytes.windows(4).any(|w| w == b"null")
        && let Err(e) = decode_json::<T>(&bytes)
    {
        return Err(Error::Json(format!(
            "the arguments of `{}` do not read back from JSON ({e}); JSON has no NaN or \
             infinity (serde_json writes them as null): use a type that round-trips, for \
             example an Option<f64>",
            T::NAME
        )));
    }
    Ok(bytes)
}

pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{} (at field `{path}`)", e.inner())
        }
    })
}
