//! Metrics per (queue, task name): what happened since the spool opened, what happened over
//! the last minutes, and how long attempts ran — in [`Stats::metrics`](crate::Stats) and as
//! Prometheus text (`prometheus`).
//!
//! The writer counts each durable group's transitions and attempt run times into
//! [`Metrics`] once the group is durable (a few integers per task, no string); readers copy
//! them out under a short lock and never wait for the writer's group.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::model::TaskState;

/// Upper bounds of the run-time histogram's buckets, in µs (the last bucket is unbounded).
pub const RUNTIME_BUCKETS_US: [u64; 10] = [
    100,
    1_000,
    10_000,
    100_000,
    500_000,
    1_000_000,
    5_000_000,
    10_000_000,
    60_000_000,
    600_000_000,
];

/// The width of one slot of the recent-activity ring, in ms.
const SLOT_MS: u64 = 5_000;
/// Slots kept: 15 minutes.
const SLOTS: usize = 180;

/// Tasks that succeeded and tasks that failed for good over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Outcomes {
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that failed for good.
    pub failed: u64,
}

/// How long the attempts of one task type ran: a histogram, cumulative like Prometheus's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunTimes {
    /// For each bound of [`RUNTIME_BUCKETS_US`], how many attempts ran at most that long.
    pub at_most_us: Vec<(u64, u64)>,
    /// How many attempts ran (the unbounded bucket).
    pub count: u64,
    /// Their run times added up, in µs.
    pub sum_us: u64,
}

/// The metrics of one (queue, task name) since the spool opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskMetrics {
    /// The queue.
    pub queue: String,
    /// The task name.
    pub name: String,
    /// Tasks stored (enqueued, fired, or workflow steps and callbacks).
    pub enqueued: u64,
    /// Tasks that succeeded.
    pub succeeded: u64,
    /// Tasks that failed for good.
    pub failed: u64,
    /// Attempts that failed and were retried later.
    pub retried: u64,
    /// Tasks that expired before they started.
    pub expired: u64,
    /// Tasks revoked.
    pub revoked: u64,
    /// Outcomes over the last minute, five minutes and fifteen minutes (divide by 60, 300
    /// or 900 for a rate per second).
    pub last_1m: Outcomes,
    /// Over the last five minutes.
    pub last_5m: Outcomes,
    /// Over the last fifteen minutes.
    pub last_15m: Outcomes,
    /// Per minute over the last fifteen minutes, oldest first (15 entries; the last one is
    /// the minute up to now).
    #[serde(default)]
    pub per_minute: Vec<Outcomes>,
    /// How long attempts ran.
    pub runtime: RunTimes,
}

/// What one transaction counted, per (queue id, name id), for [`Metrics::record`]: tasks
/// entering each state, and its attempts' run times as histogram buckets. A handful of keys
/// per transaction, so a vector searched from its newest entry beats hashing per task.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    keys: Vec<((u32, u32), Tally)>,
}

/// The counts of one key: in one transaction, and added up in its series. A task stored in
/// a waiting state (ready, scheduled, waiting) counts as enqueued; only final states and
/// `retrying` are counted as entered later (see `store::by_state`).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    entered: [u64; TaskState::ALL.len()],
    buckets: [u64; RUNTIME_BUCKETS_US.len()],
    runs: u64,
    run_sum_us: u64,
}

impl Tally {
    fn count(&self, state: TaskState) -> u64 {
        self.entered[usize::from(state.code())]
    }

    fn enqueued(&self) -> u64 {
        [TaskState::Ready, TaskState::Scheduled, TaskState::Waiting]
            .into_iter()
            .map(|s| self.count(s))
            .sum()
    }

    fn add(&mut self, other: &Tally) {
        for (total, n) in self.entered.iter_mut().zip(other.entered) {
            *total += n;
        }
        for (total, n) in self.buckets.iter_mut().zip(other.buckets) {
            *total += n;
        }
        self.runs += other.runs;
        self.run_sum_us = self.run_sum_us.saturating_add(other.run_sum_us);
    }
}

impl Samples {
    fn tally(&mut self, key: (u32, u32)) -> &mut Tally {
        let at = match self.keys.iter().rposition(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.keys.push((key, Tally::default()));
                self.keys.len() - 1
            }
        };
        &mut self.keys[at].1
    }

    /// A task of (queue id `q`, name id `n`) entered `state` (stored in a waiting state:
    /// enqueued).
    pub(crate) fn entered(&mut self, q: u32, n: u32, state: TaskState) {
        self.entered_times(q, n, state, 1);
    }

    /// `times` tasks of (`q`, `n`) entered `state`.
    pub(crate) fn entered_times(&mut self, q: u32, n: u32, state: TaskState, times: u64) {
        self.tally((q, n)).entered[usize::from(state.code())] += times;
    }

    /// An attempt of (`q`, `n`) ran `us` µs.
    pub(crate) fn ran(&mut self, q: u32, n: u32, us: u64) {
        let tally = self.tally((q, n));
        if let Some(i) = RUNTIME_BUCKETS_US.iter().position(|&le| us <= le) {
            tally.buckets[i] += 1;
        }
        tally.runs += 1;
        tally.run_sum_us = tally.run_sum_us.saturating_add(us);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One series: the counts of a (queue, name).
#[derive(Debug, Clone)]
struct Series {
    /// Everything counted since the spool opened.
    total: Tally,
    /// Outcomes per slot of `SLOT_MS`, slot `n` at `ring[n % SLOTS]`.
    ring: Box<[(u64, u64); SLOTS]>,
    /// The newest slot written.
    slot: u64,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            total: Tally::default(),
            ring: Box::new([(0, 0); SLOTS]),
            slot: 0,
        }
    }
}

impl Series {
    /// Moves the ring to the slot of `now_ms`, clearing the slots passed over.
    fn advance(&mut self, now_ms: u64) {
        let slot = now_ms / SLOT_MS;
        if slot <= self.slot {
            return;
        }
        let passed = (slot - self.slot).min(SLOTS as u64);
        for n in 1..=passed {
            self.ring[((self.slot + n) % SLOTS as u64) as usize] = (0, 0);
        }
        self.slot = slot;
    }

    /// Outcomes over the last `slots` slots up to `now_ms`.
    fn recent(&self, now_ms: u64, slots: u64) -> Outcomes {
        let now = now_ms / SLOT_MS;
        self.between(now.saturating_sub(slots - 1), now)
    }

    /// Outcomes per minute over the last 15 minutes up to `now_ms`, oldest first.
    fn per_minute(&self, now_ms: u64) -> Vec<Outcomes> {
        let now = now_ms / SLOT_MS;
        let per = 60_000 / SLOT_MS;
        (0..15)
            .rev()
            .map(|m| match (now + 1).checked_sub((m + 1) * per) {
                Some(first) => self.between(first, now - m * per),
                None => Outcomes::default(),
            })
            .collect()
    }

    /// Outcomes in slots `first..=last`, as far as the ring still holds them.
    fn between(&self, first: u64, last: u64) -> Outcomes {
        let mut out = Outcomes::default();
        for n in first..=last {
            if n + (SLOTS as u64) > self.slot && n <= self.slot {
                let (s, f) = self.ring[(n % SLOTS as u64) as usize];
                out.succeeded += s;
                out.failed += f;
            }
        }
        out
    }
}

/// The metrics of one spool, kept by its writer.
#[derive(Default)]
pub(crate) struct Metrics {
    series: Mutex<HashMap<(u32, u32), Series>>,
}

impl Metrics {
    /// Counts a durable group's samples, at `now_ms`.
    pub(crate) fn record(&self, samples: &Samples, now_ms: u64) {
        if samples.is_empty() {
            return;
        }
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, tally) in &samples.keys {
            let s = series.entry(*key).or_default();
            s.total.add(tally);
            let (succeeded, failed) = (
                tally.count(TaskState::Succeeded),
                tally.count(TaskState::Failed),
            );
            if succeeded + failed > 0 {
                s.advance(now_ms);
                let slot = &mut s.ring[(s.slot % SLOTS as u64) as usize];
                slot.0 += succeeded;
                slot.1 += failed;
            }
        }
    }

    /// Every series at `now_ms`, with its names from `name_of`, sorted by queue and name.
    pub(crate) fn snapshot(
        &self,
        now_ms: u64,
        name_of: impl Fn(u32, u32) -> (String, String),
    ) -> Vec<TaskMetrics> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<TaskMetrics> = series
            .iter()
            .map(|(&(q, n), s)| {
                let (queue, name) = name_of(q, n);
                let t = &s.total;
                let mut cumulative = 0;
                let at_most_us = RUNTIME_BUCKETS_US
                    .iter()
                    .zip(t.buckets)
                    .map(|(&le, n)| {
                        cumulative += n;
                        (le, cumulative)
                    })
                    .collect();
                TaskMetrics {
                    queue,
                    name,
                    enqueued: t.enqueued(),
                    succeeded: t.count(TaskState::Succeeded),
                    failed: t.count(TaskState::Failed),
                    retried: t.count(TaskState::Retrying),
                    expired: t.count(TaskState::Expired),
                    revoked: t.count(TaskState::Revoked),
                    last_1m: s.recent(now_ms, 60_000 / SLOT_MS),
                    last_5m: s.recent(now_ms, 300_000 / SLOT_MS),
                    last_15m: s.recent(now_ms, 900_000 / SLOT_MS),
                    per_minute: s.per_minute(now_ms),
                    runtime: RunTimes {
                        at_most_us,
                        count: t.runs,
                        sum_us: t.run_sum_us,
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.queue, &a.name).cmp(&(&b.queue, &b.name)));
        out
    }
}
