//! The model: the plain types every layer shares. Task ids and pool ids, task states, the
//! error history of attempts, the periodic fire a task came from, what an attempt's handler
//! returned, and the limits of the options.
//!
//! It imports nothing of the crate, so no import circle can form through it: the public
//! face, the pools and the storage engine all build on it.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The queue tasks go to when no queue is named.
pub const DEFAULT_QUEUE: &str = "default";

/// The highest priority. Priorities run from 0 to 9; higher runs first.
pub const MAX_PRIORITY: u8 = 9;

/// Retries after the first attempt when nothing else is set (Celery's default).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// The longest delay the library accepts or applies: 100 years (36,500 days). A countdown,
/// an ETA or expiry further ahead, a retry policy's base or cap, or an interval schedule's
/// interval beyond it is refused with `InvalidOption`/`InvalidSchedule`; a handler's
/// `TaskError::retry_after` beyond it waits this long. (Every time the library stores then
/// stays a date that prints in RFC 3339.)
pub const MAX_DELAY: Duration = Duration::from_secs(36_500 * 24 * 60 * 60);

/// `ids` as runs of consecutive ids (first, how many), in order: how a workflow step stores
/// its parents and a group handle its members.
pub(crate) fn id_runs(ids: impl IntoIterator<Item = u64>) -> Vec<(u64, u32)> {
    let mut out: Vec<(u64, u32)> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some((first, n)) if *first + u64::from(*n) == id && *n < u32::MAX => *n += 1,
            _ => out.push((id, 1)),
        }
    }
    out
}

/// Longest accepted queue name, in bytes.
pub(crate) const MAX_QUEUE_NAME: usize = 200;

/// The id of an enqueued task: unique within its queue file, increasing in enqueue order.
/// Serialized as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub(crate) u64);

impl TaskId {
    /// The numeric id, as displayed and serialized.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds an id from its number (for example one read from a log or a status printed
    /// as JSON).
    pub fn from_u64(id: u64) -> Self {
        TaskId(id)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id of a running worker pool, unique within the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PoolId(pub(crate) u64);

/// Where a task is in its life. Each state says who moves a task out of it.
///
/// Serialized as its lowercase name (`"ready"`, `"succeeded"`, …), as displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskState {
    /// Due in the future (countdown or ETA). The writer moves it to `Ready` when its due
    /// time passes, or to `Expired` if its expiry passes first.
    Scheduled,
    /// Due now and waiting for a worker slot. The writer moves it to `Running` when a worker
    /// that serves its queue and knows its name has a free slot.
    Ready,
    /// An attempt is executing (or was, when the process died). The attempt's outcome moves it
    /// to `Succeeded`, `Retrying` or `Failed`; opening the file after a crash moves an orphan back
    /// to `Ready` (or to `Failed` when its attempts are used up).
    Running,
    /// The last attempt failed with a retryable error; the task is due again after its backoff.
    /// The writer moves it to `Ready` at that time.
    Retrying,
    /// Final: the handler returned a value, stored as the result.
    Succeeded,
    /// Final: the handler failed permanently, or every allowed attempt failed.
    Failed,
    /// Final: revoked ([`Spool::revoke`](crate::Spool::revoke)) before it ran, or while an
    /// attempt ran (which then ended).
    Revoked,
    /// Final: its expiry time passed before it started.
    Expired,
    /// A workflow step waiting for its parents (the steps before it): the writer moves it to
    /// `Ready` in the transaction that stores its last parent's success, or ends it `Failed`
    /// when a parent does not succeed.
    Waiting,
}

impl TaskState {
    /// Whether no further transition can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Revoked | TaskState::Expired
        )
    }

    /// All states, in the order of their codes (for stats and tools).
    pub const ALL: [TaskState; 9] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Revoked,
        TaskState::Expired,
        TaskState::Waiting,
    ];

    /// The state's code as stored in queue files. Codes are part of the file format: a code
    /// is never reused or changed, and a new state takes the next free one.
    pub(crate) fn code(self) -> u8 {
        match self {
            TaskState::Scheduled => 0,
            TaskState::Ready => 1,
            TaskState::Running => 2,
            TaskState::Retrying => 3,
            TaskState::Succeeded => 4,
            TaskState::Failed => 5,
            TaskState::Revoked => 6,
            TaskState::Expired => 7,
            TaskState::Waiting => 8,
        }
    }

    /// The state stored under `code`, if this build knows it.
    pub(crate) fn from_code(code: u8) -> Option<TaskState> {
        Some(match code {
            0 => TaskState::Scheduled,
            1 => TaskState::Ready,
            2 => TaskState::Running,
            3 => TaskState::Retrying,
            4 => TaskState::Succeeded,
            5 => TaskState::Failed,
            6 => TaskState::Revoked,
            7 => TaskState::Expired,
            8 => TaskState::Waiting,
            _ => return None,
        })
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Revoked => "revoked",
            TaskState::Expired => "expired",
            TaskState::Waiting => "waiting",
        };
        f.write_str(s)
    }
}

/// Why an attempt did not succeed. Serialized as its snake_case name (`"worker_lost"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptErrorKind {
    /// The handler returned a retryable error.
    Error,
    /// The handler returned a permanent failure.
    Fatal,
    /// The handler panicked.
    Panic,
    /// The stored arguments no longer decode into the task's type.
    Decode,
    /// The process died while the attempt was running.
    WorkerLost,
    /// The task's expiry passed before it started.
    Expired,
    /// The task was revoked (before it ran, or while an attempt ran).
    Revoked,
    /// The attempt ran past its time limit: the hard limit, or it failed after its soft
    /// limit asked it to stop.
    TimeLimit,
    /// The handler snoozed the task (`TaskError::snooze`): it runs again later without
    /// using up a retry. Not a failure; recorded so the history shows every run.
    Snoozed,
    /// A workflow step's parent did not succeed, so the step never ran.
    Upstream,
}

impl AttemptErrorKind {
    /// The kind's code as stored in queue files (never reused or changed, like
    /// [`TaskState::code`]).
    pub(crate) fn code(self) -> u8 {
        match self {
            AttemptErrorKind::Error => 0,
            AttemptErrorKind::Fatal => 1,
            AttemptErrorKind::Panic => 2,
            AttemptErrorKind::Decode => 3,
            AttemptErrorKind::WorkerLost => 4,
            AttemptErrorKind::Expired => 5,
            AttemptErrorKind::Revoked => 6,
            AttemptErrorKind::TimeLimit => 7,
            AttemptErrorKind::Snoozed => 8,
            AttemptErrorKind::Upstream => 9,
        }
    }

    /// The kind stored under `code`, if this build knows it.
    pub(crate) fn from_code(code: u8) -> Option<AttemptErrorKind> {
        Some(match code {
            0 => AttemptErrorKind::Error,
            1 => AttemptErrorKind::Fatal,
            2 => AttemptErrorKind::Panic,
            3 => AttemptErrorKind::Decode,
            4 => AttemptErrorKind::WorkerLost,
            5 => AttemptErrorKind::Expired,
            6 => AttemptErrorKind::Revoked,
            7 => AttemptErrorKind::TimeLimit,
            8 => AttemptErrorKind::Snoozed,
            9 => AttemptErrorKind::Upstream,
            _ => return None,
        })
    }
}

/// One failed attempt in a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptError {
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// When it ended (to the millisecond). Serialized as an RFC 3339 string.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// What kind of failure it was.
    pub kind: AttemptErrorKind,
    /// The message (error text, panic message, decode error).
    pub message: String,
}

/// The (schedule, fire time) a periodic task was enqueued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Origin {
    pub schedule: String,
    pub fire_at_ms: u64,
}

/// What a handler asks for when an attempt does not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Retry after the task's backoff.
    Retry,
    /// Retry after this delay.
    RetryAfter(Duration),
    /// Do not retry.
    Fail,
    /// Run again after this delay without using up a retry.
    Snooze(Duration),
    /// The attempt stopped because it was asked to (`Context::check`): a revoke, or its soft
    /// time limit.
    Stopped,
}

impl Disposition {
    /// How long until the retry a failure asks for, in ms: `None` to fail for good; the
    /// task's backoff (`backoff_ms`) for a plain retry, or the delay it names, at most
    /// [`MAX_DELAY`].
    pub(crate) fn retry_delay_ms(self, backoff_ms: impl FnOnce() -> u64) -> Option<u64> {
        match self {
            Disposition::Fail => None,
            Disposition::Retry | Disposition::Stopped | Disposition::Snooze(_) => {
                Some(backoff_ms())
            }
            Disposition::RetryAfter(d) => {
                Some(u64::try_from(d.min(MAX_DELAY).as_millis()).unwrap_or(u64::MAX))
            }
        }
    }
}

/// What a handler's `TaskError::snooze(delay)` with `message` comes to, on either engine:
/// `Ok` with the history entry of a snooze, or `Err` with the error of an attempt that
/// failed instead (a zero delay, or one over [`MAX_DELAY`]), to be retried by its policy.
pub(crate) fn snooze_entry(delay: Duration, message: &str) -> Result<String, String> {
    if delay.is_zero() || delay > MAX_DELAY {
        return Err(format!(
            "TaskError::snooze({delay:?}) is not a delay a task can snooze for (it must be \
             more than zero and at most MAX_DELAY, 100 years); the attempt failed instead: \
             {message}"
        ));
    }
    let secs = delay.as_secs_f64();
    Ok(if message.is_empty() {
        format!("snoozed for {secs}s")
    } else {
        format!("snoozed for {secs}s: {message}")
    })
}

/// What [`Spool::revoke_where`](crate::Spool::revoke_where) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Revoked {
    /// Waiting tasks that are `Revoked` now.
    pub revoked: u64,
    /// Running tasks asked to stop, which end `Revoked` when their attempt does.
    pub cancelling: u64,
}

/// What [`Spool::revoke`](crate::Spool::revoke) did to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Revoke {
    /// It was waiting (scheduled, ready or retrying): it is `Revoked` now, durably, and never
    /// runs.
    Revoked,
    /// An attempt is running: its handler is asked to stop (`Context::is_cancelled`), and
    /// when the attempt returns, whatever it returns, the task ends `Revoked`. The request is
    /// durable: if the process dies first, the next open ends the task `Revoked`.
    Cancelling,
    /// It had already ended in this state; nothing changed.
    AlreadyFinal(TaskState),
}

/// What running one attempt's handler gave, before the engine decides what it means for the
/// task (success, a retry after backoff, or the end).
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The handler returned; the JSON-encoded output.
    Succeeded(Vec<u8>),
    /// The handler returned an error.
    Failed {
        disposition: Disposition,
        message: String,
    },
    /// The handler panicked; the panic message.
    Panicked(String),
    /// The stored arguments did not decode; the decode error.
    Undecodable(String),
    /// The hard time limit ended the attempt (reported by the timekeeper, not the handler).
    TimedOut(String),
}

impl Outcome {
    /// A failed attempt's error kind, message and what it asks for; `None` for a success.
    /// An attempt that failed past its soft time limit failed of the time limit.
    pub(crate) fn failure(
        &self,
        past_soft_limit: bool,
    ) -> Option<(AttemptErrorKind, &str, Disposition)> {
        Some(match self {
            Outcome::Succeeded(_) => return None,
            Outcome::Failed {
                disposition,
                message,
            } => {
                let kind = match disposition {
                    _ if past_soft_limit => AttemptErrorKind::TimeLimit,
                    Disposition::Fail => AttemptErrorKind::Fatal,
                    Disposition::Stopped => AttemptErrorKind::TimeLimit,
                    _ => AttemptErrorKind::Error,
                };
                (kind, message.as_str(), *disposition)
            }
            Outcome::Panicked(m) => (AttemptErrorKind::Panic, m.as_str(), Disposition::Retry),
            Outcome::Undecodable(m) => (AttemptErrorKind::Decode, m.as_str(), Disposition::Fail),
            Outcome::TimedOut(m) => (AttemptErrorKind::TimeLimit, m.as_str(), Disposition::Retry),
        })
    }

    /// What the attempt returned, in a few words (for a history entry).
    pub(crate) fn describe(&self) -> String {
        match self {
            Outcome::Succeeded(_) => "a success".into(),
            Outcome::Failed { message, .. } => format!("an error: {message}"),
            Outcome::Panicked(message) => format!("a panic: {message}"),
            Outcome::Undecodable(message) => format!("a decode error: {message}"),
            Outcome::TimedOut(message) => format!("a time limit: {message}"),
        }
    }
}

/// `SystemTime` as an RFC 3339 string in UTC (`"2026-01-01T06:00:00.250Z"`), for the views
/// tools print: `#[serde(with = "rfc3339")]`, or `rfc3339::option` for an `Option`.
pub(crate) mod rfc3339 {
    use std::time::{SystemTime, UNIX_EPOCH};

    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de, ser};

    fn utc(t: SystemTime) -> Option<DateTime<Utc>> {
        let since = t.duration_since(UNIX_EPOCH).ok()?;
        DateTime::from_timestamp(i64::try_from(since.as_secs()).ok()?, since.subsec_nanos())
    }

    /// Serializes `t`; a time chrono cannot represent (past the year 262143) is an error.
    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        utc(*t)
            .ok_or_else(|| ser::Error::custom("a time outside the range of RFC 3339 dates"))?
            .serialize(s)
    }

    /// Parses an RFC 3339 string (any offset); a time before the Unix epoch is an error.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let t = DateTime::<Utc>::deserialize(d)?;
        if t.timestamp() < 0 {
            return Err(de::Error::custom("a time before 1970-01-01T00:00:00Z"));
        }
        Ok(SystemTime::from(t))
    }

    /// The same for `Option<SystemTime>` (`null` for `None`).
    pub(crate) mod option {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes `Some(t)` as [`super::serialize`] does, `None` as `null`.
        pub(crate) fn serialize<S: Serializer>(
            t: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        /// Parses `null` or an RFC 3339 string.
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] SystemTime);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_those_of_the_file_format() {
        for (code, s) in TaskState::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(s.code()), code, "{s}");
            assert_eq!(TaskState::from_code(s.code()), Some(s));
        }
        assert_eq!(TaskState::from_code(9), None);
        assert_eq!(TaskState::from_code(200), None);
        let kinds = [
            AttemptErrorKind::Error,
            AttemptErrorKind::Fatal,
            AttemptErrorKind::Panic,
            AttemptErrorKind::Decode,
            AttemptErrorKind::WorkerLost,
            AttemptErrorKind::Expired,
            AttemptErrorKind::Revoked,
            AttemptErrorKind::TimeLimit,
            AttemptErrorKind::Snoozed,
            AttemptErrorKind::Upstream,
        ];
        for (code, k) in kinds.into_iter().enumerate() {
            assert_eq!(usize::from(k.code()), code, "{k:?}");
            assert_eq!(AttemptErrorKind::from_code(k.code()), Some(k));
        }
        assert_eq!(AttemptErrorKind::from_code(10), None);
        assert!(TaskState::Failed.is_final());
        assert!(!TaskState::Retrying.is_final());
    }
}
