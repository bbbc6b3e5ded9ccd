//! The hot per-task record stored in the `tasks` table.

use serde::{Deserialize, Serialize};

use crate::retry::RetryPolicy;
use crate::state::{AttemptError, TaskState};

/// Which index currently holds the task (so a transition can remove the old entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// In no index: running or final.
    None,
    /// `ready[(queue, name, 9 - priority, seq)]`.
    Ready { seq: u64 },
    /// `scheduled[(at_ms, seq)]`.
    Scheduled { at_ms: u64, seq: u64 },
}

/// Everything about a task but its arguments and result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub name: String,
    /// The interned id of `name` (the ready index is keyed by it).
    pub name_id: u32,
    pub queue: u32,
    pub priority: u8,
    pub state: TaskState,
    /// Attempts started so far (including attempts lost to a crash).
    pub attempts: u32,
    pub max_retries: u32,
    pub retry: RetryPolicy,
    pub enqueued_at_ms: u64,
    /// When it is (or was) due to run.
    pub due_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub expires_at_ms: Option<u64>,
    pub slot: Slot,
    pub errors: Vec<AttemptError>,
    /// The periodic schedule and fire time that enqueued it.
    pub origin: Option<Origin>,
    /// The JSON output of a succeeded task. Stored inline: the record is written once more
    /// at completion anyway, and a separate results table would cost an insert per task.
    #[serde(with = "serde_bytes")]
    pub output: Option<Vec<u8>>,
    /// The JSON arguments. Dropped when the task succeeds; kept while it may run again and
    /// after a failure, for inspection. Empty in the writer's copy of a running task (the
    /// stored record still has them).
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The (schedule, fire time) a periodic task was enqueued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Origin {
    pub schedule: String,
    pub fire_at_ms: u64,
}

impl TaskRecord {
    /// The ready-index key for this task at sequence `seq`.
    pub fn ready_key(&self, seq: u64) -> (u32, u32, u8, u64) {
        (
            self.queue,
            self.name_id,
            crate::options::MAX_PRIORITY - self.priority,
            seq,
        )
    }

    /// The record of a running task: the stored record (written before it started) with the
    /// `running` table's entry applied.
    pub fn overlay_running(&mut self, attempt: u32, started_at_ms: u64) {
        self.state = TaskState::Running;
        self.attempts = attempt;
        self.started_at_ms = Some(started_at_ms);
        self.slot = Slot::None;
    }

    /// Whether another attempt is allowed after `attempts` attempts.
    pub fn retries_left(&self) -> bool {
        self.attempts <= self.max_retries
    }
}
