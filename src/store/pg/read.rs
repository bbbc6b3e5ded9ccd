//! Reading a task on PostgreSQL as the public views show it: its columns, its record and
//! its errors, in one round trip.

use postgres::Row;

use crate::clock::to_system_time;
use crate::error::Error;
use crate::model::{AttemptError, AttemptErrorKind, TaskId, TaskState};
use crate::store::pg::flow::paused;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::pools::unregistered;
use crate::store::pg::record::PgRecord;
use crate::store::pg::sql::Sql;
use crate::views::{QueueStats, TaskStatus};

/// The columns [`from_row`] reads, of the task `t`: its columns, then its errors in order,
/// its progress, whether no live pool can run it, and its place in a workflow.
pub(super) fn columns(q: &str) -> String {
    let errors = |column: &str| {
        format!(
            "coalesce((SELECT array_agg(e.{column} ORDER BY e.id) \
                       FROM {q}.attempt_errors e WHERE e.task = t.id), '{{}}')"
        )
    };
    format!(
        "t.id, t.name, t.queue, t.priority, t.state, t.attempts, t.max_retries, t.due_at_ms, \
         t.started_at_ms, t.finished_at_ms, t.payload, t.output, t.record, {}, {}, {}, {}, \
         t.progress, {}, t.workflow, t.inputs, t.children",
        errors("attempt"),
        errors("at_ms"),
        errors("kind"),
        errors("message"),
        unregistered(q)
    )
}

/// Task `id` as [`TaskStatus`].
///
/// # Errors
/// `NotFound` for an unknown id; `Storage` on a failure of the server or a row this build
/// cannot read.
pub(crate) fn status(db: &mut impl Sql, schema: &SchemaName, id: u64) -> Result<TaskStatus, Error> {
    let q = schema.quoted();
    let row = db
        .query_opt(
            &format!("SELECT {} FROM {q}.tasks t WHERE t.id = $1", columns(&q)),
            &[&(id as i64)],
        )
        .map_err(pg("read a task"))?;
    match row {
        Some(row) => from_row(&row),
        None => Err(Error::NotFound(TaskId(id))),
    }
}

/// A row of [`columns`] as [`TaskStatus`].
///
/// # Errors
/// `Storage` for a row this build cannot read.
pub(super) fn from_row(row: &Row) -> Result<TaskStatus, Error> {
    let id = row.get::<_, i64>(0) as u64;
    let unreadable = |what: &str| Error::storage(format!("task {id} has {what}"));
    let code = u8::try_from(row.get::<_, i16>(4)).unwrap_or(u8::MAX);
    let state = TaskState::from_code(code)
        .ok_or_else(|| unreadable(&format!("the state code {code}, unknown to this build")))?;
    let record = PgRecord::decode(row.get(12))?;
    let (attempts, ats, kinds, messages): (Vec<i32>, Vec<i64>, Vec<i16>, Vec<String>) =
        (row.get(13), row.get(14), row.get(15), row.get(16));
    let mut errors = Vec::with_capacity(attempts.len());
    for (((attempt, at), kind), message) in attempts.into_iter().zip(ats).zip(kinds).zip(messages) {
        let kind = u8::try_from(kind)
            .ok()
            .and_then(AttemptErrorKind::from_code)
            .ok_or_else(|| unreadable(&format!("the error kind code {kind}")))?;
        errors.push(AttemptError {
            attempt: u32::try_from(attempt).unwrap_or(0),
            at: to_system_time(at as u64),
            kind,
            message,
        });
    }
    // Written by serde_json (an output is checked to read back before it is stored).
    let json = |bytes: Option<Vec<u8>>| bytes.and_then(|b| serde_json::from_slice(&b).ok());
    let ms = |v: Option<i64>| v.map(|ms| to_system_time(ms as u64));
    Ok(TaskStatus {
        id: TaskId(id),
        name: row.get(1),
        queue: row.get(2),
        priority: u8::try_from(row.get::<_, i16>(3)).unwrap_or(0),
        state,
        attempts: u32::try_from(row.get::<_, i32>(5)).unwrap_or(0),
        max_retries: u32::try_from(row.get::<_, i32>(6)).unwrap_or(0),
        enqueued_at: to_system_time(record.enqueued_at_ms),
        due_at: to_system_time(row.get::<_, i64>(7) as u64),
        started_at: ms(row.get(8)),
        finished_at: ms(row.get(9)),
        expires_at: record.expires_at_ms.map(to_system_time),
        unregistered: row.get(18),
        errors,
        fire_time: record.origin.as_ref().map(|o| to_system_time(o.fire_at_ms)),
        schedule: record.origin.map(|o| o.schedule),
        arguments: json(row.get(10)),
        output: json(row.get(11)),
        progress: json(row.get(17)),
        workflow: row.get::<_, Option<i64>>(19).map(|id| TaskId(id as u64)),
        parents: row
            .get::<_, Option<Vec<i64>>>(20)
            .unwrap_or_default()
            .chunks_exact(2)
            .flat_map(|run| (run[0]..run[0] + run[1]).map(|id| TaskId(id as u64)))
            .collect(),
        children: row
            .get::<_, Option<Vec<i64>>>(21)
            .unwrap_or_default()
            .into_iter()
            .map(|id| TaskId(id as u64))
            .collect(),
    })
}

/// How many tasks each queue holds in each state, and whether it is paused, queues by name.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn counts(db: &mut impl Sql, schema: &SchemaName) -> Result<Vec<QueueStats>, Error> {
    let q = schema.quoted();
    let rows = db
        .query(
            &format!(
                "SELECT queue, state, count(*) FROM {q}.tasks GROUP BY queue, state ORDER BY queue COLLATE \"C\""
            ),
            &[],
        )
        .map_err(pg("count tasks"))?;
    let mut queues: Vec<QueueStats> = Vec::new();
    for row in &rows {
        let name: String = row.get(0);
        let Some(state) = u8::try_from(row.get::<_, i16>(1))
            .ok()
            .and_then(TaskState::from_code)
        else {
            continue;
        };
        let n = row.get::<_, i64>(2) as u64;
        if queues.last().is_none_or(|last| last.name != name) {
            queues.push(QueueStats {
                name,
                counts: [0; TaskState::ALL.len()],
                paused: false,
            });
        }
        if let Some(last) = queues.last_mut() {
            last.counts[usize::from(state.code())] = n;
        }
    }
    // A paused queue is listed even when it holds nothing.
    for name in paused(db, schema)? {
        match queues.binary_search_by(|q| q.name.as_str().cmp(&name)) {
            Ok(i) => queues[i].paused = true,
            Err(i) => queues.insert(
                i,
                QueueStats {
                    name,
                    counts: [0; TaskState::ALL.len()],
                    paused: true,
                },
            ),
        }
    }
    Ok(queues)
}
