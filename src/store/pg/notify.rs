//! The schema's notification channels, as a transaction notifies them (heard when it
//! commits): `wake` (work may be ready) and `done` (a task reached its final state). The
//! `stop` channel is notified by a revoke (`control`).

use postgres::GenericClient;

use crate::error::Error;
use crate::store::pg::migrate::{SchemaName, pg};

/// Notifies the wake-up channel (heard when the transaction commits): work may be ready.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn notify_wake(db: &mut impl GenericClient, schema: &SchemaName) -> Result<(), Error> {
    db.execute("SELECT pg_notify($1, '')", &[&schema.wake_channel()])
        .map_err(pg("notify the wake-up channel"))?;
    Ok(())
}

/// Notifies the `done` channel of each of `ids` (heard when the transaction commits).
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn notify_done(
    db: &mut impl GenericClient,
    schema: &SchemaName,
    ids: &[i64],
) -> Result<(), Error> {
    if !ids.is_empty() {
        db.execute(
            "SELECT pg_notify($1, id::text) FROM unnest($2::int8[]) AS id",
            &[&schema.done_channel(), &ids],
        )
        .map_err(pg("notify final states"))?;
    }
    Ok(())
}
