//! A chord too large for one request, stored in parts on PostgreSQL (`PartOp`), so that its
//! producer holds a part's memory, not the chord's:
//!
//! 1. **open**: the ids of every member and of the body (the last one) are reserved at
//!    once — the sequence set past them under `ALTER SEQUENCE`'s lock, which holds every
//!    other `nextval` off until the commit — so
//!    the chord's ids are consecutive, as on the file engine; an `open_chords` row records
//!    them and the process storing them;
//! 2. **part**: members are inserted part by part, each waiting (state 8) for the seal,
//!    which no claim, revoke or expiry touches;
//! 3. **seal**: the body is inserted, waiting for every member, the workflow recorded, and
//!    every member made ready, in one transaction: from its commit on the chord exists
//!    whole. The server holds a large transaction's changes on disk, so nothing is left
//!    to index afterwards.
//!
//! A producer that fails before the seal deletes what it stored (**abandon**); one that dies
//! leaves its `open_chords` row, and the rescue of its lease deletes the members.

use crate::error::Error;
use crate::model::{TaskId, TaskState};
use crate::store::PART;
use crate::store::pg::claim::insert_with_ids;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::notify_wake;
use crate::store::pg::record::new_row;
use crate::store::pg::sql::Sql;
use crate::store::verbs::PartOp;

/// Applies one step of storing a chord in parts for process `process` at `now_ms`; answers
/// as [`PartOp`] says.
///
/// # Errors
/// `NotFound` for a chord that is not open (or, to seal, not complete), changing nothing;
/// `Storage` on a failure of the server.
pub(crate) fn apply(
    db: &mut impl Sql,
    schema: &SchemaName,
    op: PartOp,
    (process, now_ms): (u64, u64),
) -> Result<u64, Error> {
    let q = schema.quoted();
    let mut tx = db.transaction().map_err(pg("begin a chord's part"))?;
    let answer = match op {
        PartOp::Open { count } => {
            let count = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
            // Quoted by the server itself: `"schema".tasks_id_seq`.
            let sequence: String = tx
                .query_one(
                    &format!("SELECT pg_get_serial_sequence('{q}.tasks', 'id')"),
                    &[],
                )
                .map_err(pg("find the task ids' sequence"))?
                .get(0);
            // Takes the lock that holds every other `nextval` off until the commit (the
            // sequence is left as it was).
            tx.batch_execute(&format!("ALTER SEQUENCE {sequence} INCREMENT BY 1"))
                .map_err(pg("lock the task ids' sequence"))?;
            let row = tx
                .query_one(
                    &format!("SELECT last_value, is_called FROM {sequence}"),
                    &[],
                )
                .map_err(pg("read the task ids' sequence"))?;
            let (value, called): (i64, bool) = (row.get(0), row.get(1));
            // The next id is `value + 1` once the sequence has given one, else `value`.
            let next = if called { value + 1 } else { value };
            let last = next + count - 1;
            tx.execute(
                "SELECT setval($1::text::regclass, $2, true)",
                &[&sequence, &last],
            )
            .map_err(pg("reserve a chord's ids"))?;
            let base = last - count + 1;
            tx.execute(
                &format!("INSERT INTO {q}.open_chords (base, count, process) VALUES ($1, $2, $3)"),
                &[&base, &count, &(process as i64)],
            )
            .map_err(pg("record an open chord"))?;
            base as u64
        }
        PartOp::Part { base, first, tasks } => {
            let count = open_count(&mut tx, schema, base)?;
            let body = base as i64 + count - 1;
            let end = first.saturating_add(tasks.len() as u64);
            if first < base || end > body as u64 {
                return Err(Error::NotFound(TaskId(base)));
            }
            let rows = tasks
                .iter()
                .map(|t| new_row(t, now_ms))
                .collect::<Result<Vec<_>, _>>()?;
            let ids: Vec<u64> = (first..end).collect();
            insert_with_ids(&mut tx, schema, &rows, &ids)?;
            let ids: Vec<i64> = ids.into_iter().map(|id| id as i64).collect();
            tx.execute(
                &format!(
                    "UPDATE {q}.tasks SET workflow = $2, parents_left = 1, follows = true,
                         state = {waiting}, children = ARRAY[$3::int8]
                     WHERE id = ANY($1)",
                    waiting = TaskState::Waiting.code()
                ),
                &[&ids, &(base as i64), &body],
            )
            .map_err(pg("store a chord's part"))?;
            tasks.len() as u64
        }
        PartOp::Seal { base, body } => {
            let count = open_count(&mut tx, schema, base)?;
            let members = count - 1;
            let stored: i64 = tx
                .query_one(
                    &format!("SELECT count(*) FROM {q}.tasks WHERE workflow = $1"),
                    &[&(base as i64)],
                )
                .map_err(pg("count a chord's members"))?
                .get(0);
            if stored != members {
                return Err(Error::NotFound(TaskId(base)));
            }
            let id = base as i64 + members;
            let settled = body.step.as_ref().is_some_and(|s| s.settled);
            insert_with_ids(&mut tx, schema, &[new_row(&body, now_ms)?], &[id as u64])?;
            tx.execute(
                &format!(
                    "UPDATE {q}.tasks SET workflow = $2, parents_left = $3, settled = $4,
                         follows = true, state = {waiting}, inputs = ARRAY[$2::int8, $5::int8]
                     WHERE id = $1",
                    waiting = TaskState::Waiting.code()
                ),
                &[
                    &id,
                    &(base as i64),
                    &i32::try_from(members).unwrap_or(i32::MAX),
                    &settled,
                    &members,
                ],
            )
            .map_err(pg("seal a chord"))?;
            tx.execute(
                &format!(
                    "UPDATE {q}.tasks SET parents_left = 0,
                         state = CASE WHEN due_at_ms > $3 THEN {scheduled} ELSE {ready} END
                     WHERE workflow = $1 AND id < $2",
                    scheduled = TaskState::Scheduled.code(),
                    ready = TaskState::Ready.code()
                ),
                &[
                    &(base as i64),
                    &id,
                    &(i64::try_from(now_ms).unwrap_or(i64::MAX)),
                ],
            )
            .map_err(pg("make a chord's members ready"))?;
            tx.execute(
                &format!("INSERT INTO {q}.workflows (base, left_count) VALUES ($1, $2)"),
                &[&(base as i64), &count],
            )
            .map_err(pg("record a workflow"))?;
            tx.execute(
                &format!("DELETE FROM {q}.open_chords WHERE base = $1"),
                &[&(base as i64)],
            )
            .map_err(pg("seal a chord"))?;
            notify_wake(&mut tx, schema)?;
            id as u64
        }
        // Every member was made ready at the seal.
        PartOp::Index { .. } => 0,
        PartOp::Abandon { base } => {
            if open_count(&mut tx, schema, base).is_err() {
                return Ok(0);
            }
            let deleted = tx
                .execute(
                    &format!(
                        "DELETE FROM {q}.tasks WHERE id IN (
                             SELECT id FROM {q}.tasks WHERE workflow = $1 LIMIT $2)"
                    ),
                    &[&(base as i64), &(PART as i64)],
                )
                .map_err(pg("delete an abandoned chord's members"))?;
            if deleted == 0 {
                tx.execute(
                    &format!("DELETE FROM {q}.open_chords WHERE base = $1"),
                    &[&(base as i64)],
                )
                .map_err(pg("delete an abandoned chord"))?;
            }
            deleted.min(1)
        }
    };
    tx.commit().map_err(pg("commit a chord's part"))?;
    Ok(answer)
}

/// How many ids open chord `base` reserved, its row locked until the transaction ends.
fn open_count(db: &mut impl Sql, schema: &SchemaName, base: u64) -> Result<i64, Error> {
    let q = schema.quoted();
    db.query_opt(
        &format!("SELECT count FROM {q}.open_chords WHERE base = $1 FOR UPDATE"),
        &[&(base as i64)],
    )
    .map_err(pg("read an open chord"))?
    .map(|r| r.get(0))
    .ok_or(Error::NotFound(TaskId(base)))
}
