//! The thread behind group commit on PostgreSQL (`group` for enqueues, `completer` for
//! attempt reports): it owns a connection and, each time it comes back from a commit, takes
//! every request waiting — no timed gathering: requests that arrive during a commit make
//! up the next batch — and hands the batch to its `apply`, which answers each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::error::Error;
use crate::store::pg::migrate::{SchemaName, connect_for};
use crate::store::pg::sql::Conn;
use crate::store::pg::tally::PgMetrics;

/// How much batching happened (for tests and metrics).
#[derive(Debug, Default)]
pub(crate) struct Counts {
    /// Batches applied.
    pub(crate) groups: AtomicU64,
    /// Requests answered by them.
    pub(crate) requests: AtomicU64,
}

/// A request, and where its answer goes.
pub(crate) type Asked<R, A> = (R, Sender<Result<A, Error>>);

/// A batching thread, and how to reach it. Dropping it answers what is queued, then stops
/// the thread.
pub(crate) struct Batcher<R, A> {
    requests: Option<Sender<Asked<R, A>>>,
    thread: Option<JoinHandle<()>>,
    counts: Arc<Counts>,
}

impl<R: Send + 'static, A: Send + 'static> Batcher<R, A> {
    /// Connects for `schema` at `url` and starts the thread `name`, which applies each
    /// batch with `apply` (on a connection reopened first if the server closed it).
    ///
    /// # Errors
    /// `Storage` if the server cannot be reached or the thread cannot start.
    pub(crate) fn start(
        name: &str,
        (url, schema): (&str, SchemaName),
        metrics: Option<&Arc<PgMetrics>>,
        mut apply: impl FnMut(&mut Conn, Vec<Asked<R, A>>) + Send + 'static,
    ) -> Result<Batcher<R, A>, Error> {
        let mut client = Conn::new(connect_for(url, &schema, "")?);
        if let Some(metrics) = metrics {
            client = client.counting(metrics);
        }
        let url = url.to_string();
        let (tx, rx) = crossbeam_channel::unbounded::<Asked<R, A>>();
        let counts = Arc::new(Counts::default());
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    client.reopen_if_closed(&url, &schema, "");
                    let batch: Vec<_> = std::iter::once(first).chain(rx.try_iter()).collect();
                    thread_counts.groups.fetch_add(1, Ordering::Relaxed);
                    thread_counts
                        .requests
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    apply(&mut client, batch);
                }
            })
            .map_err(|e| Error::storage_from(&format!("cannot start the thread {name}"), e))?;
        Ok(Batcher {
            requests: Some(tx),
            thread: Some(thread),
            counts,
        })
    }

    /// Sends `request` and waits for its answer.
    ///
    /// # Errors
    /// The answer's error; `Closed` once the batcher is stopping.
    pub(crate) fn ask(&self, request: R) -> Result<A, Error> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .as_ref()
            .ok_or(Error::Closed)?
            .send((request, reply))
            .map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }

    /// How much batching happened.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn counts(&self) -> &Counts {
        &self.counts
    }
}

impl<R, A> Drop for Batcher<R, A> {
    fn drop(&mut self) {
        // The thread answers what is queued, then sees the channel closed.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
