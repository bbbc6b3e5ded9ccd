//! Batched completions on PostgreSQL: concurrent attempt reports share one transaction, and
//! so one commit (one flush of the server's WAL), as enqueues do (`group`). A thread owns a
//! connection and takes every report waiting when it comes back from a commit — no timed
//! gathering — applies them in ascending task ids (the order every transaction locks tasks
//! in: a task, then the steps after it), commits once, and answers each. Should the group
//! fail — one report's error, a deadlock with another process's transaction, a cut
//! connection — it is rolled back and each report is applied again in a transaction of its
//! own, so that each caller hears its own answer. Reports are fenced to their attempts, so
//! applying one again after a failed commit changes nothing twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Error;
use crate::model::TaskState;
use crate::store::pg::complete::{Ending, Report, complete, complete_in};
use crate::store::pg::migrate::{SchemaName, connect_for, pg, reopen_if_closed};

/// One attempt's report, and where its answer goes.
pub(crate) struct Done {
    /// The task, its attempt and the process that ran it (the fence).
    pub(crate) attempt: (u64, u32, u64),
    pub(crate) now_ms: u64,
    pub(crate) ending: Ending,
    pub(crate) progress: Option<Vec<u8>>,
    /// What the attempt returned, in a few words.
    pub(crate) returned: String,
}

impl Done {
    fn report(&self) -> Report<'_> {
        Report {
            ending: &self.ending,
            progress: self.progress.as_deref(),
            returned: &self.returned,
        }
    }
}

type Answer = Result<Option<TaskState>, Error>;

/// The completion thread of one process, and how to reach it.
pub(crate) struct Completer {
    requests: Option<Sender<(Done, Sender<Answer>)>>,
    thread: Option<JoinHandle<()>>,
    /// Transactions committed, and reports applied by them (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) counts: Arc<(AtomicU64, AtomicU64)>,
}

impl Completer {
    /// Connects and starts the thread.
    ///
    /// # Errors
    /// `Storage` if the server cannot be reached or the thread cannot start.
    pub(crate) fn start(url: &str, schema: SchemaName) -> Result<Completer, Error> {
        let client = connect_for(url, &schema, "")?;
        let url = url.to_string();
        let (tx, rx) = crossbeam_channel::unbounded();
        let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name("taskspool-pg-complete".into())
            .spawn(move || run(client, (&url, &schema), &rx, &thread_counts))
            .map_err(|e| Error::storage_from("cannot start the PostgreSQL completion thread", e))?;
        Ok(Completer {
            requests: Some(tx),
            thread: Some(thread),
            counts,
        })
    }

    /// Applies `done` and returns the task's new state (`None`: the report was not of the
    /// task's current attempt here, and changed nothing) once it is committed.
    ///
    /// # Errors
    /// `Storage` if it could not be applied (nothing of it was); `Closed` once the completer
    /// is stopping.
    pub(crate) fn complete(&self, done: Done) -> Answer {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .as_ref()
            .ok_or(Error::Closed)?
            .send((done, reply))
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        // The thread answers what is queued, then sees the channel closed.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut client: postgres::Client,
    (url, schema): (&str, &SchemaName),
    rx: &Receiver<(Done, Sender<Answer>)>,
    counts: &(AtomicU64, AtomicU64),
) {
    while let Ok(first) = rx.recv() {
        reopen_if_closed(&mut client, url, schema, "");
        let mut group: Vec<(Done, Sender<Answer>)> =
            std::iter::once(first).chain(rx.try_iter()).collect();
        group.sort_by_key(|(done, _)| done.attempt.0);
        counts.0.fetch_add(1, Ordering::Relaxed);
        counts.1.fetch_add(group.len() as u64, Ordering::Relaxed);
        if group.len() > 1
            && let Ok(states) = together(&mut client, schema, &group)
        {
            for ((_, reply), state) in group.iter().zip(states) {
                let _ = reply.send(Ok(state));
            }
            continue;
        }
        for (done, reply) in &group {
            let mut answer = complete(
                &mut client,
                schema,
                done.attempt,
                done.now_ms,
                done.report(),
            );
            if answer.is_err() && client.is_closed() {
                // Fenced: applied again on a new connection, it changes nothing twice.
                reopen_if_closed(&mut client, url, schema, "");
                answer = complete(
                    &mut client,
                    schema,
                    done.attempt,
                    done.now_ms,
                    done.report(),
                );
            }
            let _ = reply.send(answer);
        }
    }
}

/// Every report of `group` in one transaction.
fn together(
    client: &mut postgres::Client,
    schema: &SchemaName,
    group: &[(Done, Sender<Answer>)],
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
