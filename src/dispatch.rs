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
use crate::store::record::{Origin, Slot};
use crate::store::transitions::{QueueMap, Tx};

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
        // The next `want` tasks in dispatch order are among the first `want` of each queue.
        let want = max - jobs.len();
        let mut candidates: Vec<((u8, u64), usize, u64)> = Vec::new();
        for (i, &(queue, after)) in cursors.iter().enumerate() {
            let from = match after {
                None => (queue, 0, 0),
                Some((p, s)) => (queue, p, s.saturating_add(1)),
            };
            for entry in tx
                .ready
                .range(from..=(queue, u8::MAX, u64::MAX))?
                .take(want)
            {
                let (key, id) = entry?;
                let (_, inv, seq) = key.value();
                candidates.push(((inv, seq), i, id.value()));
            }
        }
        if candidates.is_empty() {
            break;
        }
        candidates.sort_unstable_by_key(|c| c.0);
        candidates.truncate(want);
        // Each queue's share of the candidates is a run of consecutive index entries: take
        // them out in one sweep per queue instead of one tree descent per task.
        for (i, cursor) in cursors.iter_mut().enumerate() {
            let mut mine = candidates.iter().filter(|c| c.1 == i).map(|c| c.0);
            let Some(first) = mine.next() else {
                continue;
            };
            let last = mine.next_back().unwrap_or(first);
            let queue = cursor.0;
            tx.ready.retain_in(
                (queue, first.0, first.1)..=(queue, last.0, last.1),
                |_, _| false,
            )?;
            tx.changed = true;
            cursor.1 = Some(last);
        }
        for (pos, cursor, id) in candidates {
            let key = (cursors[cursor].0, pos.0, pos.1);
            match examine(tx, queue_map, judge, key, id)? {
                Examined::Claimed(job) => jobs.push(job),
                Examined::Skipped => {
                    // Left for another worker: back into the index where it was.
                    tx.ready.insert(key, id)?;
                    skipped += 1;
                }
                Examined::Removed => {}
            }
        }
    }
    Ok(jobs)
}

/// What happened to one ready task examined by a claim.
enum Examined {
    /// Handed to the claimer.
    Claimed(Job),
    /// Left for another worker.
    Skipped,
    /// Expired, parked, or a dangling index entry removed.
    Removed,
}

/// Claims, expires, parks or skips the ready task at `key`, whose index entry the caller has
/// already removed.
fn examine(
    tx: &mut Tx<'_>,
    queue_map: &QueueMap,
    judge: &dyn Fn(&str) -> Verdict,
    key: (u32, u8, u64),
    id: u64,
) -> Result<Examined, Error> {
    let Some(mut rec) = tx.get(id)? else {
        // An index entry without a record cannot be run; it is dropped.
        return Ok(Examined::Removed);
    };
    debug_assert_eq!(rec.slot, Slot::Ready { seq: key.2 });
    rec.slot = Slot::None;
    if rec.expires_at_ms.is_some_and(|e| e <= tx.now) {
        tx.expire(id, &mut rec)?;
        return Ok(Examined::Removed);
    }
    Ok(match judge(&rec.name) {
        Verdict::Run => {
            let payload = tx.start(id, &mut rec)?;
            Examined::Claimed(Job {
                id,
                attempt: rec.attempts,
                queue: queue_map.name(rec.queue),
                name: rec.name,
                payload,
                max_retries: rec.max_retries,
                enqueued_at_ms: rec.enqueued_at_ms,
                origin: rec.origin,
            })
        }
        Verdict::Park => {
            tracing::warn!(
                id,
                name = %rec.name,
                "no worker has registered this task name; parking it until one does"
            );
            tx.park(id, &mut rec)?;
            Examined::Removed
        }
        Verdict::Skip => Examined::Skipped,
    })
}
