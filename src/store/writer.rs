//! The writer: ONE thread owns every redb write transaction.
//!
//! It blocks until a command arrives or the next due time passes, drains every pending
//! command into one transaction (enqueues, completions, registrations), promotes due tasks,
//! prunes expired results, claims ready tasks for free worker slots, makes the group durable
//! with one `fdatasync` of the write-ahead log (see `wal`), and only then replies to callers
//! and hands jobs to workers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redb::{Database, Durability, WriteTransaction};

use crate::clock::Clock;
use crate::dispatch::{self, Job, WorkerSlots};
use crate::error::Error;
use crate::result::Waiters;
use crate::store::catalog::Catalog;
use crate::store::command::{Command, Reply, WriterHandle};
use crate::store::redo::Redo;
use crate::store::schema::{META, META_WAL_GENERATION};
use crate::store::transitions::Completion;
use crate::store::tx::{Counters, IdMap, Tx, load_counters, load_running};
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
}

/// The writer's state: run by the writer thread, or by a caller that finds it idle (see
/// [`Writer::lead`]).
pub(crate) type Core = Mutex<Writer>;

fn lock(core: &Core) -> std::sync::MutexGuard<'_, Writer> {
    core.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Writer {
    /// Starts the writer thread over an opened, recovered database.
    pub(crate) fn spawn(
        db: Arc<Database>,
        config: WriterConfig,
        counters: Counters,
        catalog: Catalog,
        wal: Wal,
        waiters: Arc<Waiters>,
    ) -> Result<WriterHandle, Error> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let tick = tx.clone();
        config
            .clock
            .subscribe(move || tick.send(Command::Tick).is_ok());
        let writer = Writer {
            db,
            config,
            counters,
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
        };
        let core = Arc::new(Mutex::new(writer));
        let join = {
            let (core, rx) = (core.clone(), rx.clone());
            std::thread::Builder::new()
                .name("taskspool-writer".into())
                .spawn(move || run(&core, &rx))
                .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?
        };
        Ok(WriterHandle {
            tx,
            rx,
            core,
            join: Some(join),
        })
    }

    /// Runs the group of `cmd` on the calling thread, which found the writer idle and nothing
    /// queued, when the last groups served one caller at a time: a caller that waits for its
    /// own group anyway saves two thread wake-ups (the writer's, then its own), which on a
    /// small machine cost as much as the group. With concurrent callers the writer thread
    /// runs the groups (and gathers them, see [`Writer::gather`]): the command is handed back,
    /// for the channel.
    pub(crate) fn lead(
        &mut self,
        cmd: Command,
        rx: &Receiver<Command>,
        tx: &Sender<Command>,
    ) -> Option<Command> {
        if self.closed {
            // Dropping the command answers its caller with `Closed`.
            return None;
        }
        if self.last_callers > 1 || !rx.is_empty() {
            return Some(cmd);
        }
        let before = (self.next_wake, self.sync_deadline);
        self.last_callers = usize::from(matches!(cmd, Command::Enqueue { .. }));
        let (more, shutdown) = self.group(vec![cmd]);
        // The writer thread sleeps until the due time it last saw, or until a command: it is
        // told when that changed, when work is left over, and when it must close.
        if shutdown {
            let _ = tx.send(Command::Shutdown);
        } else if more || (self.next_wake, self.sync_deadline) != before {
            let _ = tx.send(Command::Tick);
        }
        None
    }

    /// On the way out: a checkpoint, so the next open has no log to read.
    fn close(&mut self) {
        self.closed = true;
        if !self.wal.is_empty() {
            let result = self
                .db
                .begin_write()
                .map_err(Error::from)
                .and_then(|txn| self.commit_durable(txn));
            if let Err(e) = result {
                tracing::error!(error = %e, "taskspool could not checkpoint at close; the next open replays the log");
            }
        }
    }

    /// Makes a group's transaction durable: through the write-ahead log (one `fdatasync` of
    /// a sequential write), or, for a checkpoint or a group too large to be worth writing
    /// twice, by a durable commit of the queue file itself. The log is written before the
    /// commit, so a group the log refuses (a full disk) is rolled back whole and the spool
    /// goes on; a group whose commit fails after its record was written has the record
    /// withdrawn, since its callers are told it failed.
    fn commit(&mut self, mut txn: WriteTransaction, redo: &Redo) -> Result<(), Error> {
        let record = match redo.bytes() {
            Some(record) if !self.checkpoint_due => record,
            _ => return self.commit_durable(txn),
        };
        let immediate = self.config.buffered.is_none();
        let start = match self.wal.append(record, immediate) {
            Ok(start) => start,
            Err(e) => {
                let _ = txn.abort();
                return Err(e);
            }
        };
        let committed = txn
            .set_durability(Durability::None)
            .map_err(|e| Error::Storage(e.to_string()))
            .and_then(|()| txn.commit().map_err(Error::from));
        if let Err(e) = committed {
            if let Err(undo) = self.wal.undo(start) {
                tracing::error!(error = %undo, "cannot withdraw the log record of a failed group");
            }
            return Err(e);
        }
        self.checkpoint_due = self.wal.full();
        if let Some(bound) = self.config.buffered {
            self.sync_deadline
                .get_or_insert_with(|| Instant::now() + bound);
        }
        Ok(())
    }

    /// Buffered durability: syncs the log if anything written is not yet synced.
    fn sync_log(&mut self) -> Result<(), Error> {
        if self.sync_deadline.is_some() {
            self.wal.sync()?;
            self.sync_deadline = None;
        }
        Ok(())
    }

    /// Buffered durability: syncs the log once its deadline has passed. A failure is
    /// retried with every group until it succeeds (the changes were acknowledged already).
    fn sync_if_due(&mut self) {
        if self.sync_deadline.is_some_and(|d| d <= Instant::now())
            && let Err(e) = self.sync_log()
        {
            tracing::error!(error = %e, "taskspool cannot sync its write-ahead log; retrying");
        }
    }

    /// Commits durably to the queue file, which makes every earlier group durable there too;
    /// the log starts over under a new generation.
    fn commit_durable(&mut self, txn: WriteTransaction) -> Result<(), Error> {
        let next = self.wal.generation() + 1;
        txn.open_table(META)?.insert(META_WAL_GENERATION, next)?;
        txn.commit()?;
        self.wal.reset(next);
        self.sync_deadline = None;
        self.checkpoint_due = false;
        Ok(())
    }

    /// Group commit's gathering window. When several producers waited on the last commit, each
    /// is about to send its next enqueue, but the writer would otherwise start the next group
    /// with whoever was quickest and leave the rest for the group after. Waiting up to
    /// [`GATHER`] for as many producers as last time (asleep, leaving the CPU to them) lets
    /// them share one fsync. A lone producer never waits.
    fn gather(&mut self, rx: &Receiver<Command>, cmds: &mut Vec<Command>) {
        let callers = |cmds: &[Command]| {
            cmds.iter()
                .filter(|c| matches!(c, Command::Enqueue { .. }))
                .count()
        };
        if self.last_callers < 2 || callers(cmds) == 0 {
            return;
        }
        let deadline = std::time::Instant::now() + GATHER;
        while callers(cmds) < self.last_callers {
            match rx.recv_deadline(deadline) {
                Ok(cmd) => cmds.push(cmd),
                Err(_) => break,
            }
        }
    }

    /// How long to sleep before the next due time; `None` = until a command arrives.
    fn wait_timeout(&self) -> Option<Duration> {
        let sync = self
            .sync_deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        let timer = match self.next_wake {
            Some(wake) if wake <= self.config.clock.now_ms() => Some(Duration::ZERO),
            Some(wake) => self.config.clock.sleep_until(wake),
            None => None,
        };
        [sync, timer].into_iter().flatten().min()
    }

    /// Applies one group of commands in one transaction. Returns (more work is due, shutdown).
    fn group(&mut self, cmds: Vec<Command>) -> (bool, bool) {
        self.sync_if_due();
        let mut staged = Staged::default();
        let started = std::time::Instant::now();
        let result = self.stage_and_commit(cmds, &mut staged);
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

    fn stage_and_commit(&mut self, cmds: Vec<Command>, staged: &mut Staged) -> Result<(), Error> {
        let now = self.config.clock.now_ms();
        let txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                self.stage_all_unapplied(cmds, staged);
                return Err(e.into());
            }
        };
        let mut changed = false;
        let mut claim_once = Vec::new();
        {
            let mut tx = match Tx::open(&txn, now, self.counters, self.config.result_ttl_ms) {
                Ok(tx) => tx,
                Err(e) => {
                    self.stage_all_unapplied(cmds, staged);
                    return Err(e);
                }
            };
            tx.running_cache = std::mem::take(&mut self.running_cache);
            tx.redo = std::mem::take(&mut self.redo);
            tx.redo.clear();
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
            for cmd in cmds {
                if let Some(Command::ClaimOnce {
                    queues,
                    names,
                    max,
                    reply,
                }) = self.apply(&mut tx, cmd, staged, &mut error)
                {
                    claim_once.push((queues, names, max, reply));
                }
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
            tx.finish()?;
            self.next_wake = if due {
                tx.next_wake()?
            } else {
                // An entry removed since the last scan can only make this wake-up early,
                // and an early wake-up rescans.
                [self.next_wake, tx.wake_hint].into_iter().flatten().min()
            };
            self.counters = tx.counters;
            // Lent back only on this path: after any error the cache may hold writes that
            // are rolled back, so it starts empty again.
            self.running_cache = std::mem::take(&mut tx.running_cache);
            staged.finalized = std::mem::take(&mut tx.finalized);
            changed |= tx.changed;
            self.redo = std::mem::take(&mut tx.redo);
        }
        let redo = std::mem::take(&mut self.redo);
        let done = if changed {
            self.commit(txn, &redo)
        } else {
            txn.abort().map_err(Into::into)
        };
        self.redo = redo;
        if let Err(e) = done {
            self.running_cache.clear();
            return Err(e);
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

    /// After a successful commit: replies, hand-offs, wake-ups.
    fn deliver(&mut self, staged: Staged) -> (bool, bool) {
        // Workers first: a task should not wait for its enqueuer to be woken.
        let mut returned = Vec::new();
        for (worker, jobs) in staged.claimed {
            match self.workers.iter_mut().find(|w| w.id == worker) {
                Some(w) => {
                    for job in jobs {
                        w.handed(job.payload.len());
                        if let Err(send) = w.jobs.send(job) {
                            w.released();
                            returned.push(send.into_inner());
                        }
                    }
                }
                None => returned.extend(jobs),
            }
        }
        for (reply, ids) in staged.enqueued {
            reply.send(Ok(ids));
        }
        for reply in staged.acks {
            reply.send(Ok(()));
        }
        for (reply, result) in staged.schedule_replies {
            reply.send(result);
        }
        for reply in staged.unregistered {
            reply.send(());
        }
        for (reply, jobs) in staged.claim_once {
            reply.send(Ok(jobs));
        }
        self.waiters.notify(&staged.finalized);
        // Jobs whose worker vanished between claim and hand-off go back to the ready index.
        let more = staged.more || !returned.is_empty();
        for job in returned {
            let _ = self.retry_release(job);
        }
        (more, staged.shutdown)
    }

    fn retry_release(&mut self, job: Job) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut tx = Tx::open(
                &txn,
                self.config.clock.now_ms(),
                self.counters,
                self.config.result_ttl_ms,
            )?;
            tx.running_cache = std::mem::take(&mut self.running_cache);
            tx.release(job.id, job.attempt)?;
            tx.finish()?;
            self.counters = tx.counters;
            self.running_cache = std::mem::take(&mut tx.running_cache);
            self.redo = std::mem::take(&mut tx.redo);
        }
        let redo = std::mem::take(&mut self.redo);
        let done = self.commit(txn, &redo);
        self.redo = redo;
        if let Err(e) = done {
            self.reload();
            return Err(e);
        }
        Ok(())
    }

    /// After a failed commit: every caller hears the error; completions are kept to retry.
    fn fail(&mut self, staged: Staged, e: &Error) {
        for (reply, _) in staged.enqueued {
            reply.send(Err(e.duplicate()));
        }
        for reply in staged.acks {
            reply.send(Err(e.duplicate()));
        }
        for (reply, _) in staged.schedule_replies {
            reply.send(Err(e.duplicate()));
        }
        for reply in staged.unregistered {
            reply.send(());
        }
        for (reply, _) in staged.claim_once {
            reply.send(Err(e.duplicate()));
        }
        self.retry = staged.completions;
        self.reload();
    }

    /// After a failed transaction: the in-memory mirrors (counters, queue ids, running
    /// records) may hold what was rolled back, so they are read again from the file.
    fn reload(&mut self) {
        let loaded = self.db.begin_write().map_err(Error::from).and_then(|txn| {
            let counters = load_counters(&txn)?;
            let catalog = Catalog::load(&txn)?;
            let running = load_running(&txn)?;
            txn.abort()?;
            Ok((counters, catalog, running))
        });
        match loaded {
            Ok((counters, catalog, running)) => {
                self.counters = counters;
                self.catalog = catalog;
                self.running_cache = running;
            }
            Err(e) => tracing::error!(error = %e, "cannot reload the writer's state"),
        }
    }
}

/// The writer thread: sleeps until a command arrives or the next due time, then runs a group
/// (unless a caller runs one, see [`Writer::lead`]).
fn run(core: &Core, rx: &Receiver<Command>) {
    // The first group runs at once: it promotes whatever became due while the file was closed.
    let mut more = true;
    loop {
        let first = if more {
            rx.try_recv().ok()
        } else {
            let timeout = lock(core).wait_timeout();
            match timeout {
                Some(timeout) => match rx.recv_timeout(timeout) {
                    Ok(cmd) => Some(cmd),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return lock(core).close(),
                },
                None => match rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => return lock(core).close(),
                },
            }
        };
        let mut writer = lock(core);
        if writer.closed {
            return;
        }
        let mut cmds: Vec<Command> = first.into_iter().collect();
        while cmds.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => cmds.push(cmd),
                Err(_) => break,
            }
        }
        writer.gather(rx, &mut cmds);
        writer.last_callers = cmds
            .iter()
            .filter(|c| matches!(c, Command::Enqueue { .. }))
            .count();
        let (again, shutdown) = writer.group(cmds);
        more = again;
        if shutdown {
            return writer.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::options::Options;
    use crate::store::transitions::NewTask;

    fn task() -> NewTask {
        NewTask {
            name: Arc::from("t"),
            payload: b"null".to_vec(),
            opts: Arc::new(Options::new().resolve(1_000).unwrap()),
            enqueued_at_ms: 1_000,
            origin: None,
        }
    }

    /// Buffered durability: an acknowledged group leaves the log unsynced, and the writer
    /// thread syncs it within the bound with no further command; a `Sync` syncs at once.
    #[test]
    fn buffered_durability_syncs_within_its_bound_and_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let opened = crate::store::open(&path, 1_000, None, 1 << 20, 1 << 20).unwrap();
        let mut writer = Writer::spawn(
            Arc::new(opened.db),
            WriterConfig {
                clock: Clock::System,
                result_ttl_ms: None,
                buffered: Some(Duration::from_millis(50)),
            },
            opened.counters,
            opened.catalog,
            opened.wal,
            Arc::new(Waiters::default()),
        )
        .unwrap();
        let unsynced = |w: &WriterHandle| lock(&w.core).sync_deadline.is_some();
        let enqueue = |w: &WriterHandle| {
            w.request(|reply| Command::Enqueue {
                tasks: vec![task()],
                reply,
            })
            .unwrap()
        };

        let start = Instant::now();
        enqueue(&writer);
        assert!(unsynced(&writer), "acknowledged before the sync");
        while unsynced(&writer) {
            assert!(start.elapsed() < Duration::from_secs(5), "never synced");
            std::thread::yield_now();
        }
        assert!(start.elapsed() >= Duration::from_millis(50), "synced early");

        enqueue(&writer);
        assert!(unsynced(&writer));
        writer.request(|reply| Command::Sync { reply }).unwrap();
        assert!(!unsynced(&writer), "a Sync syncs at once");
        writer.shutdown();
    }
}
