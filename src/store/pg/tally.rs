//! Metrics on PostgreSQL: each process counts what it commits — the tasks its transactions
//! store and the state changes they make (its enqueues, the attempts its pools end, the
//! expiries, revokes and rescues it applies) and the run times of its attempts — as the
//! file engine's writer counts its groups. A transaction gathers its counts in [`Counted`]
//! (a savepoint's go to the transaction around it when it is released) and hands them to
//! [`PgMetrics`] once it has committed, so nothing rolled back is counted. Counting in the
//! process keeps the counters off the database: no row every process's commits would
//! queue on. Like any Prometheus exporter's counters, each process's are its own, and a
//! scrape of every process adds up to the whole.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::clock::Clock;
use crate::metrics::{Metrics, Samples, TaskMetrics};
use crate::model::TaskState;

/// What one (queue, task name) did, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Did {
    /// This many tasks entered this state (a stored task: `Ready`).
    Entered(TaskState, u64),
    /// An attempt ran this many µs.
    Ran(u64),
}

/// What a transaction counted, not yet committed: a handful of (queue, name) keys.
#[derive(Debug, Default)]
pub(crate) struct Counted(Vec<(String, String, Did)>);

impl Counted {
    /// `queue`/`name` did `did` (added to what the same key entered last, so that a batch
    /// of one task type is one entry).
    pub(crate) fn add(&mut self, queue: &str, name: &str, did: Did) {
        if let Did::Entered(state, times) = did
            && let Some((_, _, Did::Entered(_, total))) =
                self.0.iter_mut().rev().find(|(q, n, d)| {
                    q == queue && n == name && matches!(d, Did::Entered(s, _) if *s == state)
                })
        {
            *total += times;
            return;
        }
        self.0.push((queue.to_string(), name.to_string(), did));
    }

    /// Takes over what `other` counted (a savepoint released into its transaction).
    pub(crate) fn append(&mut self, other: Counted) {
        self.0.extend(other.0);
    }
}

/// The ids the metrics know queues and names by.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(name.to_string(), id);
        self.names.push(name.to_string());
        id
    }

    fn name(&self, id: u32) -> String {
        self.names.get(id as usize).cloned().unwrap_or_default()
    }
}

/// One process's metrics, since its spool connected.
pub(crate) struct PgMetrics {
    metrics: Metrics,
    names: Mutex<Names>,
    clock: Clock,
}

impl PgMetrics {
    /// Metrics read at the times of `clock`.
    pub(crate) fn new(clock: Clock) -> PgMetrics {
        PgMetrics {
            metrics: Metrics::default(),
            names: Mutex::new(Names::default()),
            clock,
        }
    }

    /// Counts what a committed transaction counted.
    pub(crate) fn record(&self, counted: &Counted) {
        if counted.0.is_empty() {
            return;
        }
        let mut samples = Samples::default();
        {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            for (queue, name, did) in &counted.0 {
                let (q, n) = (names.id(queue), names.id(name));
                match *did {
                    Did::Entered(state, times) => samples.entered_times(q, n, state, times),
                    Did::Ran(us) => samples.ran(q, n, us),
                }
            }
        }
        self.metrics.record(&samples, self.clock.now_ms());
    }

    /// Every series now, sorted by queue and name.
    pub(crate) fn snapshot(&self) -> Vec<TaskMetrics> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        self.metrics
            .snapshot(self.clock.now_ms(), |q, n| (names.name(q), names.name(n)))
    }
}
