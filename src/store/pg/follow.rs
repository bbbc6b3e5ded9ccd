//! What a task's end does on PostgreSQL, in the transaction that ends it, as the file
//! engine's writer does (`store::workflow`): its callbacks are enqueued; a success counts
//! down each step after it (the last parent makes it ready, or scheduled if its countdown
//! has still to run); any other end fails every step after it, naming it — and theirs in
//! turn, iteratively — except a step that runs however its parents ended, which counts
//! down; its workflow's count of unfinished tasks goes down. Only tasks marked `follows`
//! are looked at, so the end of any other task costs nothing more.
//!
//! Rows are locked in ascending ids — a task, then the steps after it (which always have
//! higher ids) — so concurrent ends of a chord's members, and a workflow's revoke, wait for
//! each other and never deadlock.

use std::collections::HashMap;

use crate::error::Error;
use crate::model::{AttemptErrorKind, TaskState};
use crate::store::pg::claim::insert;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::{Whose, notify_done, notify_wake};
use crate::store::pg::record::{PgLink, PgRecord};
use crate::store::pg::sql::Sql;

/// Follows up the ends of `ids`, tasks that became final at `now_ms` in the caller's
/// transaction (tasks not marked `follows` are passed over).
///
/// # Errors
/// `Storage` on a failure of the server (the caller's transaction is then to be dropped).
pub(crate) fn ended(
    db: &mut impl Sql,
    schema: &SchemaName,
    ids: &[i64],
    now_ms: u64,
) -> Result<(), Error> {
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut next: Vec<i64> = ids.to_vec();
    while !next.is_empty() {
        let rows = db
            .query(
                &format!(
                    "SELECT id, name, state, workflow, coalesce(children, '{{}}'), record
                     FROM {q}.tasks WHERE id = ANY($1) AND follows ORDER BY id"
                ),
                &[&next],
            )
            .map_err(pg("read the tasks that ended"))?;
        next.clear();
        let mut ends: HashMap<i64, i64> = HashMap::new();
        let mut counted: Vec<i64> = Vec::new();
        let mut settled_only: Vec<i64> = Vec::new();
        let mut failing: Vec<(Vec<i64>, String)> = Vec::new();
        for row in &rows {
            let id: i64 = row.get(0);
            let name: String = row.get(1);
            let state = u8::try_from(row.get::<_, i16>(2))
                .ok()
                .and_then(TaskState::from_code)
                .unwrap_or(TaskState::Failed);
            if let Some(base) = row.get::<_, Option<i64>>(3) {
                *ends.entry(base).or_default() += 1;
            }
            let children: Vec<i64> = row.get(4);
            let succeeded = state == TaskState::Succeeded;
            let record = PgRecord::decode(row.get(5))?;
            let links: Vec<&PgLink> = record
                .links
                .iter()
                .filter(|l| l.on_failure != succeeded)
                .collect();
            fire_links(db, schema, id, &links, now_ms)?;
            if children.is_empty() {
                continue;
            }
            if succeeded {
                counted.extend(&children);
            } else {
                settled_only.extend(&children);
                let reason = format!(
                    "task {id} (`{name}`), which it waits for, ended {state}; it never ran"
                );
                failing.push((children, reason));
            }
        }
        // Steps that run however their parents ended count down first, so that the
        // failing below passes them over.
        count_down(db, schema, &counted, false, now)?;
        count_down(db, schema, &settled_only, true, now)?;
        for (children, reason) in failing {
            next.extend(fail_steps(db, schema, &children, &reason, now)?);
        }
        for (base, n) in ends {
            db.execute(
                &format!(
                    "UPDATE {q}.workflows SET left_count = greatest(left_count - $2, 0),
                         ended_at_ms = CASE WHEN left_count - $2 <= 0 THEN $3::int8 END
                     WHERE base = $1"
                ),
                &[&base, &n, &now],
            )
            .map_err(pg("count a workflow's ends"))?;
        }
    }
    Ok(())
}

/// Enqueues `links`, the callbacks of task `id` that its end fires, ready at `now_ms`, each
/// reading the task's result; they become its children: its status shows them, and its
/// output is kept until they have read it.
fn fire_links(
    db: &mut impl Sql,
    schema: &SchemaName,
    id: i64,
    links: &[&PgLink],
    now_ms: u64,
) -> Result<(), Error> {
    if links.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let rows = links
        .iter()
        .map(|l| l.row(now_ms))
        .collect::<Result<Vec<_>, _>>()?;
    let fired: Vec<i64> = insert(db, schema, &rows)?
        .into_iter()
        .map(|id| id as i64)
        .collect();
    db.execute(
        &format!("UPDATE {q}.tasks SET inputs = ARRAY[$2::int8, 1] WHERE id = ANY($1)"),
        &[&fired, &id],
    )
    .map_err(pg("store a callback's input"))?;
    db.execute(
        &format!("UPDATE {q}.tasks SET children = coalesce(children, '{{}}') || $2 WHERE id = $1"),
        &[&id, &fired],
    )
    .map_err(pg("record the callbacks a task fired"))?;
    for (link, callback) in links.iter().zip(&fired) {
        tracing::info!(task.id = id, callback = callback, callback.name = %link.name,
            "task ended: its {} callback enqueued",
            if link.on_failure { "failure" } else { "success" });
    }
    Ok(())
}

/// One parent of each of `children` ended (a child named twice counts down twice): the
/// last one makes a waiting step ready, or scheduled if it is not due yet at `now`. With
/// `settled_only`, only the steps that run however their parents ended count.
fn count_down(
    db: &mut impl Sql,
    schema: &SchemaName,
    children: &[i64],
    settled_only: bool,
    now: i64,
) -> Result<(), Error> {
    if children.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let waiting = TaskState::Waiting.code();
    lock(db, schema, children)?;
    let settled = if settled_only { "AND t.settled" } else { "" };
    let made = db
        .query(
            &format!(
                "UPDATE {q}.tasks AS t
                 SET parents_left = t.parents_left - c.n,
                     state = CASE WHEN t.parents_left - c.n > 0 THEN {waiting}
                                  WHEN t.due_at_ms > $2 THEN {scheduled}
                                  ELSE {ready} END
                 FROM (SELECT child, count(*)::int4 AS n FROM unnest($1::int8[]) AS u(child)
                       GROUP BY child) AS c
                 WHERE t.id = c.child AND t.state = {waiting} {settled}
                 RETURNING t.state",
                scheduled = TaskState::Scheduled.code(),
                ready = TaskState::Ready.code(),
            ),
            &[&children, &now],
        )
        .map_err(pg("count down the steps after a task"))?;
    if made
        .iter()
        .any(|r| r.get::<_, i16>(0) != i16::from(waiting))
    {
        notify_wake(db, schema)?;
    }
    Ok(())
}

/// Fails every waiting step of `children` that does not run however its parents ended,
/// with `reason` in its history; returns them (their own ends are followed up next).
fn fail_steps(
    db: &mut impl Sql,
    schema: &SchemaName,
    children: &[i64],
    reason: &str,
    now: i64,
) -> Result<Vec<i64>, Error> {
    let q = schema.quoted();
    lock(db, schema, children)?;
    let failed = db
        .query(
            &format!(
                "UPDATE {q}.tasks SET state = {failed}, finished_at_ms = $2
                 WHERE id = ANY($1) AND state = {waiting} AND NOT settled
                 RETURNING id, attempts, name",
                failed = TaskState::Failed.code(),
                waiting = TaskState::Waiting.code(),
            ),
            &[&children, &now],
        )
        .map_err(pg("fail the steps after a task"))?;
    let ids: Vec<i64> = failed.iter().map(|r| r.get(0)).collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    for row in &failed {
        tracing::info!(task.id = row.get::<_, i64>(0), task.name = %row.get::<_, String>(2),
            "workflow step failed: a task before it did not succeed");
    }
    let attempts: Vec<i32> = failed.iter().map(|r| r.get(1)).collect();
    db.execute(
        &format!(
            "INSERT INTO {q}.attempt_errors (task, attempt, at_ms, kind, message)
             SELECT id, attempt, $3, $4, $5 FROM unnest($1::int8[], $2::int4[]) AS e(id, attempt)"
        ),
        &[
            &ids,
            &attempts,
            &now,
            &i16::from(AttemptErrorKind::Upstream.code()),
            &reason,
        ],
    )
    .map_err(pg("record why the steps after a task failed"))?;
    notify_done(db, schema, &ids, (Whose::Rows, None))?;
    Ok(ids)
}

/// Locks the rows of `ids` in ascending order.
fn lock(db: &mut impl Sql, schema: &SchemaName, ids: &[i64]) -> Result<(), Error> {
    let q = schema.quoted();
    db.execute(
        &format!("SELECT 1 FROM {q}.tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE"),
        &[&ids],
    )
    .map_err(pg("lock the steps after a task"))?;
    Ok(())
}

/// A finished task of a workflow runs again (a manual retry): its workflow has one more
/// task left.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn reopened(db: &mut impl Sql, schema: &SchemaName, id: u64) -> Result<(), Error> {
    let q = schema.quoted();
    db.execute(
        &format!(
            "UPDATE {q}.workflows SET left_count = left_count + 1, ended_at_ms = NULL
             WHERE base = (SELECT workflow FROM {q}.tasks WHERE id = $1)"
        ),
        &[&(id as i64)],
    )
    .map_err(pg("count a workflow's task again"))?;
    Ok(())
}
