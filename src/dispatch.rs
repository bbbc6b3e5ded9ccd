//! Due-task selection and worker slot accounting.
//!
//! The writer owns dispatch: it is the one place that knows when a task becomes ready (an
//! enqueue, a promotion, a retry, a recovery) and which worker slots are free, so claiming
//! happens inside the same group transaction as the event that made a task ready. No thread
//! polls, and an enqueue to an idle worker costs one commit before the task starts.

use std::collections::HashSet;
use std::sync::Arc;

use crossbeam_channel::Sender;
use redb::ReadableTable;

use crate::error::Error;
use crate::store::catalog::Catalog;
use crate::store::record::{Origin, Slot};
use crate::store::tx::Tx;

/// One attempt handed to a worker thread.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub attempt: u32,
    pub name: String,
    pub queue: Arc<str>,
    pub payload: Vec<u8>,
    pub max_retries: u32,
    pub enqueued_at_ms: u64,
    pub origin: Option<Origin>,
}

/// A live worker pool as the writer sees it.
pub(crate) struct WorkerSlots {
    pub id: u64,
    pub queues: Vec<String>,
    pub names: HashSet<String>,
    threads: usize,
    max_prefetch: usize,
    /// Moving average of how long one attempt runs, in microseconds; `None` until the first
    /// completion (until then nothing is claimed ahead).
    avg_run_us: Option<f64>,
    /// Moving average of the arguments' size, in bytes, of the attempts handed out.
    avg_payload: Option<f64>,
    /// Attempts handed out and not yet completed or released.
    outstanding: usize,
    pub jobs: Sender<Job>,
}

/// The most argument bytes (on average) a pool holds claimed ahead of its threads.
const PREFETCH_BYTES: usize = 8 * 1024 * 1024;

/// Weight of the newest sample in the moving averages.
const EWMA: f64 = 0.2;

/// Folds a sample into a moving average.
pub(crate) fn ewma(avg: Option<f64>, sample: f64) -> f64 {
    avg.map_or(sample, |a| a + EWMA * (sample - a))
}

impl WorkerSlots {
    pub(crate) fn new(
        id: u64,
        queues: Vec<String>,
        names: HashSet<String>,
        threads: usize,
        max_prefetch: usize,
        jobs: Sender<Job>,
    ) -> Self {
        WorkerSlots {
            id,
            queues,
            names,
            threads,
            max_prefetch,
            avg_run_us: None,
            avg_payload: None,
            outstanding: 0,
            jobs,
        }
    }

    /// Records that an attempt with `payload_len` bytes of arguments was handed out.
    pub(crate) fn handed(&mut self, payload_len: usize) {
        self.outstanding += 1;
        self.avg_payload = Some(ewma(self.avg_payload, payload_len as f64));
    }

    /// Records that an attempt finished after running `run_us` microseconds.
    pub(crate) fn finished(&mut self, run_us: u64) {
        self.released();
        self.avg_run_us = Some(ewma(self.avg_run_us, run_us as f64));
    }

    /// Records that an attempt came back without running (released, or never delivered).
    pub(crate) fn released(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// How many more attempts to hand out now: free threads, plus as many as the threads
    /// finish during one commit cycle (`cycle_us`), up to the prefetch limit and to
    /// [`PREFETCH_BYTES`] of arguments held ahead.
    pub(crate) fn free(&self, cycle_us: f64) -> usize {
        let ahead = match self.avg_run_us {
            Some(run) => {
                let per_cycle = self.threads as f64 * cycle_us / run.max(1.0);
                let by_bytes = PREFETCH_BYTES as f64 / self.avg_payload.unwrap_or(1.0).max(1.0);
                (per_cycle.min(by_bytes).ceil() as usize).min(self.max_prefetch)
            }
            None => 0,
        };
        (self.threads + ahead).saturating_sub(self.outstanding)
    }
}

/// Claims up to `max` ready tasks that have one of `names` from `queues`: highest priority
/// first, FIFO within a priority, across all of them. Expired tasks met on the way end
/// `Expired`. Tasks of other names are never looked at: they sit under other keys.
pub(crate) fn claim(
    tx: &mut Tx<'_>,
    catalog: &Catalog,
    queues: &[String],
    names: &HashSet<String>,
    max: usize,
) -> Result<Vec<Job>, Error> {
    let pairs: Vec<(u32, u32)> = queues
        .iter()
        .filter_map(|q| catalog.queues.id(q))
        .flat_map(|q| {
            names
                .iter()
                .filter_map(|n| catalog.names.id(n))
                .map(move |n| (q, n))
        })
        .collect();
    let mut jobs = Vec::new();
    while jobs.len() < max {
        // The next `want` tasks in dispatch order are among the first `want` of each pair.
        let want = max - jobs.len();
        // (position, pair, task id, whether the entry is still only in `pending_ready`)
        let mut candidates: Vec<((u8, u64), usize, u64, bool)> = Vec::new();
        for (i, &(q, n)) in pairs.iter().enumerate() {
            let range = (q, n, 0, 0)..=(q, n, u8::MAX, u64::MAX);
            for entry in tx.ready()?.range(range.clone())?.take(want) {
                let (key, id) = entry?;
                let (_, _, inv, seq) = key.value();
                candidates.push(((inv, seq), i, id.value(), false));
            }
            for (&(_, _, inv, seq), &id) in tx.pending_ready.range(range).take(want) {
                candidates.push(((inv, seq), i, id, true));
            }
        }
        if candidates.is_empty() {
            break;
        }
        candidates.sort_unstable_by_key(|c| c.0);
        candidates.truncate(want);
        // Each pair's share of the stored candidates is a run of consecutive index entries:
        // take them out in one sweep per pair instead of one tree descent per task.
        for (i, &(q, n)) in pairs.iter().enumerate() {
            let mut mine = candidates.iter().filter(|c| c.1 == i && !c.3).map(|c| c.0);
            let Some(first) = mine.next() else {
                continue;
            };
            let last = mine.next_back().unwrap_or(first);
            tx.ready()?
                .retain_in((q, n, first.0, first.1)..=(q, n, last.0, last.1), |_, _| {
                    false
                })?;
            tx.changed = true;
        }
        for (pos, i, id, pending) in candidates {
            if pending {
                let (q, n) = pairs[i];
                tx.pending_ready.remove(&(q, n, pos.0, pos.1));
            }
            if let Some(job) = examine(tx, catalog, pos.1, id)? {
                jobs.push(job);
            }
        }
    }
    Ok(jobs)
}

/// Starts the ready task `id` (index entry at `seq`, already removed by the caller), or ends
/// it `Expired` if its expiry has passed.
fn examine(tx: &mut Tx<'_>, catalog: &Catalog, seq: u64, id: u64) -> Result<Option<Job>, Error> {
    let Some(mut rec) = tx.get(id)? else {
        // An index entry without a record cannot be run; it is dropped.
        return Ok(None);
    };
    debug_assert_eq!(rec.slot, Slot::Ready { seq });
    rec.slot = Slot::None;
    if rec.expires_at_ms.is_some_and(|e| e <= tx.now) {
        tx.expire(id, &mut rec)?;
        return Ok(None);
    }
    let payload = tx.start(id, &mut rec)?;
    Ok(Some(Job {
        id,
        attempt: rec.attempts,
        queue: catalog.queues.name(rec.queue),
        name: rec.name,
        payload,
        max_retries: rec.max_retries,
        enqueued_at_ms: rec.enqueued_at_ms,
        origin: rec.origin,
    }))
}
