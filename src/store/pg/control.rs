//! Revoking on PostgreSQL, exactly, whichever process runs the task: a waiting task ends
//! `Revoked` in the revoke's transaction and never runs; a running one is marked, its
//! owner told on the schema's `stop` channel (to ask its attempt to stop), and however that
//! attempt ends — returned, or rescued after its process died — the task ends `Revoked`.
//! And the manual retry and forget of a finished task.

use crate::error::Error;
use crate::model::{AttemptErrorKind, Revoke, TaskId, TaskState};
use crate::store::pg::complete::end;
use crate::store::pg::follow::{ended, reopened};
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::{Whose, notify_wake};
use crate::store::pg::sql::Sql;

/// Revokes task `id` at `now_ms`; `None` for an unknown id.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn revoke(
    db: &mut impl Sql,
    schema: &SchemaName,
    id: u64,
    now_ms: u64,
) -> Result<Option<Revoke>, Error> {
    let q = schema.quoted();
    let id = id as i64;
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = db.transaction().map_err(pg("begin a revoke"))?;
    let row = tx
        .query_opt(
            &format!("SELECT state, attempts, follows FROM {q}.tasks WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .map_err(pg("lock a task to revoke"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let code = u8::try_from(row.get::<_, i16>(0)).unwrap_or(u8::MAX);
    let attempts: i32 = row.get(1);
    let follows: bool = row.get(2);
    let Some(state) = TaskState::from_code(code) else {
        return Err(Error::storage(format!(
            "task {id} has state code {code}, which this taskspool does not know"
        )));
    };
    let answer = match state {
        s if s.is_final() => Revoke::AlreadyFinal(s),
        TaskState::Running => {
            tx.execute(
                &format!("UPDATE {q}.tasks SET revoke_requested = true WHERE id = $1"),
                &[&id],
            )
            .map_err(pg("mark a running task revoked"))?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&schema.stop_channel(), &id.to_string()],
            )
            .map_err(pg("notify the running attempt's owner"))?;
            Revoke::Cancelling
        }
        _ => {
            end(
                &mut tx,
                schema,
                (id, Whose::Rows),
                (attempts, now),
                TaskState::Revoked,
                AttemptErrorKind::Revoked,
                "revoked before it ran",
            )?;
            if follows {
                ended(&mut tx, schema, &[id], now_ms)?;
            }
            Revoke::Revoked
        }
    };
    tx.commit().map_err(pg("commit a revoke"))?;
    Ok(Some(answer))
}

/// Runs a failed, expired or revoked task again at `now_ms`: ready, its history kept, with
/// a fresh budget of the retries it was enqueued with, its expiry gone (as the file engine).
///
/// # Errors
/// `NotFound` for an unknown id; `WrongState` for another state; `Storage` on a failure of
/// the server (nothing is changed then).
pub(crate) fn retry(
    db: &mut impl Sql,
    schema: &SchemaName,
    id: u64,
    now_ms: u64,
) -> Result<(), Error> {
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = db.transaction().map_err(pg("begin a retry"))?;
    let state = state_of(&mut tx, schema, id)?;
    if !matches!(
        state,
        TaskState::Failed | TaskState::Expired | TaskState::Revoked
    ) {
        return Err(Error::WrongState {
            id: TaskId(id),
            state,
            applies: "only a failed, expired or revoked task can be retried",
        });
    }
    tx.execute(
        &format!(
            "UPDATE {q}.tasks SET state = {ready}, due_at_ms = $2, finished_at_ms = NULL,
                 expires_at_ms = NULL, max_retries = attempts + base_retries,
                 revoke_requested = false, parked = false
             WHERE id = $1",
            ready = TaskState::Ready.code()
        ),
        &[&(id as i64), &now],
    )
    .map_err(pg("retry a task"))?;
    reopened(&mut tx, schema, id)?;
    notify_wake(&mut tx, schema)?;
    tx.commit().map_err(pg("commit a retry"))?;
    Ok(())
}

/// Deletes a finished task, its errors and its result.
///
/// # Errors
/// `NotFound` for an unknown id; `WrongState` for a task not finished; `Storage` on a
/// failure of the server.
pub(crate) fn forget(db: &mut impl Sql, schema: &SchemaName, id: u64) -> Result<(), Error> {
    let q = schema.quoted();
    let mut tx = db.transaction().map_err(pg("begin a forget"))?;
    let state = state_of(&mut tx, schema, id)?;
    if !state.is_final() {
        return Err(Error::WrongState {
            id: TaskId(id),
            state,
            applies: "only a finished task (succeeded, failed, expired or revoked) can be \
                      forgotten",
        });
    }
    tx.execute(
        &format!("DELETE FROM {q}.tasks WHERE id = $1"),
        &[&(id as i64)],
    )
    .map_err(pg("forget a task"))?;
    tx.commit().map_err(pg("commit a forget"))?;
    Ok(())
}

/// Task `id`'s state, its row locked until the transaction ends.
fn state_of(db: &mut impl Sql, schema: &SchemaName, id: u64) -> Result<TaskState, Error> {
    let q = schema.quoted();
    let row = db
        .query_opt(
            &format!("SELECT state FROM {q}.tasks WHERE id = $1 FOR UPDATE"),
            &[&(id as i64)],
        )
        .map_err(pg("lock a task"))?
        .ok_or(Error::NotFound(TaskId(id)))?;
    let code = u8::try_from(row.get::<_, i16>(0)).unwrap_or(u8::MAX);
    TaskState::from_code(code)
        .ok_or_else(|| Error::storage(format!("task {id} has the unknown state code {code}")))
}
