//! The one public error type. Conversions from the storage engine's own errors live with the
//! engine (`store::errors`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::{AttemptError, TaskId, TaskState};

/// Everything that can go wrong when using a [`Spool`](crate::Spool).
///
/// Match on the variant, or on [`Error::kind`] when only the broad category matters
/// (for example to decide whether retrying the call can help). Errors are `Clone`: when a
/// group of requests fails together, every caller gets the same error, with its source.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process, or this one, has the queue file open.
    ///
    /// One process owns a queue file at a time (redb locks it). In this process the file is
    /// held by every `Spool` (and clone), `Worker` and `WorkerBuilder` of it until the last is
    /// dropped; task handles and task contexts do not hold it. Drop them, or point this open
    /// at another file.
    #[error(
        "queue file {path} is already open, by another process or in this one by a Spool (or a \
         clone), a Worker or a WorkerBuilder of it that is not dropped yet; drop them, or use \
         another file"
    )]
    AlreadyOpen {
        /// The file that is locked.
        path: PathBuf,
    },

    /// The path cannot name a queue file: it is a directory, or its directory does not exist.
    /// Nothing was created.
    #[error("{path} cannot be a queue file: {problem}")]
    BadPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        problem: String,
    },

    /// The file is damaged: redb could not read it. It was not modified.
    #[error(
        "queue file {path} is corrupt ({detail}); it was left untouched — restore a backup or move it aside"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What redb or the decoder reported.
        detail: String,
    },

    /// The file is a valid redb database, or some other file, but not a taskspool queue.
    #[error(
        "{path} is not a taskspool queue file ({detail}); it was left untouched — pass a new or taskspool-created path"
    )]
    NotAQueue {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        detail: String,
    },

    /// The file was written by a newer taskspool whose format this version cannot read.
    #[error(
        "queue file {path} has format version {found}, this taskspool reads up to {supported}; upgrade taskspool — the file was left untouched"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The format version stored in the file.
        found: u64,
        /// The newest format this build understands.
        supported: u64,
    },

    /// The disk is full. The operation was not applied; nothing acknowledged before was lost.
    #[error(
        "the disk holding the queue file is full; the operation was not applied — {advice}",
        advice = room_advice(*.needed)
    )]
    DiskFull {
        /// How many bytes must be free for the operation to succeed, when that is known (an
        /// open, which applies the write-ahead log to the queue file again).
        needed: Option<u64>,
    },

    /// Any other storage failure (I/O error, redb error). The operation was not applied.
    #[error("storage error: {message}")]
    Storage {
        /// What failed, and what to do about it.
        message: String,
        /// The underlying error, when there is one (an I/O or redb error).
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },

    /// An option passed to `enqueue_with`, a builder or a declaration is invalid.
    /// Nothing was written.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A periodic schedule declaration is invalid (cron expression, time zone, interval).
    /// Nothing was written.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(String),

    /// No periodic schedule has this name.
    #[error("no schedule named {0:?}")]
    ScheduleNotFound(String),

    /// No process serves the queue file's control socket ([`Client::connect`](crate::Client::connect)):
    /// the queue is not open anywhere (read a closed file with
    /// [`Spool::inspect`](crate::Spool::inspect)), or its owner turned the socket off.
    #[error(
        "no process owns {path} (its control socket {socket} is missing or refuses): the queue \
         is not running; start its application, or read the file with Spool::inspect"
    )]
    NotRunning {
        /// The queue file.
        path: PathBuf,
        /// The socket that was tried.
        socket: PathBuf,
    },

    /// The other side of a control socket broke the protocol: another protocol version, a
    /// malformed or oversized frame, a reply that does not fit. The connection is closed.
    #[error("control socket protocol: {0}")]
    Protocol(String),

    /// The owning process answered a [`Client`](crate::Client) call with this error.
    #[error("the queue's owner answered: {message}")]
    Remote {
        /// The category of the owner's error.
        kind: ErrorKind,
        /// The owner's error message.
        message: String,
    },

    /// No task with this id exists: it was never enqueued here, or its result was pruned
    /// after the results TTL.
    #[error("task {0} not found (never enqueued in this file, or pruned after its results TTL)")]
    NotFound(TaskId),

    /// A typed task handle was asked for a task of another name: it was built with
    /// [`Spool::handle`](crate::Spool::handle) for the wrong task type. Nothing was decoded.
    #[error(
        "task {id} is a `{stored}` task, not a `{requested}` one; build its handle with the \
         task type that enqueued it (Spool::handle::<T>, where T::NAME is \"{stored}\")"
    )]
    WrongTask {
        /// The task.
        id: TaskId,
        /// The name the handle's type has.
        requested: String,
        /// The name stored with the task.
        stored: String,
    },

    /// The task is not in a state the request applies to (for example `retry` of a task
    /// that is still running, or `forget` of one that has not finished). Nothing changed.
    #[error("task {id} is {state}; {applies}")]
    WrongState {
        /// The task.
        id: TaskId,
        /// The state it is in.
        state: TaskState,
        /// Which tasks the request applies to, in words.
        applies: &'static str,
    },

    /// [`Context::enqueue`](crate::Context::enqueue) on a context whose attempt has ended
    /// (a clone kept past the handler's return): a follow-up goes with the success of the
    /// attempt it belongs to. Nothing was enqueued.
    #[error(
        "the attempt of task {0} has ended, so a follow-up can no longer go with its success; \
         enqueue it through ctx.spool() instead"
    )]
    AttemptEnded(TaskId),

    /// `wait` gave up before the task reached a final state. The task is unaffected.
    #[error("task {0} did not finish within the wait timeout")]
    Timeout(TaskId),

    /// The task ended `Failed`; the value holds its error history.
    #[error("task {} failed after {} attempt(s): {}", .0.id, .0.attempts, .0.message)]
    TaskFailed(Box<Failure>),

    /// The task ended `Expired`: it was not started before its expiry time.
    #[error("task {0} expired before it started")]
    TaskExpired(TaskId),

    /// The task ended `Revoked` ([`Spool::revoke`](crate::Spool::revoke)).
    #[error("task {0} was revoked")]
    TaskRevoked(TaskId),

    /// Arguments or a result could not be converted to or from JSON.
    #[error("JSON conversion failed: {0}")]
    Json(String),

    /// The spool or worker was shut down, so the request could not be served.
    #[error("the spool's writer has stopped; the request was not applied")]
    Closed,

    /// A graceful shutdown reached its deadline with tasks still running. They keep their
    /// threads and report when they finish; calling `shutdown` again waits for them again.
    #[error(
        "shutdown deadline passed with {running} task(s) still running (ids {ids}); they report \
         when they finish — call shutdown again to wait for them",
        ids = id_list(.tasks)
    )]
    ShutdownTimeout {
        /// How many attempts were still running.
        running: usize,
        /// Which tasks, by id.
        tasks: Vec<TaskId>,
    },

    /// A PostgreSQL schema was migrated by a newer taskspool than this one (feature
    /// `postgres`): this version cannot use it, and changed nothing.
    #[cfg(feature = "postgres")]
    #[error(
        "PostgreSQL schema {schema} is at migration {found}; this taskspool knows migrations up to {supported}: upgrade taskspool — nothing was changed"
    )]
    NewerSchema {
        /// The schema.
        schema: String,
        /// Its migration.
        found: u64,
        /// The newest migration this build knows.
        supported: u64,
    },

    /// The storage engine the spool runs on does not offer this feature (yet): the README's
    /// table of backends lists what each engine lacks. Nothing was changed.
    #[error(
        "{feature} is not available on the {engine} engine yet: nothing was changed (the README's table of backends lists what each engine offers)"
    )]
    Unsupported {
        /// What was asked for.
        feature: String,
        /// The engine: `"PostgreSQL"`.
        engine: &'static str,
    },

    /// A blocking call was made on the thread of a current-thread tokio runtime that the
    /// work it would wait for needs (feature `tokio`): waiting there could never end. The
    /// message names the call and its awaited form.
    #[error("{0}")]
    WouldDeadlock(String),
}

/// The broad category of an [`Error`], for callers that branch on what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file is locked by another owner.
    AlreadyOpen,
    /// The file cannot be used as a queue: corrupt, foreign, or of a newer format.
    BadFile,
    /// The disk or the storage engine failed; retrying later may succeed.
    Storage,
    /// The caller passed something invalid; fix the call.
    InvalidInput,
    /// The task does not exist.
    NotFound,
    /// A wait or shutdown deadline passed.
    Timeout,
    /// The task reached a final state other than success.
    TaskUnsuccessful,
    /// The spool or worker is shut down.
    Closed,
    /// No process owns the queue ([`Error::NotRunning`]).
    NotRunning,
    /// A control socket's peer broke the protocol ([`Error::Protocol`]).
    Protocol,
    /// The spool's storage engine does not offer the feature ([`Error::Unsupported`]).
    Unsupported,
}

impl Error {
    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::AlreadyOpen { .. } => ErrorKind::AlreadyOpen,
            Error::Corrupt { .. } | Error::NotAQueue { .. } | Error::NewerFormat { .. } => {
                ErrorKind::BadFile
            }
            #[cfg(feature = "postgres")]
            Error::NewerSchema { .. } => ErrorKind::BadFile,
            Error::DiskFull { .. } | Error::Storage { .. } => ErrorKind::Storage,
            Error::InvalidOption(_)
            | Error::InvalidSchedule(_)
            | Error::Json(_)
            | Error::WrongTask { .. }
            | Error::WrongState { .. }
            | Error::AttemptEnded(_)
            | Error::WouldDeadlock(_)
            | Error::BadPath { .. } => ErrorKind::InvalidInput,
            Error::NotFound(_) | Error::ScheduleNotFound(_) => ErrorKind::NotFound,
            Error::Timeout(_) | Error::ShutdownTimeout { .. } => ErrorKind::Timeout,
            Error::TaskFailed(_) | Error::TaskExpired(_) | Error::TaskRevoked(_) => {
                ErrorKind::TaskUnsuccessful
            }
            Error::Closed => ErrorKind::Closed,
            Error::NotRunning { .. } => ErrorKind::NotRunning,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Remote { kind, .. } => *kind,
        }
    }

    /// A storage failure without an underlying error.
    pub(crate) fn storage(message: impl Into<String>) -> Error {
        Error::Storage {
            message: message.into(),
            source: None,
        }
    }

    /// A storage failure caused by `source`; the message is `{context}: {source}`.
    pub(crate) fn storage_from(
        context: &str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Storage {
            message: format!("{context}: {source}"),
            source: Some(Arc::new(source)),
        }
    }

    /// An I/O failure of `context` (a file of the queue): `DiskFull` for a full disk, else
    /// `Storage` with the I/O error as its source.
    pub(crate) fn io(context: &str, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::StorageFull {
            Error::DiskFull { needed: None }
        } else {
            Error::storage_from(context, e)
        }
    }
}

/// Task ids as `1, 2, 3`.
fn id_list(ids: &[TaskId]) -> String {
    ids.iter()
        .map(TaskId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What to free, for [`Error::DiskFull`].
fn room_advice(needed: Option<u64>) -> String {
    match needed {
        Some(bytes) => format!(
            "free at least {} MiB and retry",
            bytes.div_ceil(1 << 20).max(1)
        ),
        None => "free space and retry".to_string(),
    }
}

/// The final failure of a task: its last message and the error of every attempt.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Failure {
    /// The task.
    pub id: TaskId,
    /// The task's registered name.
    pub name: String,
    /// How many attempts ran (including attempts lost to a crash).
    pub attempts: u32,
    /// The last attempt's error message.
    pub message: String,
    /// One entry per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
}

impl Failure {
    /// How task `id` ended in `state` (not succeeded), as `wait` and a later step report it:
    /// its last error's message, or the state itself when it has none.
    pub(crate) fn ended(
        (id, name, attempts): (TaskId, String, u32),
        state: TaskState,
        errors: Vec<AttemptError>,
    ) -> Failure {
        let message = errors
            .last()
            .map(|e| e.message.clone())
            .unwrap_or_else(|| format!("it ended {state}"));
        Failure {
            id,
            name,
            attempts,
            message,
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// A clone is the same error: the same kind, the same message, the same source (which
    /// is shared, not flattened into text).
    #[test]
    fn a_cloned_error_keeps_its_kind_message_and_source() {
        let e = Error::io(
            "write-ahead log",
            std::io::Error::other("the device went away"),
        );
        let c = e.clone();
        assert_eq!(c.kind(), ErrorKind::Storage);
        assert_eq!(c.to_string(), e.to_string());
        assert_eq!(
            c.to_string(),
            "storage error: write-ahead log: the device went away"
        );
        let source = c.source().expect("the I/O error is the source");
        assert_eq!(source.to_string(), "the device went away");
        let full = Error::io("write-ahead log", std::io::ErrorKind::StorageFull.into());
        assert!(matches!(full.clone(), Error::DiskFull { needed: None }));
    }
}
