//! Due-task selection and worker slot accounting.
//!
//! The writer owns dispatch: it is the one place that knows when a task becomes ready (an
//! enqueue, a promotion, a retry, a recovery) and which worker slots are free, so claiming
//! happens inside the same group transaction as the event that made a task ready. No thread
//! polls, and an enqueue to an idle worker costs one commit before the task starts.

use std::collections::HashSet;

use crossbeam_channel::Sender;
use redb::ReadableTable;

use crate::error::Error;
use crate::store::record::Origin;
use crate::store::transitions::{QueueMap, Tx};

/// One attempt handed to a worker thread.
#[derive(Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub attempt: u32,
    pub name: String,
    pub queue: String,
    pub payload: Vec<u8>,
    pub max_retries: u32,
    pub enqueued_at_ms: u64,
    pub origin: Option<Origin>,
}

/// What a claimer does with a ready task, given its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// This claimer runs it.
    Run,
    /// No live worker knows the name: park it until one registers it.
    Park,
    /// Another live worker knows the name: leave it for that worker.
    Skip,
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
    /// Attempts handed out and not yet completed or released.
    pub outstanding: usize,
    pub jobs: Sender<Job>,
}

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
            outstanding: 0,
            jobs,
        }
    }

    /// Records that an attempt finished after running `run_us` microseconds.
    pub(crate) fn finished(&mut self, run_us: u64) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.avg_run_us = Some(ewma(self.avg_run_us, run_us as f64));
    }

    /// How many more attempts to hand out now: free threads, plus as many as the threads
    /// finish during one commit cycle (`cycle_us`), up to the prefetch limit.
    pub(crate) fn free(&self, cycle_us: f64) -> usize {
        let ahead = match self.avg_run_us {
            Some(run) => {
                let per_cycle = self.threads as f64 * cycle_us / run.max(1.0);
                (per_cycle.ceil() as usize).min(self.max_prefetch)
            }
            None => 0,
        };
        (self.threads + ahead).saturating_sub(self.outstanding)
    }
}

/// The verdict for `name` when `claimer` asks, given every live worker's names.
pub(crate) fn verdict<'a>(
    name: &str,
    claimer: &HashSet<String>,
    others: impl IntoIterator<Item = &'a HashSet<String>>,
) -> Verdict {
    if claimer.contains(name) {
        Verdict::Run
    } else if others.into_iter().any(|n| n.contains(name)) {
        Verdict::Skip
    } else {
        Verdict::Park
    }
}

/// Skipped entries examined per claim before giving up (bounds the work a worker that shares
/// a queue with pools of other task types can cause).
const SKIP_BUDGET: usize = 1_000;

/// Claims up to `max` ready tasks from `queues`, highest priority first and FIFO within a
/// priority, across all the queues. Expired tasks found on the way end `Expired`; tasks nobody
/// knows are parked.
pub(crate) fn claim(
    tx: &mut Tx<'_>,
    queue_map: &QueueMap,
    queues: &[String],
    max: usize,
    judge: &dyn Fn(&str) -> Verdict,
) -> Result<Vec<Job>, Error> {
    let mut jobs = Vec::new();
    // Per queue: (queue id, exclusive lower bound on (inverted priority, seq) after skips).
    let mut cursors: Vec<(u32, Option<(u8, u64)>)> = queues
        .iter()
        .filter_map(|q| queue_map.id(q))
        .map(|id| (id, None))
        .collect();
    let mut skipped = 0;
    while jobs.len() < max && skipped < SKIP_BUDGET {
        let mut best: Option<(usize, (u8, u64), u64)> = None;
        for (i, &(queue, after)) in cursors.iter().enumerate() {
            let head = match after {
                None => tx
                    .ready
                    .range((queue, 0, 0)..=(queue, u8::MAX, u64::MAX))?
                    .next(),
                Some((p, s)) => tx
                    .ready
                    .range((queue, p, s.saturating_add(1))..=(queue, u8::MAX, u64::MAX))?
                    .next(),
            };
            if let Some(entry) = head {
                let (key, id) = entry?;
                let (_, inv, seq) = key.value();
                if best.is_none_or(|(_, b, _)| (inv, seq) < b) {
                    best = Some((i, (inv, seq), id.value()));
                }
            }
        }
        let Some((cursor, pos, id)) = best else {
            break;
        };
        let Some(mut rec) = tx.get(id)? else {
            // An index entry without a record cannot be run; drop the entry.
            let queue = cursors[cursor].0;
            tx.ready.remove((queue, pos.0, pos.1))?;
            tx.changed = true;
            continue;
        };
        if rec.expires_at_ms.is_some_and(|e| e <= tx.now) {
            tx.expire(id, &mut rec)?;
            continue;
        }
        match judge(&rec.name) {
            Verdict::Run => {
                let payload = tx.start(id, &mut rec)?;
                jobs.push(Job {
                    id,
                    attempt: rec.attempts,
                    queue: queue_map.name(rec.queue).to_string(),
                    name: rec.name,
                    payload,
                    max_retries: rec.max_retries,
                    enqueued_at_ms: rec.enqueued_at_ms,
                    origin: rec.origin,
                });
            }
            Verdict::Park => {
                tracing::warn!(
                    id,
                    name = %rec.name,
                    "no worker has registered this task name; parking it until one does"
                );
                tx.park(id, &mut rec)?;
            }
            Verdict::Skip => {
                skipped += 1;
                cursors[cursor].1 = Some(pos);
            }
        }
    }
    Ok(jobs)
}
