//! Workflows on PostgreSQL, stored: chains, groups with callbacks and chords in one
//! transaction — every task's id allocated first (ascending in the workflow's order), so each
//! row is stored with its parents (`inputs`), its children and its count of parents left; a
//! step with parents left waits (state 8). What a member's end does to the steps after it is
//! in `follow`. A workflow's status and its revoke read its members by the `workflow` column.

use crate::error::Error;
use crate::model::{Revoke, Revoked, TaskId, TaskState, id_runs};
use crate::store::pg::claim::{NewRow, allocate_ids, insert_with_ids};
use crate::store::pg::control;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::Sql;
use crate::store::pg::unique::insert_new;
use crate::store::verbs::NewTask;
use crate::views::WorkflowStatus;

/// Stores `tasks` (as `rows`) at `now_ms`, all or none, in the caller's transaction: a
/// workflow if any of them waits for another (its id is the first task's), else tasks with
/// callbacks. Returns each task's id, and whether it is a duplicate of a unique key's holder
/// (only a task outside a workflow can be: a workflow's steps are refused unique keys).
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn insert(
    db: &mut impl Sql,
    schema: &SchemaName,
    tasks: &[NewTask],
    rows: &[NewRow],
    now_ms: u64,
) -> Result<Vec<(u64, bool)>, Error> {
    let q = schema.quoted();
    if tasks.iter().all(|t| t.after().is_empty()) {
        // Tasks with callbacks and nothing to wait for: their ends are followed up.
        let ids = insert_new(db, schema, rows, now_ms)?;
        let linked: Vec<i64> = ids
            .iter()
            .zip(tasks)
            .filter(|((_, duplicate), task)| !duplicate && task.step.is_some())
            .map(|((id, _), _)| *id as i64)
            .collect();
        db.execute(
            &format!("UPDATE {q}.tasks SET follows = true WHERE id = ANY($1)"),
            &[&linked],
        )
        .map_err(pg("mark tasks with callbacks"))?;
        return Ok(ids);
    }
    let ids = allocate_ids(db, schema, rows.len())?;
    insert_with_ids(db, schema, rows, &ids)?;
    let base = ids[0] as i64;
    let count = ids.len() as i64;
    db.execute(
        &format!("INSERT INTO {q}.workflows (base, left_count) VALUES ($1, $2)"),
        &[&base, &count],
    )
    .map_err(pg("record a workflow"))?;
    // Each step's parents (as runs of ids) and children, as (task, value) pairs in order.
    let mut parents_left = Vec::with_capacity(tasks.len());
    let mut settled = Vec::with_capacity(tasks.len());
    let (mut input_of, mut input) = (Vec::new(), Vec::new());
    let (mut child_of, mut child) = (Vec::new(), Vec::new());
    for (j, task) in tasks.iter().enumerate() {
        let after = task.after();
        parents_left.push(i32::try_from(after.len()).unwrap_or(i32::MAX));
        settled.push(task.step.as_ref().is_some_and(|s| s.settled));
        for (first, n) in id_runs(after.iter().map(|&i| ids[i])) {
            input_of.extend([ids[j] as i64; 2]);
            input.extend([first as i64, i64::from(n)]);
        }
        for &i in after {
            child_of.push(ids[i] as i64);
            child.push(ids[j] as i64);
        }
    }
    let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    db.execute(
        &format!(
            "UPDATE {q}.tasks AS t
             SET workflow = $2, parents_left = u.p, settled = u.s, follows = true,
                 state = CASE WHEN u.p > 0 THEN {waiting} ELSE t.state END
             FROM unnest($1::int8[], $3::int4[], $4::bool[]) AS u(id, p, s)
             WHERE t.id = u.id",
            waiting = TaskState::Waiting.code()
        ),
        &[&ids, &base, &parents_left, &settled],
    )
    .map_err(pg("store a workflow's steps"))?;
    for (column, of, values) in [
        ("inputs", &input_of, &input),
        ("children", &child_of, &child),
    ] {
        if of.is_empty() {
            continue;
        }
        db.execute(
            &format!(
                "UPDATE {q}.tasks AS t SET {column} = a.v
                 FROM (SELECT id, array_agg(v ORDER BY n) AS v
                       FROM unnest($1::int8[], $2::int8[]) WITH ORDINALITY AS u(id, v, n)
                       GROUP BY id) AS a
                 WHERE t.id = a.id"
            ),
            &[of, values],
        )
        .map_err(pg("store a workflow's links between steps"))?;
    }
    Ok(ids.into_iter().map(|id| (id as u64, false)).collect())
}

/// The tasks of workflow `base` by state.
///
/// # Errors
/// `NotFound` if `base` is not a workflow's first task; `Storage` on a failure of the
/// server.
pub(crate) fn status(
    db: &mut impl Sql,
    schema: &SchemaName,
    base: u64,
) -> Result<WorkflowStatus, Error> {
    let q = schema.quoted();
    must_be_workflow(db, schema, base)?;
    let rows = db
        .query(
            &format!("SELECT state, count(*) FROM {q}.tasks WHERE workflow = $1 GROUP BY state"),
            &[&(base as i64)],
        )
        .map_err(pg("read a workflow"))?;
    let mut status = WorkflowStatus::new(TaskId(base));
    for row in &rows {
        let state = u8::try_from(row.get::<_, i16>(0))
            .ok()
            .and_then(TaskState::from_code);
        if let Some(state) = state {
            status.counts[usize::from(state.code())] = row.get::<_, i64>(1) as u64;
        }
    }
    Ok(status)
}

/// Revokes every task of workflow `base` that is not final at `now_ms`, as `revoke` does
/// each, last first (so that the steps after a revoked one end `Revoked` too, not `Failed`),
/// in one transaction; returns what it did.
///
/// Every member is locked first, in ascending ids — the order in which a completion locks
/// a task and then the steps after it — so a completion racing the revoke waits or is
/// waited for, never deadlocks with it.
///
/// # Errors
/// `NotFound` if `base` is not a workflow's first task (nothing is changed); `Storage` on a
/// failure of the server.
pub(crate) fn revoke(
    db: &mut impl Sql,
    schema: &SchemaName,
    base: u64,
    now_ms: u64,
) -> Result<Revoked, Error> {
    let q = schema.quoted();
    let mut tx = db.transaction().map_err(pg("begin a workflow's revoke"))?;
    must_be_workflow(&mut tx, schema, base)?;
    let members: Vec<i64> = tx
        .query(
            &format!("SELECT id, state FROM {q}.tasks WHERE workflow = $1 ORDER BY id FOR UPDATE"),
            &[&(base as i64)],
        )
        .map_err(pg("lock a workflow's tasks"))?
        .iter()
        .filter(|r| {
            u8::try_from(r.get::<_, i16>(1))
                .ok()
                .and_then(TaskState::from_code)
                .is_some_and(|s| !s.is_final())
        })
        .map(|r| r.get(0))
        .collect();
    let mut done = Revoked::default();
    for &id in members.iter().rev() {
        match control::revoke(&mut tx, schema, id as u64, now_ms)? {
            Some(Revoke::Revoked) => done.revoked += 1,
            Some(Revoke::Cancelling) => done.cancelling += 1,
            _ => {}
        }
    }
    tx.commit().map_err(pg("commit a workflow's revoke"))?;
    Ok(done)
}

/// `NotFound` unless `base` is a workflow's first task.
fn must_be_workflow(db: &mut impl Sql, schema: &SchemaName, base: u64) -> Result<(), Error> {
    let q = schema.quoted();
    db.query_opt(
        &format!("SELECT 1 FROM {q}.tasks WHERE id = $1 AND workflow = $1"),
        &[&(base as i64)],
    )
    .map_err(pg("read a workflow"))?
    .map(|_| ())
    .ok_or(Error::NotFound(TaskId(base)))
}
