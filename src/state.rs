//! Task states and the error history kept for every attempt.

use serde::{Deserialize, Serialize};

/// Where a task is in its life. Each state says who moves a task out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Final: revoked before it ran.
    Revoked,
    /// Final: its expiry time passed before it started.
    Expired,
}

impl TaskState {
    /// Whether no further transition can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Revoked | TaskState::Expired
        )
    }

    /// All states, in lifecycle order (for stats and the CLI).
    pub const ALL: [TaskState; 8] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Revoked,
        TaskState::Expired,
    ];

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
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<TaskState> {
        TaskState::ALL.get(usize::from(code)).copied()
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Revoked => "revoked",
            TaskState::Expired => "expired",
        };
        f.write_str(s)
    }
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One failed attempt in a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What kind of failure it was.
    pub kind: AttemptErrorKind,
    /// The message (error text, panic message, decode error).
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(TaskState::from_code(s.code()), Some(s));
        }
        assert_eq!(TaskState::from_code(200), None);
        assert!(TaskState::Failed.is_final());
        assert!(!TaskState::Retrying.is_final());
    }
}
