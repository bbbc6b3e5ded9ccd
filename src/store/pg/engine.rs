//! The PostgreSQL engine (`SpoolBuilder::connect_postgres`): the storage verbs a spool needs
//! to enqueue, run pools, report attempts and wait for results, on the pieces of this
//! module — group-committed inserts, claims for each pool's free slots woken by `LISTEN` or
//! the next due time, fenced completions, a lease renewed by heartbeat with the rescue of
//! expired ones, waiters woken by the `done` channel, running attempts stopped by the `stop`
//! channel, events heard on the `events` channel. Schedules are declared and fired exactly
//! once across processes; flow limits hold across them. Metrics are not gathered yet (the
//! README's table of backends).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::clock::Clock;
use crate::error::{Error, Failure};
use crate::events::{EventHub, Events};
use crate::flow::Limit;
use crate::model::{PoolId, Revoke, Revoked, TaskId, TaskState};
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::store::pg::admit;
use crate::store::pg::claim::{Listener, Lock};
use crate::store::pg::complete::{expire_due, promote_due};
use crate::store::pg::completer::Completer;
use crate::store::pg::control;
use crate::store::pg::dispatch::{DISPATCHER_SETUP, dispatch, keep_lease, pairs};
use crate::store::pg::flow;
use crate::store::pg::group::Grouper;
use crate::store::pg::lease::{register_process, rescue_own};
use crate::store::pg::list;
use crate::store::pg::migrate::{SchemaName, connect_for, migrate, pg};
use crate::store::pg::parts;
use crate::store::pg::pools;
use crate::store::pg::read;
use crate::store::pg::record::new_row;
use crate::store::pg::reporter::PgReporter;
use crate::store::pg::schedules;
use crate::store::pg::sql::{Conn, Sql};
use crate::store::pg::state::Fences;
use crate::store::pg::state::{Event, Inner};
use crate::store::pg::tally::PgMetrics;
use crate::store::pg::workflow;
use crate::store::verbs::{
    Engine, Enqueued, FlowOp, Job, Lead, NewTask, PartOp, PoolSpec, Reporter, ScheduleOp, Serves,
    Then,
};
use crate::sync::Waiters;
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// How a process's PostgreSQL engine is opened.
#[derive(Debug, Clone)]
pub(crate) struct PgConfig {
    /// The schema to use, created or migrated at open.
    pub(crate) schema: String,
    /// How long this process's lease lasts without a heartbeat.
    pub(crate) lease: Duration,
    /// The schema is this spool's alone, dropped with everything in it when it closes.
    pub(crate) temporary: bool,
    pub(crate) clock: Clock,
    /// Finished tasks are deleted this long after they finished (`None`: kept).
    pub(crate) result_ttl_ms: Option<u64>,
}

/// The PostgreSQL engine of one process.
pub(crate) struct PgEngine {
    inner: Arc<Inner>,
    /// Drop the schema at close (`PgConfig::temporary`).
    temporary: bool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropped to stop the lease thread at once.
    stop_lease: Mutex<Option<Sender<()>>>,
}

impl PgEngine {
    /// Connects, migrates the schema, registers this process and starts its threads.
    ///
    /// # Errors
    /// `InvalidOption` for a schema name that is not a plain identifier; as [`connect`] and
    /// [`migrate`]; `Storage` if a thread cannot start.
    pub(crate) fn open(
        url: &str,
        config: PgConfig,
        waiters: Arc<Waiters>,
    ) -> Result<PgEngine, Error> {
        let PgConfig {
            schema,
            lease,
            temporary,
            clock,
            result_ttl_ms,
        } = config;
        let schema = SchemaName::new(&schema)?;
        let mut db = connect_for(url, &schema, "")?;
        migrate(&mut db, &schema)?;
        let process = register_process(&mut db, &schema, lease)?;
        let (to_dispatcher, events) = crossbeam_channel::unbounded();
        let metrics = Arc::new(PgMetrics::new(clock.clone()));
        let inner = Arc::new(Inner {
            grouper: Grouper::start(url, schema.clone(), Some(&metrics))?,
            completer: Completer::start(url, schema.clone(), Some(&metrics))?,
            schema,
            url: url.to_string(),
            process: AtomicU64::new(process),
            clock,
            db: Mutex::new(Conn::new(db).counting(&metrics)),
            metrics,
            waiters,
            to_dispatcher,
            closed: AtomicBool::new(false),
            hub: EventHub::default(),
            live: Mutex::new(Vec::new()),
            result_ttl_ms,
            next_prune_ms: AtomicU64::new(0),
            running: Mutex::new(HashMap::new()),
            listening: Mutex::new(false),
            fences: Fences::default(),
            fence_owner: process,
        });
        // A manual clock that moves wakes the dispatcher (until it has stopped).
        let wake = inner.to_dispatcher.clone();
        inner
            .clock
            .subscribe(move || wake.send(Event::Wake).is_ok());
        let mut threads = Vec::new();
        let mut listener = Listener::new(url, &inner.schema)?;
        let done = Listener::for_results(url, &inner.schema)?;
        let stops = Listener::on_stop(url, &inner.schema)?;
        let mut told = Listener::on_events(url, &inner.schema)?;
        let dispatcher_db = connect_for(url, &inner.schema, DISPATCHER_SETUP)?;
        let heartbeat_db = connect_for(url, &inner.schema, "")?;
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
                        Err(e) => {
                            if !relisten(&i, &mut listener, &e) {
                                return;
                            }
                            // Wake-ups may have been missed: the dispatcher looks again.
                            let _ = i.to_dispatcher.send(Event::Wake);
                        }
                    }
                }
            }),
        )?);
        threads.push(spawn(
            "taskspool-pg-done",
            listen_ids(
                inner.clone(),
                done,
                |i, id| i.waiters.notify(&[TaskId(id)]),
                // Results may have been missed: every waiter reads its task again.
                |i| i.waiters.notify_all(),
            ),
        )?);
        threads.push(spawn(
            "taskspool-pg-stop",
            listen_ids(
                inner.clone(),
                stops,
                |i, id| i.ask_to_stop(id),
                Inner::ask_revoked,
            ),
        )?);
        let i = inner.clone();
        threads.push(spawn(
            "taskspool-pg-events",
            Box::new(move || i.tell_events(&mut told)),
        )?);
        let i = inner.clone();
        let (stop_lease, stopped) = crossbeam_channel::bounded::<()>(0);
        threads.push(spawn(
            "taskspool-pg-lease",
            Box::new(move || keep_lease(&i, heartbeat_db, lease, &stopped)),
        )?);
        Ok(PgEngine {
            inner,
            temporary,
            threads: Mutex::new(threads),
            stop_lease: Mutex::new(Some(stop_lease)),
        })
    }
}

/// A listener thread's work: each task id `listener` hears goes to `heard`, until the
/// engine closes. A failed connection is opened again, then `missed` makes up for what was
/// notified while it was down.
fn listen_ids(
    inner: Arc<Inner>,
    mut listener: Listener,
    heard: fn(&Inner, u64),
    missed: fn(&Inner),
) -> Box<dyn FnOnce() + Send> {
    Box::new(move || {
        while !inner.closed.load(Ordering::SeqCst) {
            match listener.next(Duration::from_secs(3600)) {
                Ok(Some(id)) => {
                    if let Ok(id) = id.parse::<u64>() {
                        heard(&inner, id);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if !relisten(&inner, &mut listener, &e) {
                        return;
                    }
                    missed(&inner);
                }
            }
        }
    })
}

/// After `listener`'s connection failed with `error`: connects it again, trying every
/// [`RELISTEN`] until it works (true) or the engine closes (false).
fn relisten(inner: &Inner, listener: &mut Listener, error: &Error) -> bool {
    if inner.closed.load(Ordering::SeqCst) {
        return false;
    }
    tracing::warn!(%error, "a PostgreSQL listener lost its connection; reconnecting");
    loop {
        std::thread::sleep(RELISTEN);
        if inner.closed.load(Ordering::SeqCst) {
            return false;
        }
        match listener.reconnect() {
            Ok(()) => {
                tracing::info!("a PostgreSQL listener reconnected");
                return true;
            }
            Err(e) => tracing::debug!(error = %e, "PostgreSQL is not reachable yet"),
        }
    }
}

/// How long a listener waits between attempts to reconnect.
const RELISTEN: Duration = Duration::from_millis(250);

impl Engine for PgEngine {
    fn insert(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, Error> {
        let now = self.inner.clock.now_ms();
        let rows = tasks
            .iter()
            .map(|t| new_row(t, now))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = if tasks.iter().any(|t| t.step.is_some()) {
            // A workflow, or tasks with callbacks: in a transaction of their own.
            let mut db = self.inner.db();
            let mut tx = db.transaction().map_err(pg("begin a workflow's insert"))?;
            let ids = workflow::insert(&mut tx, &self.inner.schema, &tasks, &rows, now)?;
            tx.commit().map_err(pg("commit a workflow's insert"))?;
            ids
        } else {
            self.inner.grouper.insert(rows, now)?
        };
        self.inner.settle_events();
        Ok(ids
            .into_iter()
            .map(|(id, duplicate)| Enqueued {
                id: TaskId(id),
                duplicate,
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
            ScheduleOp::Declare { name, def } => self.inner.with_db(|db| {
                schedules::declare(db, &self.inner.schema, &name, (*def).clone(), now)
            })?,
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
        self.inner.settle_events();
        Ok(changed)
    }

    fn flow(&self, op: FlowOp) -> Result<bool, Error> {
        match op {
            FlowOp::Pause { queue, paused } => {
                flow::set_paused(&mut *self.inner.db(), &self.inner.schema, &queue, paused)
            }
            FlowOp::Limit(limit) => flow::set_limit(
                &mut *self.inner.db(),
                &self.inner.schema,
                &limit.target,
                Some(&limit),
            ),
            FlowOp::Unlimit(target) => {
                flow::set_limit(&mut *self.inner.db(), &self.inner.schema, &target, None)
            }
        }
    }

    fn parts(&self, op: PartOp) -> Result<u64, Error> {
        let who = (self.inner.process(), self.inner.clock.now_ms());
        let done = parts::apply(&mut *self.inner.db(), &self.inner.schema, op, who);
        self.inner.settle_events();
        done
    }

    fn limits(&self) -> Result<Vec<Limit>, Error> {
        self.inner
            .with_db(|db| flow::limits(db, &self.inner.schema))
    }

    fn register(&self, pool: PoolSpec, jobs: Sender<Job>) -> Result<(), Error> {
        pools::add(
            &mut *self.inner.db(),
            &self.inner.schema,
            (self.inner.process(), pool.id.0),
            &pool.serves,
            pool.threads,
        )?;
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
        let removed = pools::remove(
            &mut *self.inner.db(),
            &self.inner.schema,
            self.inner.process(),
            Some(pool.0),
        );
        if let Err(e) = removed {
            tracing::warn!(error = %e, "could not remove a stopped pool from the pools table");
        }
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
        let pairs = pairs(serves);
        let mut db = self.inner.db();
        let now = self.inner.clock.now_ms();
        // A drain sees everything due now, as the file engine's claim does: the fires of
        // due schedules first, then expiries and promotions.
        self.inner.prune_if_due(&mut *db, now);
        schedules::fire_due_waiting(&mut *db, &self.inner.schema, now)?;
        expire_due(&mut *db, &self.inner.schema, now)?;
        promote_due(&mut *db, &self.inner.schema, now)?;
        let who = (self.inner.process(), now);
        let mut claimed = Vec::new();
        loop {
            let claim = admit::claim(
                &mut *db,
                &self.inner.schema,
                &pairs,
                max - claimed.len(),
                who,
                (Lock::Wait, false),
            )?;
            claimed.extend(claim.claimed);
            // A claim that stopped parking at its budget found nothing to run yet: the
            // next goes on parking (a drain ends only when nothing is left to claim).
            if !claim.again || !claimed.is_empty() {
                break;
            }
        }
        drop(db);
        self.inner.settle_events();
        Ok(claimed.into_iter().map(|c| self.inner.job(c)).collect())
    }

    fn reporter(&self, _in_flight: usize) -> Arc<dyn Reporter> {
        Arc::new(PgReporter {
            inner: self.inner.clone(),
        })
    }

    fn revoke(&self, id: TaskId) -> Result<Revoke, Error> {
        let now = self.inner.clock.now_ms();
        let revoked = control::revoke(&mut *self.inner.db(), &self.inner.schema, id.0, now)?;
        self.inner.settle_events();
        revoked.ok_or(Error::NotFound(id))
    }

    fn revoke_where(&self, filter: TaskFilter) -> Result<Revoked, Error> {
        let now = self.inner.clock.now_ms();
        let done = list::revoke_where(&mut *self.inner.db(), &self.inner.schema, &filter, now);
        self.inner.settle_events();
        done
    }

    fn revoke_workflow(&self, id: TaskId) -> Result<Revoked, Error> {
        let now = self.inner.clock.now_ms();
        let done = workflow::revoke(&mut *self.inner.db(), &self.inner.schema, id.0, now);
        self.inner.settle_events();
        done
    }

    fn workflow_status(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        self.inner
            .with_db(|db| workflow::status(db, &self.inner.schema, id.0))
    }

    fn retry_where(&self, filter: TaskFilter) -> Result<u64, Error> {
        let now = self.inner.clock.now_ms();
        let done = list::retry_where(&mut *self.inner.db(), &self.inner.schema, &filter, now);
        self.inner.settle_events();
        done
    }

    fn retry(&self, id: TaskId) -> Result<(), Error> {
        let now = self.inner.clock.now_ms();
        let done = control::retry(&mut *self.inner.db(), &self.inner.schema, id.0, now);
        self.inner.settle_events();
        done
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
        self.inner
            .with_db(|db| read::status(db, &self.inner.schema, id.0))
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

    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        self.inner
            .with_db(|db| list::tasks(db, &self.inner.schema, filter, paging))
    }

    fn events(&self, buffer: usize) -> Events {
        self.inner.subscribe_events(buffer)
    }

    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        self.inner
            .with_db(|db| schedules::list(db, &self.inner.schema))
    }

    /// Counts per queue and state (a scan of the table, for now), the names no live pool
    /// knows, this process's pools and then every other process's, and this process's
    /// metrics (`tally`).
    fn stats(&self) -> Result<Stats, Error> {
        self.inner.stats()
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
        let wake = self.inner.schema.wake_channel();
        let done = self.inner.schema.done_channel();
        let stop = self.inner.schema.stop_channel();
        let events = self.inner.schema.events_channel();
        {
            let mut db = self.inner.db();
            let _ = db.execute(
                "SELECT pg_notify($1, ''), pg_notify($2, ''), pg_notify($3, ''), \
                        pg_notify($4, '')",
                &[&wake, &done, &stop, &events],
            );
            let _ = pools::remove(&mut *db, &self.inner.schema, self.inner.process(), None);
            // The lease ends with the spool: what it still runs can no longer be reported,
            // so it runs again now (as the file engine recovers it at the next open); the
            // process's row goes with the rescue. Should that fail, the lease expires.
            let now = self.inner.clock.now_ms();
            let process = self.inner.process();
            if let Err(e) = rescue_own(&mut *db, &self.inner.schema, process, now) {
                tracing::warn!(error = %e, "could not give back the running attempts");
            }
        }
        self.inner.waiters.close();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
        if self.temporary {
            let q = self.inner.schema.quoted();
            let dropped = self
                .inner
                .db()
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {q} CASCADE"));
            if let Err(e) = dropped {
                tracing::warn!(error = %e, schema = %self.inner.schema.as_str(),
                    "could not drop a temporary PostgreSQL schema");
            }
        }
    }
}
