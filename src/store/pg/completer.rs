//! Batched completions on PostgreSQL: concurrent attempt reports share one transaction, and
//! so one commit (one flush of the server's WAL), as enqueues do (`group`). The batching
//! thread (`batch`) takes every report waiting when it comes back from a commit; they are
//! applied in ascending task ids (the order every transaction locks tasks in: a task, then
//! the steps after it), committed once, and each is answered. Should the group fail — one
//! report's error, a deadlock with another process's transaction, a cut connection — it is
//! rolled back and each report is applied again in a transaction of its own, so that each
//! caller hears its own answer. Reports are fenced to their attempts, so applying one again
//! after a failed commit changes nothing twice.

use std::sync::Arc;

use crate::error::Error;
use crate::model::TaskState;
#[cfg(test)]
use crate::store::pg::batch::Counts;
use crate::store::pg::batch::{Asked, Batcher};
use crate::store::pg::complete::{Ending, Report, complete, complete_in};
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::{Conn, Sql};
use crate::store::pg::tally::PgMetrics;

/// One attempt's report.
#[derive(Clone)]
pub(crate) struct Done {
    /// The task, its attempt and the process that ran it (the fence).
    pub(crate) attempt: (u64, u32, u64),
    pub(crate) now_ms: u64,
    pub(crate) ending: Ending,
    pub(crate) progress: Option<Vec<u8>>,
    /// What the attempt returned, in a few words.
    pub(crate) returned: String,
    /// How long it ran, in µs.
    pub(crate) run_us: u64,
}

impl Done {
    fn report(&self) -> Report<'_> {
        Report {
            ending: &self.ending,
            progress: self.progress.as_deref(),
            returned: &self.returned,
            run_us: self.run_us,
        }
    }
}

/// The completion thread of one process, and how to reach it.
pub(crate) struct Completer(Batcher<Done, Option<TaskState>>);

impl Completer {
    /// Connects and starts the thread.
    ///
    /// # Errors
    /// `Storage` if the server cannot be reached or the thread cannot start.
    pub(crate) fn start(
        url: &str,
        schema: SchemaName,
        metrics: Option<&Arc<PgMetrics>>,
    ) -> Result<Completer, Error> {
        let (reopen_url, group_schema) = (url.to_string(), schema.clone());
        Batcher::start(
            "taskspool-pg-complete",
            (url, schema),
            metrics,
            move |client, batch| {
                answer(client, (&reopen_url, &group_schema), batch);
            },
        )
        .map(Completer)
    }

    /// Applies `done` and returns the task's new state (`None`: the report was not of the
    /// task's current attempt here, and changed nothing) once it is committed.
    ///
    /// # Errors
    /// `Storage` if it could not be applied (nothing of it was); `Closed` once the completer
    /// is stopping.
    pub(crate) fn complete(&self, done: Done) -> Result<Option<TaskState>, Error> {
        self.0.ask(done)
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> &Counts {
        self.0.counts()
    }
}

/// Applies a batch of reports together, or, if that fails, one at a time; answers each.
fn answer(
    client: &mut Conn,
    (url, schema): (&str, &SchemaName),
    mut group: Vec<Asked<Done, Option<TaskState>>>,
) {
    group.sort_by_key(|(done, _)| done.attempt.0);
    if group.len() > 1
        && let Ok(states) = together(client, schema, &group)
    {
        for ((_, reply), state) in group.iter().zip(states) {
            let _ = reply.send(Ok(state));
        }
        return;
    }
    for (done, reply) in &group {
        let mut answer = complete(client, schema, done.attempt, done.now_ms, done.report());
        if answer.is_err() && client.is_closed() {
            // Fenced: applied again on a new connection, it changes nothing twice.
            client.reopen_if_closed(url, schema, "");
            answer = complete(client, schema, done.attempt, done.now_ms, done.report());
        }
        let _ = reply.send(answer);
    }
}

/// Every report of `group` in one transaction.
fn together(
    client: &mut Conn,
    schema: &SchemaName,
    group: &[Asked<Done, Option<TaskState>>],
) -> Result<Vec<Option<TaskState>>, Error> {
    let mut tx = client
        .transaction()
        .map_err(pg("begin a group of completions"))?;
    let mut states = Vec::with_capacity(group.len());
    for (done, _) in group {
        states.push(complete_in(
            &mut tx,
            schema,
            done.attempt,
            done.now_ms,
            done.report(),
        )?);
    }
    tx.commit().map_err(pg("commit a group of completions"))?;
    Ok(states)
}
