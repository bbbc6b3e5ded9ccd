//! The schema's notification channels, as a transaction notifies them (heard when it
//! commits): `wake` (work may be ready) and `done` (a task reached its final state, with its
//! events). The `stop` channel is notified by a revoke (`control`); the other events by
//! `events`.

use crate::store::pg::sql::Sql;

use crate::error::Error;
use crate::store::pg::events::{final_kind, listening, task_event};
use crate::store::pg::migrate::{SchemaName, pg};

/// Notifies the wake-up channel (heard when the transaction commits): work may be ready.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn notify_wake(db: &mut impl Sql, schema: &SchemaName) -> Result<(), Error> {
    db.execute("SELECT pg_notify($1, '')", &[&schema.wake_channel()])
        .map_err(pg("notify the wake-up channel"))?;
    Ok(())
}

/// Notifies the `done` channel of each of `ids` (heard when the transaction commits), and
/// their final states' events if anyone listens (`store::pg::events`): call it once they
/// are final.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn notify_done(
    db: &mut impl Sql,
    schema: &SchemaName,
    ids: &[i64],
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let event = task_event(&q, "t", &final_kind("t"), "t.finished_at_ms", true);
    db.execute(
        &format!(
            "WITH done AS (
                 SELECT pg_notify($1, id::text) FROM unnest($2::int8[]) AS id
             ), told AS (
                 SELECT pg_notify($3, {event})
                 FROM (SELECT * FROM {q}.tasks WHERE id = ANY($2) ORDER BY id) AS t
                 WHERE {listening}
             )
             SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM told)",
            listening = listening(&q)
        ),
        &[&schema.done_channel(), &ids, &schema.events_channel()],
    )
    .map_err(pg("notify final states"))?;
    Ok(())
}
