//! The first cut of the PostgreSQL engine (issue #18, internal: no public constructor yet):
//! the storage verbs a spool needs to enqueue, run pools, report attempts and wait for
//! results, on the pieces of this module — group-committed inserts, claims for each pool's
//! free slots woken by `LISTEN` or the next due time, fenced completions, a lease renewed
//! by heartbeat with the rescue of expired ones, and waiters woken by the `done` channel.
//! Schedules are declared and fired exactly once across processes. The verbs not built yet
//! answer an `InvalidOption` that says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use postgres::Client;

use crate::clock::Clock;
use crate::error::{Error, Failure};
use crate::events::{EventHub, Events};
use crate::flow::Limit;
use crate::model::{
    AttemptErrorKind, Disposition, Outcome, PoolId, Revoke, Revoked, TaskId, TaskState,
};
use crate::options::Limits;
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::signal::AttemptSignal;
use crate::store::pg::claim::{Claimed, Listener, claim};
use crate::store::pg::complete::{Ending, complete, expire_due, promote_due};
use crate::store::pg::control;
use crate::store::pg::group::Grouper;
use crate::store::pg::lease::{heartbeat, note_started, register_process, rescue_expired};
use crate::store::pg::migrate::{SchemaName, connect, migrate, pg};
use crate::store::pg::read;
use crate::store::pg::record::{PgRecord, new_row};
use crate::store::pg::schedules;
use crate::store::verbs::PoolGauges;
use crate::store::verbs::{
    Completion, Engine, Enqueued, FlowOp, Job, Lead, NewTask, PartOp, PoolSpec, Reporter,
    ScheduleOp, Serves, Then, ThreadSlot,
};
use crate::sync::Waiters;
use crate::views::{PoolStats, Stats, TaskPage, TaskStatus, WorkflowStatus};

/// The PostgreSQL engine of one process.
pub(crate) struct PgEngine {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropped to stop the lease thread at once.
    stop_lease: Mutex<Option<Sender<()>>>,
}

struct Inner {
    schema: SchemaName,
    /// This process's lease.
    process: u64,
    clock: Clock,
    /// For reads, completions and revokes (one at a time, for now).
    db: Mutex<Client>,
    grouper: Grouper,
    waiters: Arc<Waiters>,
    to_dispatcher: Sender<Event>,
    closed: AtomicBool,
    hub: EventHub,
    /// This process's live pools, for `stats`.
    live: Mutex<Vec<Live>>,
}

/// A live pool of this process: its id, what it serves, its concurrency and its gauges.
type Live = (PoolId, Serves, usize, Arc<PoolGauges>);

/// What the dispatcher hears.
enum Event {
    /// Work may be ready (a notification, or a freed slot).
    Wake,
    Register(PoolSpec, Sender<Job>),
    Unregister(PoolId, Sender<()>),
    /// A pool's attempt ended (or was handed back): a slot is free.
    Freed(PoolId),
    Stop,
}

/// A pool as the dispatcher keeps it.
struct Pool {
    pairs: Vec<(String, String)>,
    slots: usize,
    outstanding: usize,
    jobs: Sender<Job>,
}

impl PgEngine {
    /// Connects, migrates the schema, registers this process and starts its threads.
    ///
    /// # Errors
    /// As [`connect`] and [`migrate`]; `Storage` if a thread cannot start.
    pub(crate) fn open(
        url: &str,
        schema: SchemaName,
        clock: Clock,
        waiters: Arc<Waiters>,
        lease: Duration,
    ) -> Result<PgEngine, Error> {
        let mut db = connect(url)?;
        migrate(&mut db, &schema)?;
        let process = register_process(&mut db, &schema, lease)?;
        let (to_dispatcher, events) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            grouper: Grouper::start(url, schema.clone())?,
            schema,
            process,
            clock,
            db: Mutex::new(db),
            waiters,
            to_dispatcher,
            closed: AtomicBool::new(false),
            hub: EventHub::default(),
            live: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        let mut listener = Listener::new(url, &inner.schema)?;
        let mut done = Listener::for_results(url, &inner.schema)?;
        let dispatcher_db = connect(url)?;
        let heartbeat_db = connect(url)?;
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(|e| Error::storage_from("cannot start a PostgreSQL engine thread", e))
        };
        let i = inner.clone();
        threads.push(spawn(
            "taskspool-pg-dispatch",
            Box::new(move || dispatch(&i, dispatcher_db, &events)),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "taskspool-pg-listen",
            Box::new(move || {
                while !i.closed.load(Ordering::SeqCst) {
                    match listener.wait(Duration::from_secs(3600)) {
                        Ok(true) => {
                            let _ = i.to_dispatcher.send(Event::Wake);
                        }
                        Ok(false) => {}
                        Err(_) => return,
                    }
                }
            }),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "taskspool-pg-done",
            Box::new(move || {
                while !i.closed.load(Ordering::SeqCst) {
                    match done.next(Duration::from_secs(3600)) {
                        Ok(Some(id)) => {
                            if let Ok(id) = id.parse::<u64>() {
                                i.waiters.notify(&[TaskId(id)]);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
            }),
        )?);
        let i = inner.clone();
        let (stop_lease, stopped) = crossbeam_channel::bounded::<()>(0);
        threads.push(spawn(
            "taskspool-pg-lease",
            Box::new(move || keep_lease(&i, heartbeat_db, lease, &stopped)),
        )?);
        Ok(PgEngine {
            inner,
            threads: Mutex::new(threads),
            stop_lease: Mutex::new(Some(stop_lease)),
        })
    }
}

impl Inner {
    fn db(&self) -> MutexGuard<'_, Client> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Renews the lease a third of its length at a time, rescuing expired ones meanwhile.
fn keep_lease(inner: &Inner, mut db: Client, lease: Duration, stop: &Receiver<()>) {
    let period = lease / 3;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(period) {
        match heartbeat(&mut db, &inner.schema, inner.process) {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!("this process's PostgreSQL lease was rescued by another");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the PostgreSQL lease"),
        }
        match rescue_expired(&mut db, &inner.schema, inner.clock.now_ms()) {
            Ok(r) if !r.processes.is_empty() => {
                let _ = inner.to_dispatcher.send(Event::Wake);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not rescue expired leases"),
        }
    }
}

/// The dispatcher: claims for every pool with free slots, then waits for a wake-up or the
/// next due time.
fn dispatch(inner: &Inner, mut db: Client, events: &Receiver<Event>) {
    let mut pools: HashMap<PoolId, Pool> = HashMap::new();
    loop {
        let now = inner.clock.now_ms();
        let next_fire = match schedules::fire_due(&mut db, &inner.schema, now) {
            Ok((_, next)) => next,
            Err(e) => {
                tracing::warn!(error = %e, "could not fire due schedules");
                None
            }
        };
        let next_expiry = match expire_due(&mut db, &inner.schema, now) {
            Ok((_, next)) => next,
            Err(e) => {
                tracing::warn!(error = %e, "could not expire tasks");
                None
            }
        };
        let next_due = match promote_due(&mut db, &inner.schema, now) {
            Ok((_, next)) => next,
            Err(e) => {
                tracing::warn!(error = %e, "could not promote due tasks");
                None
            }
        };
        let next_due = [next_due, next_fire, next_expiry]
            .into_iter()
            .flatten()
            .min();
        for (id, pool) in &mut pools {
            let free = pool.slots.saturating_sub(pool.outstanding);
            if free == 0 {
                continue;
            }
            let who = (inner.process, inner.clock.now_ms());
            match claim(&mut db, &inner.schema, &pool.pairs, free, who) {
                Ok(claimed) => {
                    for c in claimed {
                        pool.outstanding += 1;
                        if pool.jobs.send(job(c)).is_err() {
                            tracing::debug!(pool = id.0, "a pool left with a job in hand");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not claim tasks"),
            }
        }
        let timeout = next_due.map_or(Duration::from_secs(3600), |at| {
            Duration::from_millis(at.saturating_sub(inner.clock.now_ms()))
        });
        let event = match events.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        for event in std::iter::once(event).chain(events.try_iter()) {
            match event {
                Event::Wake => {}
                Event::Register(spec, jobs) => {
                    let pairs = spec
                        .serves
                        .queues
                        .iter()
                        .flat_map(|q| {
                            spec.serves
                                .names
                                .iter()
                                .map(move |n| (q.clone(), n.clone()))
                        })
                        .collect();
                    pools.insert(
                        spec.id,
                        Pool {
                            pairs,
                            slots: spec.threads,
                            outstanding: 0,
                            jobs,
                        },
                    );
                }
                Event::Unregister(id, done) => {
                    pools.remove(&id);
                    let _ = done.send(());
                }
                Event::Freed(id) => {
                    if let Some(pool) = pools.get_mut(&id) {
                        pool.outstanding = pool.outstanding.saturating_sub(1);
                    }
                }
                Event::Stop => return,
            }
        }
    }
}

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
        inputs: None,
    }
}

fn not_yet(verb: &str) -> Error {
    Error::InvalidOption(format!(
        "{verb} is not on the PostgreSQL engine yet (issue #18)"
    ))
}

impl Engine for PgEngine {
    fn insert(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, Error> {
        let now = self.inner.clock.now_ms();
        let rows = tasks
            .iter()
            .map(|t| new_row(t, now))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = self.inner.grouper.insert(rows)?;
        Ok(ids
            .into_iter()
            .map(|id| Enqueued {
                id: TaskId(id),
                duplicate: false,
            })
            .collect())
    }

    fn insert_then(&self, tasks: Vec<NewTask>, _lead: Lead, then: Then<Vec<Enqueued>>) {
        // The caller must not wait: a thread of its own does (for now).
        let result = self.insert(tasks);
        then(result);
    }

    fn schedule(&self, op: ScheduleOp) -> Result<bool, Error> {
        let now = self.inner.clock.now_ms();
        let changed = match op {
            ScheduleOp::Declare { name, def } => {
                schedules::declare(&mut *self.inner.db(), &self.inner.schema, &name, *def, now)?
            }
            ScheduleOp::Remove(name) => {
                schedules::remove(&mut *self.inner.db(), &self.inner.schema, &name)?
            }
            ScheduleOp::Pause(name) => {
                schedules::set_paused(&mut *self.inner.db(), &self.inner.schema, &name, true, now)?
            }
            ScheduleOp::Resume(name) => {
                schedules::set_paused(&mut *self.inner.db(), &self.inner.schema, &name, false, now)?
            }
            ScheduleOp::RunNow(name) => {
                schedules::run_now(&mut *self.inner.db(), &self.inner.schema, &name, now)?
            }
        };
        // Its first fire may be sooner than what the dispatcher sleeps until.
        let _ = self.inner.to_dispatcher.send(Event::Wake);
        Ok(changed)
    }

    fn flow(&self, _op: FlowOp) -> Result<bool, Error> {
        Err(not_yet("flow control"))
    }

    fn parts(&self, _op: PartOp) -> Result<u64, Error> {
        Err(not_yet("a chord in parts"))
    }

    fn limits(&self) -> Result<Vec<Limit>, Error> {
        Ok(Vec::new())
    }

    fn register(&self, pool: PoolSpec, jobs: Sender<Job>) -> Result<(), Error> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((
                pool.id,
                pool.serves.clone(),
                pool.threads,
                pool.gauges.clone(),
            ));
        self.inner
            .to_dispatcher
            .send(Event::Register(pool, jobs))
            .map_err(|_| Error::Closed)
    }

    fn unregister(&self, pool: PoolId) {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(id, ..)| *id != pool);
        let (done, wait) = crossbeam_channel::bounded(1);
        if self
            .inner
            .to_dispatcher
            .send(Event::Unregister(pool, done))
            .is_ok()
        {
            let _ = wait.recv();
        }
    }

    fn claim(&self, serves: &Serves, max: usize) -> Result<Vec<Job>, Error> {
        let pairs: Vec<(String, String)> = serves
            .queues
            .iter()
            .flat_map(|q| serves.names.iter().map(move |n| (q.clone(), n.clone())))
            .collect();
        let mut db = self.inner.db();
        let now = self.inner.clock.now_ms();
        expire_due(&mut *db, &self.inner.schema, now)?;
        promote_due(&mut *db, &self.inner.schema, now)?;
        let claimed = claim(
            &mut *db,
            &self.inner.schema,
            &pairs,
            max,
            (self.inner.process, now),
        )?;
        Ok(claimed.into_iter().map(job).collect())
    }

    fn reporter(&self, _in_flight: usize) -> Arc<dyn Reporter> {
        Arc::new(PgReporter {
            inner: self.inner.clone(),
        })
    }

    fn revoke(&self, id: TaskId) -> Result<Revoke, Error> {
        let now = self.inner.clock.now_ms();
        control::revoke(&mut *self.inner.db(), &self.inner.schema, id.0, now)?
            .ok_or(Error::NotFound(id))
    }

    fn revoke_where(&self, _filter: TaskFilter) -> Result<Revoked, Error> {
        Err(not_yet("revoke_where"))
    }

    fn revoke_workflow(&self, _id: TaskId) -> Result<Revoked, Error> {
        Err(not_yet("workflows"))
    }

    fn workflow_status(&self, _id: TaskId) -> Result<WorkflowStatus, Error> {
        Err(not_yet("workflows"))
    }

    fn retry_where(&self, _filter: TaskFilter) -> Result<u64, Error> {
        Err(not_yet("retry_where"))
    }

    fn retry(&self, id: TaskId) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        control::retry(&mut *self.inner.db(), &self.inner.schema, id.0, now)
    }

    fn forget(&self, id: TaskId) -> Result<(), Error> {
        control::forget(&mut *self.inner.db(), &self.inner.schema, id.0)
    }

    fn sync(&self) -> Result<(), Error> {
        // Every commit is durable on the server when it returns.
        Ok(())
    }

    fn checkpoint(&self) -> Result<(), Error> {
        Ok(())
    }

    fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        read::status(&mut *self.inner.db(), &self.inner.schema, id.0)
    }

    fn result(&self, id: TaskId, name: Option<&str>) -> Result<Option<Vec<u8>>, Error> {
        let status = self.status(id)?;
        if let Some(requested) = name
            && requested != status.name
        {
            return Err(Error::WrongTask {
                id,
                requested: requested.to_string(),
                stored: status.name,
            });
        }
        match status.state {
            TaskState::Succeeded => Ok(Some(
                status
                    .output
                    .map(|v| serde_json::to_vec(&v).unwrap_or_default())
                    .unwrap_or_default(),
            )),
            TaskState::Failed => Err(Error::TaskFailed(Box::new(Failure {
                id,
                name: status.name,
                attempts: status.attempts,
                message: status
                    .errors
                    .last()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                errors: status.errors,
            }))),
            TaskState::Revoked => Err(Error::TaskRevoked(id)),
            TaskState::Expired => Err(Error::TaskExpired(id)),
            _ => Ok(None),
        }
    }

    fn tasks(&self, _filter: &TaskFilter, _paging: &Paging) -> Result<TaskPage, Error> {
        Err(not_yet("listing tasks"))
    }

    fn events(&self, buffer: usize) -> Events {
        self.inner.hub.subscribe(buffer)
    }

    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        schedules::list(&mut *self.inner.db(), &self.inner.schema)
    }

    /// Counts per queue and state (a scan of the table, for now), and this process's pools
    /// (pools of other processes, names no pool knows and metrics are not gathered yet).
    fn stats(&self) -> Result<Stats, Error> {
        let queues = read::counts(&mut *self.inner.db(), &self.inner.schema)?;
        let pools = self
            .inner
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
        Ok(Stats {
            queues,
            unregistered: Vec::new(),
            pools,
            metrics: Vec::new(),
        })
    }

    #[cfg(test)]
    fn fail_writes(&self, _n: usize) {}
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let _ = self.inner.to_dispatcher.send(Event::Stop);
        drop(
            self.stop_lease
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        // The listeners wait on the server: a notification on each channel wakes them.
        let wake = format!("taskspool_{}", self.inner.schema.as_str());
        let done = crate::store::pg::complete::done_channel(&self.inner.schema);
        {
            let mut db = self.inner.db();
            let _ = db.execute(
                "SELECT pg_notify($1, ''), pg_notify($2, '')",
                &[&wake, &done],
            );
            // The lease ends with the process: its attempts are reported or rescued.
            let q = self.inner.schema.quoted();
            let _ = db.execute(
                &format!("DELETE FROM {q}.processes WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM {q}.tasks WHERE owner = $1 AND state = 2)"),
                &[&(self.inner.process as i64)],
            );
        }
        self.inner.waiters.close();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// How a pool's attempts reach the engine.
struct PgReporter {
    inner: Arc<Inner>,
}

impl Reporter for PgReporter {
    fn join(&self) -> ThreadSlot {
        ThreadSlot {
            place: 0,
            started: 0,
        }
    }

    fn leave(&self, _slot: ThreadSlot) {}

    fn starting(&self, _slot: &mut ThreadSlot, id: TaskId, attempt: u32) {
        let now = self.inner.clock.now_ms();
        if let Err(e) = note_started(
            &mut *self.inner.db(),
            &self.inner.schema,
            &[(id.0, attempt)],
            now,
        ) {
            tracing::warn!(error = %e, "could not note an attempt's start");
        }
    }

    fn complete(&self, pool: Option<PoolId>, c: Completion) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let now = self.inner.clock.now_ms();
        let ending = self.ending(&c, now)?;
        complete(
            &mut *self.inner.db(),
            &self.inner.schema,
            (c.id.0, c.attempt, self.inner.process),
            now,
            &ending,
        )?;
        if let Some(pool) = pool {
            let _ = self.inner.to_dispatcher.send(Event::Freed(pool));
        }
        Ok(())
    }

    fn release(&self, pool: PoolId, id: TaskId, attempt: u32) -> Result<(), Error> {
        let q = self.inner.schema.quoted();
        self.inner
            .db()
            .execute(
                &format!(
                    "UPDATE {q}.tasks SET state = 1, owner = NULL, attempts = attempts - 1
                     WHERE id = $1 AND attempts = $2 AND owner = $3 AND state = 2"
                ),
                &[
                    &(id.0 as i64),
                    &(attempt as i32),
                    &(self.inner.process as i64),
                ],
            )
            .map_err(pg("hand back an attempt"))?;
        let _ = self.inner.to_dispatcher.send(Event::Freed(pool));
        Ok(())
    }

    fn progress(&self, _id: TaskId, _attempt: u32, _json: Vec<u8>) {}
}

impl PgReporter {
    /// What the attempt's outcome means for the task, as the file engine decides it.
    fn ending(&self, c: &Completion, now: u64) -> Result<Ending, Error> {
        let retry_in = |attempt: u32| -> Result<u64, Error> {
            let q = self.inner.schema.quoted();
            let row = self
                .inner
                .db()
                .query_one(
                    &format!("SELECT record FROM {q}.tasks WHERE id = $1"),
                    &[&(c.id.0 as i64)],
                )
                .map_err(pg("read a task's retry policy"))?;
            let record = PgRecord::decode(row.get(0))?;
            Ok(record.retry.delay_ms(attempt))
        };
        let failed = |kind, message: &str, retry: Option<u64>| Ending::Failed {
            kind,
            message: message.to_string(),
            retry_at_ms: retry.map(|d| now.saturating_add(d)),
        };
        Ok(match &c.outcome {
            Outcome::Succeeded(output) => Ending::Succeeded {
                output: output.clone(),
            },
            Outcome::Failed {
                disposition,
                message,
            } => {
                let kind = match disposition {
                    _ if c.past_soft_limit => AttemptErrorKind::TimeLimit,
                    Disposition::Fail => AttemptErrorKind::Fatal,
                    Disposition::Stopped => AttemptErrorKind::TimeLimit,
                    _ => AttemptErrorKind::Error,
                };
                let delay = match disposition {
                    Disposition::Fail => None,
                    Disposition::RetryAfter(d) => Some(crate::clock::duration_ms(*d)),
                    _ => Some(retry_in(c.attempt)?),
                };
                failed(kind, message, delay)
            }
            Outcome::Panicked(m) => failed(AttemptErrorKind::Panic, m, Some(retry_in(c.attempt)?)),
            Outcome::Undecodable(m) => failed(AttemptErrorKind::Decode, m, None),
            Outcome::TimedOut(m) => {
                failed(AttemptErrorKind::TimeLimit, m, Some(retry_in(c.attempt)?))
            }
        })
    }
}
