//! Flow control on PostgreSQL, as far as it is built: paused queues, a row each in
//! `paused_queues`, which every process's claims pass over (`claim`) until the queue is
//! resumed; a resume notifies the wake channel, so every dispatcher claims again at once.
//! Rate and concurrency limits are not built yet (they answer `Unsupported`).

use postgres::GenericClient;

use crate::error::Error;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::notify_wake;

/// Pauses (`paused`) or resumes `queue`; returns whether that changed anything.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn set_paused(
    db: &mut impl GenericClient,
    schema: &SchemaName,
    queue: &str,
    paused: bool,
) -> Result<bool, Error> {
    let q = schema.quoted();
    let mut tx = db.transaction().map_err(pg("begin a queue's pause"))?;
    let changed = if paused {
        tx.execute(
            &format!("INSERT INTO {q}.paused_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&queue],
        )
        .map_err(pg("pause a queue"))?
    } else {
        let resumed = tx
            .execute(
                &format!("DELETE FROM {q}.paused_queues WHERE queue = $1"),
                &[&queue],
            )
            .map_err(pg("resume a queue"))?;
        if resumed > 0 {
            notify_wake(&mut tx, schema)?;
        }
        resumed
    };
    tx.commit().map_err(pg("commit a queue's pause"))?;
    Ok(changed > 0)
}

/// The paused queues, by name.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn paused(
    db: &mut impl GenericClient,
    schema: &SchemaName,
) -> Result<Vec<String>, Error> {
    let q = schema.quoted();
    Ok(db
        .query(
            &format!("SELECT queue FROM {q}.paused_queues ORDER BY queue COLLATE \"C\""),
            &[],
        )
        .map_err(pg("read the paused queues"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
