//! The read views of the file engine. `status`, `result` and `schedules` read redb read
//! transactions (MVCC snapshots), opened once the writer has committed the groups it holds
//! (`WriterHandle::publish`, called by the engine first); `stats` comes from the writer's
//! in-memory counts. Queue names come from the writer's catalog, and whether a task waits
//! for a name no pool knows from the pool registry.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableError};

use crate::clock::to_system_time;
use crate::error::{Error, Failure};
use crate::flow::Limit;
use crate::model::{TaskId, TaskState};
use crate::schedule::ScheduleInfo;
use crate::store::counts::CountsView;
use crate::store::errors::{Db, redb_error};
use crate::store::flow::read_limits;
use crate::store::pools::LivePools;
use crate::store::record::TaskRecord;
use crate::store::schedules::ScheduleRecord;
use crate::store::schema::{FLOW, READY, RUNNING, SCHEDULES, TASKS};
use crate::store::workflow::each_member;
use crate::views::{QueueStats, Stats, TaskStatus, WorkflowStatus};

/// A task's record as it stands, with the `running` entry applied if it is running.
pub(crate) fn record(read: &ReadTransaction, id: TaskId) -> Result<TaskRecord, Error> {
    let tasks = read.open_table(TASKS).db()?;
    let bytes = tasks.get(id.0).db()?.ok_or(Error::NotFound(id))?;
    let running = read.open_table(RUNNING).db()?;
    let entry = running.get(id.0).db()?.map(|e| e.value());
    with_running(bytes.value(), entry)
}

/// A stored record, with its `running` entry (attempt, started at ms) applied if it has one.
pub(crate) fn with_running(bytes: &[u8], running: Option<(u32, u64)>) -> Result<TaskRecord, Error> {
    let mut rec = TaskRecord::decode(bytes)?;
    if let Some((attempt, started_at_ms)) = running {
        rec.overlay_running(attempt, started_at_ms);
    }
    Ok(rec)
}

fn lock(view: &Mutex<CountsView>) -> std::sync::MutexGuard<'_, CountsView> {
    view.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The status of one task.
pub(crate) fn status(
    db: &Database,
    view: &Mutex<CountsView>,
    live: &LivePools,
    id: TaskId,
) -> Result<TaskStatus, Error> {
    let rec = record(&db.begin_read().db()?, id)?;
    let queue = match lock(view).catalog.queues.lookup(rec.queue) {
        Some(name) => name.to_string(),
        None => format!("#{}", rec.queue),
    };
    let unregistered = rec.state == TaskState::Ready && live.is_unregistered(&queue, &rec.name);
    Ok(view_of(id, rec, queue, unregistered))
}

/// What a reader sees of task `id`, whose record (with its `running` entry applied) is
/// `rec`, on the queue named `queue`.
pub(crate) fn view_of(
    id: TaskId,
    rec: TaskRecord,
    queue: String,
    unregistered: bool,
) -> TaskStatus {
    // Both were written by serde_json (and an output is checked to read back before it is
    // stored), so they parse; an empty payload is a succeeded task's, whose arguments are gone.
    let json = |bytes: &[u8]| serde_json::from_slice(bytes).ok();
    let arguments = if rec.payload.is_empty() {
        None
    } else {
        json(&rec.payload)
    };
    let output = rec.output.as_deref().and_then(json);
    let progress = rec.control.progress.as_deref().and_then(json);
    let parents = rec
        .deps
        .inputs
        .iter()
        .flat_map(|&(first, n)| (first..first + u64::from(n)).map(TaskId))
        .collect();
    TaskStatus {
        workflow: rec.deps.workflow.map(TaskId),
        parents,
        children: rec.deps.children.iter().map(|&c| TaskId(c)).collect(),
        progress,
        arguments,
        output,
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
    }
}

/// Every declared schedule, by name.
pub(crate) fn schedules(db: &Database) -> Result<Vec<ScheduleInfo>, Error> {
    schedules_of(&db.begin_read().db()?)
}

/// Every declared schedule in the snapshot `read`, by name.
pub(crate) fn schedules_of(read: &ReadTransaction) -> Result<Vec<ScheduleInfo>, Error> {
    let table = match read.open_table(SCHEDULES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(redb_error(e.into())),
    };
    let mut out = Vec::new();
    for entry in table.iter().db()? {
        let (name, bytes) = entry.db()?;
        let rec = ScheduleRecord::decode(bytes.value())?;
        out.push(rec.info(name.value()));
    }
    Ok(out)
}

/// A workflow's tasks by state: every task stored with it has the next ids, so one sweep
/// from its first task finds them all.
pub(crate) fn workflow(db: &Database, id: TaskId) -> Result<WorkflowStatus, Error> {
    workflow_of(&db.begin_read().db()?, id)
}

/// [`workflow`] in the snapshot `read`.
pub(crate) fn workflow_of(read: &ReadTransaction, id: TaskId) -> Result<WorkflowStatus, Error> {
    let first = record(read, id)?;
    if first.deps.workflow != Some(id.0) {
        return Err(Error::NotFound(id));
    }
    let mut status = WorkflowStatus::new(id);
    // A running member's state is in `running`, not in its stored record.
    let running = read.open_table(RUNNING).db()?;
    each_member(&read.open_table(TASKS).db()?, id.0, |member, rec| {
        let runs = running.get(member).db()?.is_some();
        status.add(if runs { TaskState::Running } else { rec.state });
        Ok(())
    })?;
    Ok(status)
}

/// The declared limits (see `store::flow`).
pub(crate) fn limits(db: &Database) -> Result<Vec<Limit>, Error> {
    limits_of(&db.begin_read().db()?)
}

/// Every declared limit, as of the read `read`.
pub(crate) fn limits_of(read: &ReadTransaction) -> Result<Vec<Limit>, Error> {
    let table = match read.open_table(FLOW) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(redb_error(e.into())),
    };
    read_limits(&table)
}

/// The JSON output of a finished task; `None` while unfinished; the matching error for the
/// other final states; `WrongTask` if the task is not a `name` task.
pub(crate) fn result(
    db: &Database,
    id: TaskId,
    name: Option<&str>,
) -> Result<Option<Vec<u8>>, Error> {
    let rec = record(&db.begin_read().db()?, id)?;
    if let Some(name) = name.filter(|&name| name != rec.name) {
        return Err(Error::WrongTask {
            id,
            requested: name.to_string(),
            stored: rec.name,
        });
    }
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
/// (as of its last durable group, see `counts`). The file is read only when some pool serves
/// a queue without knowing one of the task names the spool has seen: `read` then opens a
/// transaction to count that name's ready tasks.
pub(crate) fn stats(
    view: &Mutex<CountsView>,
    live: &LivePools,
    read: impl FnOnce() -> Result<ReadTransaction, Error>,
) -> Result<Stats, Error> {
    let view = lock(view).clone();
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
        .map(|(id, counts)| {
            let name = view.catalog.queues.name(id).to_string();
            QueueStats {
                paused: view.paused.binary_search(&name).is_ok(),
                name,
                counts,
            }
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Stats {
        queues,
        unregistered: unregistered(&view, live, read)?,
        pools: live.stats(),
        metrics: Vec::new(),
    })
}

/// Due tasks, by name, that sit on a queue some pool serves but whose name none of those
/// pools knows.
fn unregistered(
    view: &CountsView,
    live: &LivePools,
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
    let ready = read.open_table(READY).db()?;
    let mut out: Vec<(String, u64)> = Vec::new();
    for (q, n, name) in candidates {
        let count = ready
            .range((q, n, 0, 0)..=(q, n, u8::MAX, u64::MAX))
            .db()?
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
