//! What reads return: a task's status and the queue statistics.

use std::time::SystemTime;

use crate::model::{AttemptError, TaskId, TaskState};

/// A task's state, times and error history, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskStatus {
    /// The task's id.
    pub id: TaskId,
    /// The registered task name.
    pub name: String,
    /// The queue it is on.
    pub queue: String,
    /// Its priority (0–9, higher first).
    pub priority: u8,
    /// Where it is in its life.
    pub state: TaskState,
    /// Attempts started so far, including attempts lost to a crash.
    pub attempts: u32,
    /// Retries allowed after the first attempt.
    pub max_retries: u32,
    /// When it was enqueued.
    pub enqueued_at: SystemTime,
    /// When it is (or was last) due to run.
    pub due_at: SystemTime,
    /// When its latest attempt started.
    pub started_at: Option<SystemTime>,
    /// When it reached its final state.
    pub finished_at: Option<SystemTime>,
    /// When it expires if not started.
    pub expires_at: Option<SystemTime>,
    /// Due, but waiting because no live worker has registered its name.
    pub unregistered: bool,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// The periodic schedule that fired it, if any.
    pub schedule: Option<String>,
    /// The fire time it was enqueued for, if a schedule fired it.
    pub fire_time: Option<SystemTime>,
}

/// Task counts of one queue, by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// The queue's name.
    pub name: String,
    /// Indexed by state code.
    pub(crate) counts: [u64; TaskState::ALL.len()],
}

impl QueueStats {
    /// How many tasks of this queue are in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts[usize::from(state.code())]
    }

    /// How many tasks the queue holds in all (finished ones until they are pruned).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// A snapshot of the whole queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// One entry per queue that has ever held a task, by name.
    pub queues: Vec<QueueStats>,
    /// Task names that are due but that no live worker has registered, with how many wait.
    pub unregistered: Vec<(String, u64)>,
}

impl Stats {
    /// How many tasks in all queues are in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.queues.iter().map(|q| q.count(state)).sum()
    }

    /// How many tasks all queues hold (finished ones until they are pruned).
    pub fn total(&self) -> u64 {
        self.queues.iter().map(QueueStats::total).sum()
    }

    /// The stats of one queue, if it exists.
    pub fn queue(&self, name: &str) -> Option<&QueueStats> {
        self.queues.iter().find(|q| q.name == name)
    }
}
