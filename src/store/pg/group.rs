//! Group commit on PostgreSQL: concurrent enqueues share one transaction, and so one commit
//! (one flush of the server's WAL), as they share one sync in the file engine. A thread owns
//! a connection; it takes every request waiting when it comes back from a commit — no timed
//! gathering: requests that arrive during a commit make up the next group — inserts all
//! their rows in one statement, commits, and answers each caller with its own ids, in its
//! own order. A group that fails fails all its callers with the same error, and stores
//! nothing of any of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::error::Error;
use crate::store::pg::claim::NewRow;
use crate::store::pg::migrate::{SchemaName, connect_for, pg, reopen_if_closed};
use crate::store::pg::unique::insert_new;

/// One caller's rows, and where its answer goes.
struct Request {
    rows: Vec<NewRow>,
    /// When the caller enqueued, on the spool's clock (for unique keys' periods).
    now_ms: u64,
    reply: Sender<Result<Vec<(u64, bool)>, Error>>,
}

/// The group-commit thread of one process, and how to reach it.
pub(crate) struct Grouper {
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    /// Transactions committed, and requests answered by them (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    counts: Arc<Counts>,
}

/// How much grouping happened (for tests and metrics).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) groups: AtomicU64,
    pub(crate) requests: AtomicU64,
}

impl Grouper {
    /// Connects and starts the thread.
    ///
    /// # Errors
    /// `Storage` if the server cannot be reached or the thread cannot start.
    pub(crate) fn start(url: &str, schema: SchemaName) -> Result<Grouper, Error> {
        let client = connect_for(url, &schema, "")?;
        let url = url.to_string();
        let (tx, rx) = crossbeam_channel::unbounded();
        let counts = Arc::new(Counts::default());
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name("taskspool-pg-group".into())
            .spawn(move || run(client, (&url, &schema), &rx, &thread_counts))
            .map_err(|e| Error::storage_from("cannot start the PostgreSQL group thread", e))?;
        Ok(Grouper {
            requests: Some(tx),
            thread: Some(thread),
            counts,
        })
    }

    /// Inserts `rows`, enqueued at `now_ms`; returns for each its id and whether it is a
    /// duplicate of a task holding its unique key, once the transaction that holds them
    /// committed.
    ///
    /// # Errors
    /// `Storage` if the group failed (nothing of it was stored); `Closed` once the grouper
    /// is stopping.
    pub(crate) fn insert(&self, rows: Vec<NewRow>, now_ms: u64) -> Result<Vec<(u64, bool)>, Error> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .as_ref()
            .ok_or(Error::Closed)?
            .send(Request {
                rows,
                now_ms,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    #[cfg(test)]
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl Drop for Grouper {
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
    rx: &Receiver<Request>,
    counts: &Counts,
) {
    while let Ok(first) = rx.recv() {
        reopen_if_closed(&mut client, url, schema, "");
        // Every request waiting now; their rows, moved into one batch in turn.
        let mut rows = Vec::new();
        let mut replies = Vec::new();
        let mut now_ms = 0;
        for request in std::iter::once(first).chain(rx.try_iter()) {
            replies.push((request.rows.len(), request.reply));
            rows.extend(request.rows);
            now_ms = now_ms.max(request.now_ms);
        }
        let result = commit(&mut client, schema, &rows, now_ms);
        counts.groups.fetch_add(1, Ordering::Relaxed);
        counts
            .requests
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        match result {
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
}

/// One transaction holding every request's rows.
fn commit(
    client: &mut postgres::Client,
    schema: &SchemaName,
    rows: &[NewRow],
    now_ms: u64,
) -> Result<Vec<(u64, bool)>, Error> {
    let mut tx = client.transaction().map_err(pg("begin a group"))?;
    let ids = insert_new(&mut tx, schema, rows, now_ms)?;
    tx.commit().map_err(pg("commit a group"))?;
    Ok(ids)
}
