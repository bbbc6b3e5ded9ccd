//! Revoking on PostgreSQL, exactly, whichever process runs the task: a waiting task ends
//! `Revoked` in the revoke's transaction and never runs; a running one is marked, its
//! owner told on the schema's `stop` channel (to ask its attempt to stop), and however that
//! attempt ends — returned, or rescued after its process died — the task ends `Revoked`.

use postgres::GenericClient;

use crate::error::Error;
use crate::model::{AttemptErrorKind, Revoke, TaskState};
use crate::store::pg::complete::{end, stop_channel};
use crate::store::pg::migrate::{SchemaName, pg};

/// Revokes task `id` at `now_ms`; `None` for an unknown id.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn revoke(
    db: &mut impl GenericClient,
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
            &format!("SELECT state, attempts FROM {q}.tasks WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .map_err(pg("lock a task to revoke"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let code = u8::try_from(row.get::<_, i16>(0)).unwrap_or(u8::MAX);
    let attempts: i32 = row.get(1);
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
                &[&stop_channel(schema), &id.to_string()],
            )
            .map_err(pg("notify the running attempt's owner"))?;
            Revoke::Cancelling
        }
        _ => {
            end(
                &mut tx,
                schema,
                id,
                (attempts, now),
                TaskState::Revoked,
                AttemptErrorKind::Revoked,
                "revoked before it ran",
            )?;
            Revoke::Revoked
        }
    };
    tx.commit().map_err(pg("commit a revoke"))?;
    Ok(Some(answer))
}
