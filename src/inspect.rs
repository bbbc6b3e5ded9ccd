//! Read-only views: a task's status and the queue statistics. Reads use redb read
//! transactions (MVCC snapshots), opened once the writer has committed the groups it holds
//! (`WriterHandle::publish`); statistics come from the writer's in-memory counts.

use std::collections::HashMap;
use std::time::SystemTime;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableError};

use crate::clock::to_system_time;
use crate::codec;
use crate::error::{Error, Failure};
use crate::pool::LiveWorkers;
use crate::schedule::{ScheduleInfo, ScheduleRecord};
use crate::state::{AttemptError, TaskState};
use crate::store::record::TaskRecord;
use crate::store::schema::*;
use crate::store::tx::CountsView;
use crate::task::TaskId;

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
    counts: [u64; TaskState::ALL.len()],
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

fn queue_names(read: &ReadTransaction) -> Result<HashMap<u32, String>, Error> {
    let table = match read.open_table(QUEUES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = HashMap::new();
    for entry in table.iter()? {
        let (name, id) = entry?;
        names.insert(id.value(), name.value().to_string());
    }
    Ok(names)
}

/// A task's record as it stands, with the `running` entry applied if it is running.
fn record(read: &ReadTransaction, id: TaskId) -> Result<TaskRecord, Error> {
    let tasks = read.open_table(TASKS)?;
    let bytes = tasks.get(id.0)?.ok_or(Error::NotFound(id))?;
    let mut rec: TaskRecord = codec::decode(bytes.value())?;
    let running = read.open_table(RUNNING)?;
    if let Some(entry) = running.get(id.0)? {
        let (attempt, started_at_ms) = entry.value();
        rec.overlay_running(attempt, started_at_ms);
    }
    Ok(rec)
}

/// The status of one task.
pub(crate) fn status(db: &Database, id: TaskId, live: &LiveWorkers) -> Result<TaskStatus, Error> {
    let read = db.begin_read()?;
    let rec = record(&read, id)?;
    let queue = queue_names(&read)?
        .remove(&rec.queue)
        .unwrap_or_else(|| format!("#{}", rec.queue));
    let unregistered = rec.state == TaskState::Ready && live.is_unregistered(&queue, &rec.name);
    Ok(TaskStatus {
        id,
        queue,
        priority: rec.priority,
        state: rec.state,
        attempts: rec.attempts,
        max_retries: rec.max_retries,
        enqueued_at: to_system_time(rec.enqueued_at_ms),
        due_at: to_system_time(rec.due_at_ms),
        started_at: rec.started_at_ms.map(to_system_time),
        finished_at: rec.finished_at_ms.map(to_system_time),
        expires_at: rec.expires_at_ms.map(to_system_time),
        unregistered,
        errors: rec.errors,
        name: rec.name,
        fire_time: rec.origin.as_ref().map(|o| to_system_time(o.fire_at_ms)),
        schedule: rec.origin.map(|o| o.schedule),
    })
}

/// Every declared schedule, by name.
pub(crate) fn schedules(db: &Database) -> Result<Vec<ScheduleInfo>, Error> {
    let read = db.begin_read()?;
    let table = match read.open_table(SCHEDULES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (name, bytes) = entry?;
        let rec: ScheduleRecord = codec::decode(bytes.value())?;
        out.push(ScheduleInfo::from_record(name.value(), &rec));
    }
    Ok(out)
}

/// The JSON output of a finished task; `None` while unfinished; the matching error for the
/// other final states.
pub(crate) fn final_output(db: &Database, id: TaskId) -> Result<Option<Vec<u8>>, Error> {
    let read = db.begin_read()?;
    let rec = record(&read, id)?;
    match rec.state {
        TaskState::Succeeded => Ok(Some(rec.output.unwrap_or_default())),
        TaskState::Failed => Err(Error::TaskFailed(Box::new(Failure {
            id,
            attempts: rec.attempts,
            message: rec
                .errors
                .last()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            errors: rec.errors,
            name: rec.name,
        }))),
        TaskState::Expired => Err(Error::TaskExpired(id)),
        TaskState::Revoked => Err(Error::TaskRevoked(id)),
        _ => Ok(None),
    }
}

/// Counts per queue and state, and the names waiting for a worker, from the writer's view
/// (as of its last durable group, see `tx::Counts`). The file is read only when some pool
/// serves a queue without knowing one of the task names the spool has seen: `read` then
/// opens a transaction to count that name's ready tasks.
pub(crate) fn stats(
    view: &CountsView,
    live: &LiveWorkers,
    read: impl FnOnce() -> Result<ReadTransaction, Error>,
) -> Result<Stats, Error> {
    let mut per_queue: HashMap<u32, [u64; TaskState::ALL.len()]> = view
        .catalog
        .queues
        .iter()
        .map(|(id, _)| (id, [0; TaskState::ALL.len()]))
        .collect();
    for (&(queue, code), &n) in &view.counts {
        if let Some(state) = TaskState::from_code(code) {
            per_queue.entry(queue).or_insert([0; TaskState::ALL.len()])
                [usize::from(state.code())] = n;
        }
    }
    let mut queues: Vec<QueueStats> = per_queue
        .into_iter()
        .map(|(id, counts)| QueueStats {
            name: view.catalog.queues.name(id).to_string(),
            counts,
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Stats {
        queues,
        unregistered: unregistered(view, live, read)?,
    })
}

/// Due tasks, by name, that sit on a queue some pool serves but whose name none of those
/// pools knows.
fn unregistered(
    view: &CountsView,
    live: &LiveWorkers,
    read: impl FnOnce() -> Result<ReadTransaction, Error>,
) -> Result<Vec<(String, u64)>, Error> {
    let served = live.served_queues();
    let catalog = &view.catalog;
    let candidates: Vec<(u32, u32, &str)> = catalog
        .queues
        .iter()
        .filter(|(_, queue)| served.contains(&***queue))
        .flat_map(|(q, queue)| {
            catalog
                .names
                .iter()
                .filter(|(_, name)| live.is_unregistered(queue, name))
                .map(move |(n, name)| (q, n, &**name))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let read = read()?;
    let ready = read.open_table(READY)?;
    let mut out: Vec<(String, u64)> = Vec::new();
    for (q, n, name) in candidates {
        let count = ready
            .range((q, n, 0, 0)..=(q, n, u8::MAX, u64::MAX))?
            .count() as u64;
        if count == 0 {
            continue;
        }
        match out.iter_mut().find(|(existing, _)| existing == name) {
            Some((_, total)) => *total += count,
            None => out.push((name.to_string(), count)),
        }
    }
    out.sort();
    Ok(out)
}
