//! The writer: one group at a time owns the redb write transaction.
//!
//! A group drains every pending command into the write transaction (enqueues, completions,
//! registrations), promotes due tasks, prunes expired results, claims ready tasks for free
//! worker slots, makes the group durable with one `fdatasync` of the write-ahead log
//! (`commit`), and only then replies to callers and hands jobs to workers. The transaction is
//! kept open for the next group: it is committed to redb only when a reader needs it, or
//! every so many groups (`commit`). Groups are run by the writer thread, or by a caller that
//! finds it idle (`thread`). What a group's callers and workers then hear is in `outcome`.

mod commit;
mod outcome;
mod thread;

#[cfg(test)]
pub(crate) use commit::PUBLISH_GROUPS;

/// Starts a writer over a file opened by `store::open` or `store::prepare` (for tests that
/// drive the writer without a `Spool`); `buffered` as in [`WriterConfig`].
#[cfg(test)]
pub(crate) fn spawn_opened(
    opened: crate::store::Opened,
    buffered: Option<Duration>,
) -> (WriterHandle, Arc<Database>) {
    let db = Arc::new(opened.db);
    let config = WriterConfig {
        clock: Clock::System,
        result_ttl_ms: None,
        buffered,
    };
    let waiters = Arc::new(Waiters::default());
    let (counters, counts, catalog, wal) =
        (opened.counters, opened.counts, opened.catalog, opened.wal);
    let writer = Writer::spawn(db.clone(), config, counters, counts, catalog, wal, waiters)
        .expect("the writer thread starts");
    (writer, db)
}

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use redb::{Database, WriteTransaction};

use crate::clock::Clock;
use crate::dispatch::{self, Job, WorkerSlots};
use crate::error::Error;
use crate::result::Waiters;
use crate::store::catalog::Catalog;
use crate::store::command::{Command, Reply, WriterHandle};
use crate::store::redo::Redo;
use crate::store::transitions::Completion;
use crate::store::tx::{Counters, Counts, CountsView, IdMap, Tally, Tx};
use crate::store::wal::Wal;

/// The longest the writer waits for the producers of the last group to join the next one.
const GATHER: Duration = Duration::from_micros(200);

/// Most commands folded into one transaction.
const MAX_GROUP: usize = 8_192;
/// Most scheduled tasks promoted, or results pruned, per transaction.
const MAINTENANCE_BATCH: usize = 5_000;

/// Settings the writer needs.
pub(crate) struct WriterConfig {
    pub clock: Clock,
    pub result_ttl_ms: Option<u64>,
    /// `Some(bound)`: buffered durability, the log is synced within `bound` of a write
    /// instead of before each reply (see `crate::Durability`).
    pub buffered: Option<Duration>,
}

/// Replies and hand-offs that wait for the group's commit.
#[derive(Default)]
struct Staged {
    enqueued: Vec<(Reply<Vec<u64>>, Vec<u64>)>,
    schedule_replies: Vec<(Reply<bool>, Result<bool, Error>)>,
    acks: Vec<Reply<()>>,
    unregistered: Vec<crate::sync::Promise<()>>,
    claim_once: Vec<(Reply<Vec<Job>>, Vec<Job>)>,
    claimed: Vec<(u64, Vec<Job>)>,
    completions: Vec<Completion>,
    finalized: Vec<u64>,
    more: bool,
    shutdown: bool,
    /// A `Sync` asked for everything before it to be on disk (buffered durability).
    flush: bool,
}

pub(crate) struct Writer {
    db: Arc<Database>,
    config: WriterConfig,
    counters: Counters,
    /// Task counts as of the last logged group (see `Counts`); the file has them as of the
    /// last durable commit, the log has every change since.
    counts: Counts,
    /// The same counts and the catalog, for `Spool::stats`.
    counts_view: Arc<Mutex<CountsView>>,
    catalog: Catalog,
    workers: Vec<WorkerSlots>,
    waiters: Arc<Waiters>,
    next_wake: Option<u64>,
    /// Completions from a group whose commit failed, applied again with the next group.
    retry: Vec<Completion>,
    failures: u32,
    /// Moving average of one group's transaction time (apply + commit), in microseconds.
    avg_cycle_us: Option<f64>,
    /// How many enqueue callers the last group served (see `gather`).
    last_callers: usize,
    /// Records of running tasks, lent to each transaction (see `Tx::running_cache`).
    running_cache: IdMap<crate::store::record::TaskRecord>,
    /// The write-ahead log that makes groups durable between checkpoints.
    wal: Wal,
    /// The log is full: the next group commits durably to the queue file and restarts it.
    checkpoint_due: bool,
    /// The redo buffer, lent to each transaction so its allocation is reused.
    redo: Redo,
    /// The spool is shutting down: no group runs any more.
    closed: bool,
    /// Buffered durability: when the oldest unsynced log record must be synced.
    sync_deadline: Option<Instant>,
    /// The write transaction kept open across groups (see `commit`): it holds every group
    /// logged since the last commit to redb. `None` after a commit, and after a failure
    /// rolled it back.
    held: Option<WriteTransaction>,
    /// The redo records of the logged groups not yet committed to redb, each length-prefixed:
    /// what builds `held` again after a failure rolled it back.
    held_records: Vec<u8>,
    /// How many groups `held_records` has.
    held_groups: usize,
    /// A failure rolled back changes the in-memory mirrors (queue ids, running records) may
    /// hold: they are read again with the next transaction.
    stale: bool,
    /// Set while logged groups are not yet committed to redb, where readers look (shared with
    /// the handle: a reader then asks for a commit, see `WriterHandle::publish`).
    unpublished: Arc<AtomicBool>,
}

/// The writer's state: run by the writer thread, or by a caller that finds it idle (see
/// [`Writer::lead`]).
pub(crate) type Core = Mutex<Writer>;

pub(crate) fn lock(core: &Core) -> std::sync::MutexGuard<'_, Writer> {
    core.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Writer {
    /// Starts the writer thread over an opened, recovered database.
    pub(crate) fn spawn(
        db: Arc<Database>,
        config: WriterConfig,
        counters: Counters,
        counts: Counts,
        catalog: Catalog,
        wal: Wal,
        waiters: Arc<Waiters>,
    ) -> Result<WriterHandle, Error> {
        let counts_view = Arc::new(Mutex::new(CountsView {
            counts: counts.clone(),
            catalog: catalog.clone(),
        }));
        let unpublished = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::unbounded();
        let tick = tx.clone();
        config
            .clock
            .subscribe(move || tick.send(Command::Tick).is_ok());
        let writer = Writer {
            db,
            config,
            counters,
            counts,
            counts_view: counts_view.clone(),
            catalog,
            workers: Vec::new(),
            waiters,
            // Due at once: the first group scans the timed indexes.
            next_wake: Some(0),
            retry: Vec::new(),
            failures: 0,
            avg_cycle_us: None,
            last_callers: 0,
            running_cache: Default::default(),
            wal,
            checkpoint_due: false,
            redo: Redo::default(),
            closed: false,
            sync_deadline: None,
            held: None,
            held_records: Vec::new(),
            held_groups: 0,
            stale: false,
            unpublished: unpublished.clone(),
        };
        let core = Arc::new(Mutex::new(writer));
        let join = {
            let (core, rx) = (core.clone(), rx.clone());
            std::thread::Builder::new()
                .name("taskspool-writer".into())
                .spawn(move || thread::run(&core, &rx))
                .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?
        };
        Ok(WriterHandle {
            tx,
            rx,
            core,
            counts: counts_view,
            unpublished,
            join: Some(join),
        })
    }

    /// A transaction's state, lent the writer's records of running tasks and its (cleared)
    /// redo buffer. After any error they are not taken back: the records may hold writes that
    /// are rolled back, so the cache starts empty again (and is reloaded, see `stale`).
    fn open_tx<'t>(&mut self, txn: &'t WriteTransaction, now: u64) -> Result<Tx<'t>, Error> {
        let mut tx = Tx::open(txn, now, self.counters, self.config.result_ttl_ms)?;
        tx.running_cache = std::mem::take(&mut self.running_cache);
        tx.redo = std::mem::take(&mut self.redo);
        tx.redo.clear();
        Ok(tx)
    }

    /// Takes back the running records lent by [`Writer::open_tx`]; returns the redo record,
    /// for [`Writer::commit`].
    fn take_back(&mut self, tx: &mut Tx<'_>) -> Redo {
        self.running_cache = std::mem::take(&mut tx.running_cache);
        std::mem::take(&mut tx.redo)
    }

    /// Keeps a durable transaction's counters and counts (and shows them, with any new
    /// names, to `Spool::stats`).
    fn keep(&mut self, tally: &Tally) {
        self.counters = tally.counters;
        tally.apply(&mut self.counts);
        let mut view = self
            .counts_view
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tally.apply(&mut view.counts);
        let catalog = &self.catalog;
        if (view.catalog.queues.len(), view.catalog.names.len())
            != (catalog.queues.len(), catalog.names.len())
        {
            view.catalog = catalog.clone();
        }
    }

    /// Applies one group of commands in one transaction; with `gather`, also the enqueues of
    /// producers that join it (see `Writer::gather`). Returns (more work is due, shutdown).
    fn group(&mut self, cmds: Vec<Command>, gather: Option<&Receiver<Command>>) -> (bool, bool) {
        self.sync_if_due();
        let mut staged = Staged::default();
        let started = std::time::Instant::now();
        let result = self.stage_and_commit(cmds, gather, &mut staged);
        if gather.is_some() {
            self.last_callers = staged.enqueued.len();
        }
        if !staged.claimed.is_empty() || !staged.completions.is_empty() {
            let us = started.elapsed().as_secs_f64() * 1e6;
            self.avg_cycle_us = Some(dispatch::ewma(self.avg_cycle_us, us));
        }
        match result {
            Ok(()) => {
                self.failures = 0;
                self.deliver(staged)
            }
            Err(e) => {
                self.failures += 1;
                tracing::error!(error = %e, "taskspool group commit failed; nothing in it was applied");
                let shutdown = staged.shutdown;
                self.fail(staged, &e);
                // Back off before applying the retried completions again.
                let pause = 10u64 << self.failures.min(7);
                std::thread::sleep(Duration::from_millis(pause));
                (!self.retry.is_empty(), shutdown)
            }
        }
    }

    fn stage_and_commit(
        &mut self,
        cmds: Vec<Command>,
        gather: Option<&Receiver<Command>>,
        staged: &mut Staged,
    ) -> Result<(), Error> {
        let now = self.config.clock.now_ms();
        self.publish_before(&cmds);
        let txn = match self.take_txn() {
            Ok(txn) => txn,
            Err(e) => {
                self.stage_all_unapplied(cmds, staged);
                return Err(e);
            }
        };
        let mut changed = false;
        let mut claim_once = Vec::new();
        let (tally, redo);
        {
            let mut tx = match self.open_tx(&txn, now) {
                Ok(tx) => tx,
                Err(e) => {
                    self.stage_all_unapplied(cmds, staged);
                    return Err(e);
                }
            };
            let retried = std::mem::take(&mut self.retry);
            staged.completions.reserve(retried.len());
            let mut error = None;
            for c in retried {
                if error.is_none()
                    && let Err(e) = tx.complete(&c)
                {
                    error = Some(e);
                }
                staged.completions.push(c);
            }
            let mut apply = |this: &mut Self, tx: &mut Tx<'_>, cmd| {
                if let Some(Command::ClaimOnce {
                    queues,
                    names,
                    max,
                    reply,
                }) = this.apply(tx, cmd, staged, &mut error)
                {
                    claim_once.push((queues, names, max, reply));
                }
            };
            let callers = cmds
                .iter()
                .filter(|c| matches!(c, Command::Enqueue { .. }))
                .count();
            for cmd in cmds {
                apply(self, &mut tx, cmd);
            }
            if let Some(rx) = gather {
                self.gather(rx, callers, |this, cmd| apply(this, &mut tx, cmd));
            }
            if let Some(e) = error {
                // Collect the remaining repliers so each caller hears of the failure.
                for (_, _, _, reply) in claim_once {
                    staged.claim_once.push((reply, Vec::new()));
                }
                return Err(e);
            }
            // The timed indexes are scanned only when something in them can be due: their
            // earliest entry is known from the last scan plus what this group added.
            let due = [self.next_wake, tx.wake_hint]
                .into_iter()
                .flatten()
                .any(|w| w <= now);
            if due {
                staged.more |= tx.fire_schedules(MAINTENANCE_BATCH, &mut self.catalog)?;
                staged.more |= tx.promote_due(MAINTENANCE_BATCH)?;
                staged.more |= tx.expire_due(MAINTENANCE_BATCH)?;
                staged.more |= tx.prune(MAINTENANCE_BATCH)?;
            }
            self.claim_for_workers(&mut tx, staged)?;
            for (queues, names, max, reply) in claim_once {
                let jobs = dispatch::claim(&mut tx, &self.catalog, &queues, &names, max);
                match jobs {
                    Ok(jobs) => staged.claim_once.push((reply, jobs)),
                    Err(e) => {
                        staged.claim_once.push((reply, Vec::new()));
                        return Err(e);
                    }
                }
            }
            tally = tx.finish(&self.counts)?;
            self.next_wake = if due {
                tx.next_wake()?
            } else {
                // An entry removed since the last scan can only make this wake-up early,
                // and an early wake-up rescans.
                [self.next_wake, tx.wake_hint].into_iter().flatten().min()
            };
            staged.finalized = std::mem::take(&mut tx.finalized);
            changed |= tx.changed;
            redo = self.take_back(&mut tx);
        }
        if changed {
            self.commit(txn, redo, tally)?;
        } else {
            self.redo = redo;
            self.held = Some(txn);
        }
        if staged.flush {
            self.sync_log()?;
        }
        Ok(())
    }

    /// Applies one command inside the transaction. A `ClaimOnce` is handed back: it runs after
    /// promotion so it sees everything due. After an error, commands are only collected.
    fn apply(
        &mut self,
        tx: &mut Tx<'_>,
        cmd: Command,
        staged: &mut Staged,
        error: &mut Option<Error>,
    ) -> Option<Command> {
        if error.is_some() {
            self.stage_unapplied(cmd, staged);
            return None;
        }
        match cmd {
            Command::Enqueue { tasks, reply } => {
                let mut ids = Vec::with_capacity(tasks.len());
                for task in tasks {
                    let inserted = tx
                        .intern(&task.opts.queue, &task.name, &mut self.catalog)
                        .and_then(|ids| tx.insert(task, ids));
                    match inserted {
                        Ok(id) => ids.push(id),
                        Err(e) => {
                            *error = Some(e);
                            break;
                        }
                    }
                }
                staged.enqueued.push((reply, ids));
            }
            Command::Complete { worker, completion } => {
                self.finished(worker, &completion);
                if let Err(e) = tx.complete(&completion) {
                    *error = Some(e);
                }
                staged.completions.push(completion);
            }
            Command::Release {
                worker,
                id,
                attempt,
            } => {
                self.free_slot(worker);
                if let Err(e) = tx.release(id, attempt) {
                    *error = Some(e);
                }
            }
            Command::Register { slots, reply } => {
                self.workers.push(slots);
                staged.acks.push(reply);
            }
            claim @ Command::ClaimOnce { .. } => return Some(claim),
            Command::Schedule { op, reply } => match tx.schedule_op(op) {
                // A missing schedule is the caller's error, not the group's.
                Err(e @ Error::ScheduleNotFound(_)) => {
                    staged.schedule_replies.push((reply, Err(e)));
                }
                Err(e) => {
                    *error = Some(e);
                    staged.schedule_replies.push((reply, Ok(false)));
                }
                Ok(changed) => staged.schedule_replies.push((reply, Ok(changed))),
            },
            other => self.stage_unapplied(other, staged),
        }
        None
    }

    /// Records every command of a group whose transaction could not even begin.
    fn stage_all_unapplied(&mut self, cmds: Vec<Command>, staged: &mut Staged) {
        staged.completions.append(&mut self.retry);
        for cmd in cmds {
            self.stage_unapplied(cmd, staged);
        }
    }

    /// Records a command of a group that failed (or needs no transaction): its caller hears
    /// the group's outcome, and a completion is kept to be applied again.
    fn stage_unapplied(&mut self, cmd: Command, staged: &mut Staged) {
        match cmd {
            Command::Enqueue { reply, .. } => staged.enqueued.push((reply, Vec::new())),
            Command::Complete { worker, completion } => {
                self.finished(worker, &completion);
                staged.completions.push(completion);
            }
            // The task stays running in the file; the next open gives the attempt back.
            Command::Release { worker, .. } => self.free_slot(worker),
            // Not registered: the caller hears the group's error.
            Command::Register { reply, .. } => staged.acks.push(reply),
            Command::Unregister { worker, reply } => {
                self.workers.retain(|w| w.id != worker);
                staged.unregistered.push(reply);
            }
            Command::ClaimOnce { reply, .. } => staged.claim_once.push((reply, Vec::new())),
            Command::Schedule { reply, .. } => staged.schedule_replies.push((reply, Ok(false))),
            Command::Sync { reply } => {
                staged.flush = true;
                staged.acks.push(reply);
            }
            Command::Tick => {}
            Command::Shutdown => staged.shutdown = true,
        }
    }

    /// A worker's attempt is over: its slot is free, and its run time feeds the prefetch.
    fn finished(&mut self, worker: Option<u64>, completion: &Completion) {
        if let Some(w) = worker
            && let Some(slots) = self.workers.iter_mut().find(|s| s.id == w)
        {
            slots.finished(completion.run_us);
        }
    }

    fn free_slot(&mut self, worker: u64) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
            w.released();
        }
    }

    /// Fills every live worker's free slots from its queues.
    fn claim_for_workers(&mut self, tx: &mut Tx<'_>, staged: &mut Staged) -> Result<(), Error> {
        for i in 0..self.workers.len() {
            let free = self.workers[i].free(self.avg_cycle_us.unwrap_or(0.0));
            if free == 0 {
                continue;
            }
            let me = &self.workers[i];
            let jobs = dispatch::claim(tx, &self.catalog, &me.queues, &me.names, free)?;
            if !jobs.is_empty() {
                staged.claimed.push((self.workers[i].id, jobs));
            }
        }
        Ok(())
    }
}
