//! Group commit on PostgreSQL: concurrent enqueues share one transaction, and so one commit
//! (one flush of the server's WAL), as they share one sync in the file engine. The batching
//! thread (`batch`) takes every request waiting when it comes back from a commit; all
//! their rows are inserted in one statement, committed, and each caller is answered with
//! its own ids, in its own order. A group that fails fails all its callers with the same
//! error, and stores nothing of any of them.

use std::sync::Arc;

use crate::error::Error;
#[cfg(test)]
use crate::store::pg::batch::Counts;
use crate::store::pg::batch::{Asked, Batcher};
use crate::store::pg::claim::NewRow;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::{Conn, Sql};
use crate::store::pg::tally::PgMetrics;
use crate::store::pg::unique::insert_new;

/// One caller's rows, and when it enqueued them, on the spool's clock (for unique keys'
/// periods).
type Request = (Vec<NewRow>, u64);

/// The group-commit thread of one process, and how to reach it.
pub(crate) struct Grouper(Batcher<Request, Vec<(u64, bool)>>);

impl Grouper {
    /// Connects and starts the thread.
    ///
    /// # Errors
    /// `Storage` if the server cannot be reached or the thread cannot start.
    pub(crate) fn start(
        url: &str,
        schema: SchemaName,
        metrics: Option<&Arc<PgMetrics>>,
    ) -> Result<Grouper, Error> {
        let group_schema = schema.clone();
        Batcher::start(
            "taskspool-pg-group",
            (url, schema),
            metrics,
            move |client, batch| {
                answer(client, &group_schema, batch);
            },
        )
        .map(Grouper)
    }

    /// Inserts `rows`, enqueued at `now_ms`; returns for each its id and whether it is a
    /// duplicate of a task holding its unique key, once the transaction that holds them
    /// committed.
    ///
    /// # Errors
    /// `Storage` if the group failed (nothing of it was stored); `Closed` once the grouper
    /// is stopping.
    pub(crate) fn insert(&self, rows: Vec<NewRow>, now_ms: u64) -> Result<Vec<(u64, bool)>, Error> {
        self.0.ask((rows, now_ms))
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> &Counts {
        self.0.counts()
    }
}

/// Inserts every request's rows in one transaction and answers each.
fn answer(client: &mut Conn, schema: &SchemaName, batch: Vec<Asked<Request, Vec<(u64, bool)>>>) {
    // Their rows, moved into one batch in turn.
    let mut rows = Vec::new();
    let mut replies = Vec::new();
    let mut now_ms = 0;
    for ((mine, at), reply) in batch {
        replies.push((mine.len(), reply));
        rows.extend(mine);
        now_ms = now_ms.max(at);
    }
    match commit(client, schema, &rows, now_ms) {
        Ok(mut ids) => {
            // One answer per row, and the rows are the requests' in turn.
            for (count, reply) in replies.iter().rev() {
                let mine = ids.split_off(ids.len().saturating_sub(*count));
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for (_, reply) in &replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One transaction holding every request's rows.
fn commit(
    client: &mut Conn,
    schema: &SchemaName,
    rows: &[NewRow],
    now_ms: u64,
) -> Result<Vec<(u64, bool)>, Error> {
    let mut tx = client.transaction().map_err(pg("begin a group"))?;
    let ids = insert_new(&mut tx, schema, rows, now_ms)?;
    tx.commit().map_err(pg("commit a group"))?;
    Ok(ids)
}
