//! What reads return: a task's status and the queue statistics.
//!
//! Every view is `Serialize`/`Deserialize`, so a tool can print it as JSON: times are RFC 3339
//! strings in UTC, states their lowercase names, and a task's arguments and output the JSON
//! stored with it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::metrics::TaskMetrics;
use crate::model::{AttemptError, TaskId, TaskState, rfc3339};

/// A task's state, times, error history, arguments and output, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(with = "rfc3339")]
    pub enqueued_at: SystemTime,
    /// When it is (or was last) due to run.
    #[serde(with = "rfc3339")]
    pub due_at: SystemTime,
    /// When its latest attempt started.
    #[serde(with = "rfc3339::option")]
    pub started_at: Option<SystemTime>,
    /// When it reached its final state.
    #[serde(with = "rfc3339::option")]
    pub finished_at: Option<SystemTime>,
    /// When it expires if not started.
    #[serde(with = "rfc3339::option")]
    pub expires_at: Option<SystemTime>,
    /// Due, but waiting because no live worker has registered its name.
    pub unregistered: bool,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// The periodic schedule that fired it, if any.
    pub schedule: Option<String>,
    /// The fire time it was enqueued for, if a schedule fired it.
    #[serde(with = "rfc3339::option")]
    pub fire_time: Option<SystemTime>,
    /// The task's arguments: the JSON it was enqueued with. Kept while the task may run and
    /// after it failed or expired; `None` once it succeeded (the output replaces them).
    pub arguments: Option<serde_json::Value>,
    /// The output of a succeeded task, as stored; `None` in every other state.
    pub output: Option<serde_json::Value>,
    /// The latest progress its handler reported (`Context::set_progress`), kept with the
    /// task when the attempt ends.
    pub progress: Option<serde_json::Value>,
    /// The workflow it belongs to (the id of the workflow's first task), if any.
    #[serde(default)]
    pub workflow: Option<TaskId>,
    /// The workflow steps it waits for (whose outputs it receives), in order.
    #[serde(default)]
    pub parents: Vec<TaskId>,
    /// The workflow steps that wait for it.
    #[serde(default)]
    pub children: Vec<TaskId>,
}

/// A workflow's tasks by state ([`Spool::workflow_status`](crate::Spool::workflow_status)).
/// Serialized as its id and a map from each state's name to its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowStatus {
    /// The workflow's id: its first task's.
    pub id: TaskId,
    #[serde(with = "by_state")]
    pub(crate) counts: [u64; TaskState::ALL.len()],
}

impl WorkflowStatus {
    /// How many of its tasks are in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.counts[usize::from(state.code())]
    }

    /// How many tasks it has.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether every one of its tasks is final.
    pub fn is_finished(&self) -> bool {
        TaskState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .all(|&s| self.count(s) == 0)
    }

    pub(crate) fn new(id: TaskId) -> WorkflowStatus {
        WorkflowStatus {
            id,
            counts: [0; TaskState::ALL.len()],
        }
    }

    pub(crate) fn add(&mut self, state: TaskState) {
        self.counts[usize::from(state.code())] += 1;
    }
}

/// Task counts of one queue, by state. Serialized as its name and a map from each state's
/// name to its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue's name.
    pub name: String,
    /// Indexed by state code.
    #[serde(with = "by_state")]
    pub(crate) counts: [u64; TaskState::ALL.len()],
    /// Whether the queue is paused ([`Spool::pause_queue`](crate::Spool::pause_queue)):
    /// nothing is claimed from it.
    #[serde(default)]
    pub paused: bool,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// One entry per queue that has ever held a task, by name.
    pub queues: Vec<QueueStats>,
    /// Task names that are due but that no live worker has registered, with how many wait.
    pub unregistered: Vec<(String, u64)>,
    /// The worker pools running in this process, in the order they started (on
    /// PostgreSQL, then every other process's).
    pub pools: Vec<PoolStats>,
    /// What happened per (queue, task name) since the spool opened, over the last minutes,
    /// and how long attempts ran (see [`Spool::prometheus`](crate::Spool::prometheus)). On
    /// PostgreSQL, what this process did: the tasks it stored, the ends it made and its own
    /// attempts (each process counts its own, as a Prometheus exporter's counters are).
    #[serde(default)]
    pub metrics: Vec<TaskMetrics>,
}

/// One running worker pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// The queues it serves.
    pub queues: Vec<String>,
    /// The task names it runs.
    pub tasks: Vec<String>,
    /// How many tasks it runs at once, as configured.
    pub concurrency: usize,
    /// Threads serving it now: its concurrency, unless more threads are hung past their hard
    /// time limit than it has replaced (at most its concurrency are). A pool on a tokio
    /// runtime (feature `tokio`) has no threads of its own: its places for attempts in
    /// flight, its concurrency while it runs.
    pub threads: usize,
    /// Threads whose attempt a hard time limit ended while the handler kept running (a
    /// thread cannot be stopped from outside). Each was replaced, up to the concurrency.
    pub abandoned: usize,
    /// Threads running an attempt now.
    #[serde(default)]
    pub busy: usize,
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

/// Counts indexed by state code, as a map from state to count (states a newer build adds
/// are ignored when read back here).
mod by_state {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        counts: &[u64; TaskState::ALL.len()],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            TaskState::ALL
                .iter()
                .map(|st| (st, counts[usize::from(st.code())])),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<[u64; TaskState::ALL.len()], D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(d)?;
        let mut counts = [0; TaskState::ALL.len()];
        for st in TaskState::ALL {
            if let Some(n) = map.get(&st.to_string()) {
                counts[usize::from(st.code())] = *n;
            }
        }
        Ok(counts)
    }
}

/// A page of a listing ([`Spool::tasks`](crate::Spool::tasks)): the tasks that matched, in
/// the order asked for, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskPage {
    /// The tasks, oldest or newest first as asked.
    pub tasks: Vec<TaskStatus>,
    /// Where the next page starts (pass it to [`Paging::after`](crate::Paging::after)), or
    /// `None` if no task is left to look at. A page can hold fewer tasks than asked and still
    /// have a next one: a listing reads at most [`SCAN_BUDGET`](crate::SCAN_BUDGET) index
    /// entries per page, so that a filter few tasks match never makes one call long.
    pub next: Option<TaskId>,
}
