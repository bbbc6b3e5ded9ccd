//! The error a task handler returns: [`TaskError`], a message and what should happen next.

use std::fmt;
use std::time::Duration;

use crate::model::{Disposition, Outcome};

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
    /// `self.retry(countdown=…)`). It still counts toward `max_retries`. A delay over
    /// [`MAX_DELAY`](crate::MAX_DELAY) waits `MAX_DELAY`.
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

    /// Runs the task again after `delay` without using up a retry (River's `JobSnooze`,
    /// Oban's `{:snooze, seconds}`): for work that is not ready yet — an upstream still
    /// processing, a rate limit to wait out. The history records the snooze, and the task's
    /// allowed attempts grow by one, so it can snooze as often as it needs. A zero delay, or
    /// one over [`MAX_DELAY`](crate::MAX_DELAY), fails the attempt instead (with a message
    /// that says so).
    pub fn snooze(delay: Duration, message: impl Into<String>) -> Self {
        TaskError {
            disposition: Disposition::Snooze(delay),
            message: message.into(),
        }
    }

    /// The attempt stopped because it was asked to (see `Context::check`).
    pub(crate) fn stopped(message: impl Into<String>) -> Self {
        TaskError {
            disposition: Disposition::Stopped,
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
