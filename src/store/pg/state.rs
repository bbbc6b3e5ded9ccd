//! What the PostgreSQL engine's threads share (`Inner`), what its dispatcher hears
//! (`Event`), and a claimed attempt as the job a pool runs, tracked until it is reported.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

use crossbeam_channel::Sender;

use crate::clock::Clock;
use crate::error::Error;
use crate::events::EventHub;
use crate::model::{PoolId, TaskId};
use crate::options::Limits;
use crate::signal::{AttemptSignal, StopReason};
use crate::store::pg::claim::Claimed;
use crate::store::pg::complete::prune_due;
use crate::store::pg::completer::Completer;
use crate::store::pg::group::Grouper;
use crate::store::pg::migrate::SchemaName;
use crate::store::pg::record::PgRecord;
use crate::store::pg::sql::{Conn, Sql};
use crate::store::pg::tally::PgMetrics;
use crate::store::pg::{pools, read};
use crate::store::verbs::{Inputs, Job, PoolGauges, PoolSpec, Serves};
use crate::sync::Waiters;
use crate::views::{PoolStats, Stats};

/// The engine's state, shared by its threads and reporters.
pub(super) struct Inner {
    pub(super) schema: SchemaName,
    /// The server, for connections opened again after the server closed them.
    pub(super) url: String,
    /// This process's lease (a new one if the lease was rescued while the process lived).
    pub(super) process: AtomicU64,
    pub(super) clock: Clock,
    /// For reads, completions and revokes (one at a time, for now).
    pub(super) db: Mutex<Conn>,
    pub(super) grouper: Grouper,
    /// Batches attempt reports into shared transactions.
    pub(super) completer: Completer,
    pub(super) waiters: Arc<Waiters>,
    pub(super) to_dispatcher: Sender<Event>,
    pub(super) closed: AtomicBool,
    pub(super) hub: EventHub,
    /// This process's live pools, for `stats`.
    pub(super) live: Mutex<Vec<Live>>,
    /// Finished tasks are deleted this long after they finished (`None`: kept).
    pub(super) result_ttl_ms: Option<u64>,
    /// When the next deletion of finished tasks is due (`Inner::prune_if_due`).
    pub(super) next_prune_ms: AtomicU64,
    /// The attempts this process runs, by task: what a revoke from any process asks to
    /// stop (heard on the schema's `stop` channel).
    pub(super) running: Mutex<HashMap<u64, (u32, Weak<AttemptSignal>)>>,
    /// Whether this process has its row in `event_listeners` (`store::pg::events`).
    pub(super) listening: Mutex<bool>,
    /// The fences its calls wait behind for their events, and the process id that names
    /// them (its first lease's).
    pub(super) fences: Fences,
    pub(super) fence_owner: u64,
    /// What this process's transactions counted (`tally`).
    pub(super) metrics: Arc<PgMetrics>,
}

/// A live pool of this process: its id, what it serves, its concurrency and its gauges.
pub(super) type Live = (PoolId, Serves, usize, Arc<PoolGauges>);

/// What the dispatcher hears.
pub(super) enum Event {
    /// Work may be ready (a notification, or a freed slot).
    Wake,
    Register(PoolSpec, Sender<Job>),
    Unregister(PoolId, Sender<()>),
    /// A pool's attempt ended after running so many microseconds (`None`: handed back
    /// without running): a slot is free.
    Freed(PoolId, Option<u64>),
    Stop,
}

impl Inner {
    /// Counts per queue and state (a scan of the table, for now), the names no live pool
    /// knows, this process's pools and then every other process's, and this process's
    /// metrics (`tally`).
    ///
    /// # Errors
    /// `Storage` on a failure of the server.
    pub(super) fn stats(&self) -> Result<Stats, Error> {
        let schema = &self.schema;
        let (queues, unregistered, others) = self.with_db(|db| {
            Ok((
                read::counts(db, schema)?,
                pools::unregistered_counts(db, schema)?,
                pools::of_others(db, schema, self.process())?,
            ))
        })?;
        let mut pools: Vec<PoolStats> = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, serves, threads, gauges)| {
                let mut tasks: Vec<String> = serves.names.iter().cloned().collect();
                tasks.sort();
                PoolStats {
                    queues: serves.queues.clone(),
                    tasks,
                    concurrency: *threads,
                    threads: gauges.threads.load(Ordering::SeqCst),
                    abandoned: gauges.abandoned.load(Ordering::SeqCst),
                    busy: gauges.running_tasks().len(),
                }
            })
            .collect();
        pools.extend(others);
        Ok(Stats {
            queues,
            unregistered,
            pools,
            metrics: self.metrics.snapshot(),
        })
    }

    /// This process's lease: the owner its claims name and its reports are fenced to.
    pub(super) fn process(&self) -> u64 {
        self.process.load(Ordering::SeqCst)
    }

    /// The connection for reads, completions and control verbs; opened again first if the
    /// server closed it.
    pub(super) fn db(&self) -> MutexGuard<'_, Conn> {
        let mut db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        db.reopen_if_closed(&self.url, &self.schema, "");
        db
    }

    /// Runs `op` on the connection of [`db`](Self::db); if it failed because the server had
    /// closed the connection (a restart, a cut), runs it once more on a new one. Only for
    /// what may run twice with the same effect: reads, and writes fenced to an attempt
    /// (a completion, a start note, a hand-back) or idempotent (a schedule's declaration).
    pub(super) fn with_db<T>(
        &self,
        mut op: impl FnMut(&mut Conn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut db = self.db();
        match op(&mut db) {
            Err(e) if db.is_closed() => {
                db.reopen_if_closed(&self.url, &self.schema, "");
                if db.is_closed() {
                    return Err(e);
                }
                op(&mut db)
            }
            done => done,
        }
    }

    /// Deletes the finished tasks past the results TTL if a deletion is due at `now`;
    /// returns when the next one is (`None`: results are kept forever). On the system clock
    /// one runs at most once a second, or a steady stream of finishes would make each one
    /// due on its own; on a manual clock, exactly when due.
    pub(super) fn prune_if_due(&self, db: &mut impl Sql, now: u64) -> Option<u64> {
        let ttl = self.result_ttl_ms?;
        let due = self.next_prune_ms.load(Ordering::SeqCst);
        if now < due {
            return Some(due);
        }
        let next = prune_due(db, &self.schema, now, ttl).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not delete finished tasks past the results TTL");
            now.saturating_add(PRUNE_AT_MOST_EVERY_MS)
        });
        let next = match self.clock {
            Clock::System => next.max(now.saturating_add(PRUNE_AT_MOST_EVERY_MS)),
            Clock::Manual(_) => next,
        };
        self.next_prune_ms.store(next, Ordering::SeqCst);
        Some(next)
    }

    /// A claimed attempt, as its pool or drain runs it: tracked until it is reported, so
    /// that a revoke can ask it to stop.
    pub(super) fn job(&self, claimed: Claimed) -> Job {
        let job = job(claimed);
        self.running_attempts()
            .insert(job.id.0, (job.attempt, Arc::downgrade(&job.signal)));
        job
    }

    /// Attempt `attempt` of task `id` was reported (or handed back): no longer tracked.
    pub(super) fn reported(&self, id: u64, attempt: u32) {
        let mut running = self.running_attempts();
        if running.get(&id).is_some_and(|(a, _)| *a == attempt) {
            running.remove(&id);
        }
    }

    /// A revoke of task `id` was heard: its attempt here, if any, is asked to stop.
    pub(super) fn ask_to_stop(&self, id: u64) {
        let signal = self
            .running_attempts()
            .get(&id)
            .and_then(|(_, s)| s.upgrade());
        if let Some(signal) = signal {
            signal.stop(StopReason::Revoked);
        }
    }

    /// Asks every attempt this process runs whose task a revoke marked to stop: for stop
    /// notifications missed while the listener was reconnecting. A failed read is logged
    /// (the attempt then ends as it would; its task still ends `Revoked`).
    pub(super) fn ask_revoked(&self) {
        let ids: Vec<i64> = self
            .running_attempts()
            .keys()
            .map(|&id| id as i64)
            .collect();
        if ids.is_empty() {
            return;
        }
        let q = self.schema.quoted();
        let marked = self.db().query(
            &format!("SELECT id FROM {q}.tasks WHERE id = ANY($1) AND revoke_requested"),
            &[&ids],
        );
        match marked {
            Ok(rows) => {
                for row in rows {
                    self.ask_to_stop(row.get::<_, i64>(0) as u64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read which running tasks were revoked"),
        }
    }

    fn running_attempts(&self) -> MutexGuard<'_, HashMap<u64, (u32, Weak<AttemptSignal>)>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// On the system clock, the least time between two deletions of finished tasks (and the wait
/// before trying again after one failed).
const PRUNE_AT_MOST_EVERY_MS: u64 = 1_000;

/// A claimed attempt as the job a pool runs.
fn job(c: Claimed) -> Job {
    let record = PgRecord::decode(&c.record).ok();
    Job {
        id: TaskId(c.id),
        attempt: c.attempt,
        name: Arc::from(c.name.as_str()),
        queue: Arc::from(c.queue.as_str()),
        payload: c.payload,
        max_retries: c.max_retries,
        enqueued_at_ms: record.as_ref().map_or(0, |r| r.enqueued_at_ms),
        origin: record.as_ref().and_then(|r| r.origin.clone()),
        limits: Limits {
            time_limit_ms: record.as_ref().and_then(|r| r.time_limit_ms),
            soft_time_limit_ms: record.as_ref().and_then(|r| r.soft_time_limit_ms),
        },
        signal: Arc::new(AttemptSignal::default()),
        inputs: c
            .inputs
            .map(|(json, count)| Arc::new(Inputs { json, count })),
    }
}

/// Fences this process's subscribers wait behind: the last asked and the last heard.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    pub(crate) numbers: Mutex<(u64, u64)>,
    pub(crate) heard: Condvar,
}
