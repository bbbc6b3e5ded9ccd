//! One group, in its phases: apply the commands, maintain (stage due work, prune), claim for
//! the pools, log and sync, answer.
//!
//! Every caller is answered in one place ([`Group::answer`]), with the value its command
//! produced if the group is durable, or with the group's error if it is not. After an
//! error, the commands that follow are still taken in — their callers hear the error, their
//! in-memory effects (a freed thread, a stopped pool) still happen — but nothing more is
//! applied to the transaction.

use std::time::Instant;

use crossbeam_channel::Receiver;
use redb::WriteTransaction;

use std::sync::Arc;

use crate::error::Error;
use crate::metrics::Samples;
use crate::model::{PoolId, TaskId};
use crate::signal::{AttemptSignal, StopReason};
use crate::store::noted::Noted;
use crate::store::pools::ewma;
use crate::store::tx::Tx;
use crate::store::verbs::{Completion, Job, Serves};
use crate::store::writer::command::{Command, Reply};
use crate::store::writer::state::{MAINTENANCE_BATCH, Writer};

/// What the writer loop does after a group.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Next {
    /// Work is left over (a maintenance batch was full, or jobs came back): run again at once.
    pub more: bool,
    /// The spool is closing.
    pub shutdown: bool,
}

/// An answer waiting for the group's outcome.
type Answer = Box<dyn FnOnce(&Result<(), Error>) + Send>;

/// What one group collects on its way to its last phase.
#[derive(Default)]
pub(super) struct Group {
    /// Callers waiting for this group, each with what it hears if the group is durable.
    answers: Vec<Answer>,
    /// Drain claims, served after maintenance so they see everything due.
    claims: Vec<(Serves, usize, Reply<Vec<Job>>)>,
    /// Jobs claimed for live pools, handed out once the group is durable.
    handoffs: Vec<(PoolId, Vec<Job>)>,
    /// Completions applied in this group, applied again with the next one if it fails.
    completions: Vec<Completion>,
    /// Tasks this group ended, whose waiters are woken once it is readable.
    finalized: Vec<TaskId>,
    /// The events it noted, sent once it is durable (if someone subscribes).
    events: Vec<Noted>,
    /// What it counts into the metrics once it is durable, at the group's time.
    samples: Samples,
    at_ms: u64,
    /// Running attempts to ask to stop once the group is durable (revoked in it).
    stops: Vec<Arc<AttemptSignal>>,
    /// Enqueue callers in the group (for the gathering window, see `Writer::gather`).
    callers: usize,
    next: Next,
    /// A `Sync` asked for everything before it to be on disk (buffered durability).
    flush: bool,
    /// `Checkpoint`s: everything before them goes into the queue file once the group is
    /// logged; each hears how that went (a failed checkpoint fails no one else's group).
    checkpoints: Vec<Reply<()>>,
}

impl Group {
    /// `reply` hears `value` if the group is durable, else the group's error.
    fn reply<T: Send + 'static>(&mut self, reply: Reply<T>, value: Result<T, Error>) {
        self.answers
            .push(Box::new(move |group: &Result<(), Error>| {
                reply.send(match group {
                    Ok(()) => value,
                    Err(e) => Err(e.clone()),
                });
            }));
    }

    /// Answers every caller of the group: the one place they hear from it.
    fn answer(&mut self, result: &Result<(), Error>) {
        // Claims the group did not reach (it failed first) hear its error.
        for (_, _, reply) in self.claims.drain(..) {
            reply.send(result.clone().map(|()| Vec::new()));
        }
        for reply in self.checkpoints.drain(..) {
            reply.send(result.clone());
        }
        for answer in self.answers.drain(..) {
            answer(result);
        }
    }
}

/// The transaction a group applies its commands to, or the error that stopped it.
// One lives on the writer's stack per group; boxing the transaction would cost an
// allocation per group for nothing.
#[allow(clippy::large_enum_variant)]
enum Applying<'t> {
    Open(Tx<'t>),
    Failed(Error),
}

impl<'t> Applying<'t> {
    /// Applies `f` to the transaction, unless the group has failed already; an error fails
    /// the group.
    fn run<T>(&mut self, f: impl FnOnce(&mut Tx<'t>) -> Result<T, Error>) -> Result<T, Error> {
        let result = match self {
            Applying::Failed(e) => return Err(e.clone()),
            Applying::Open(tx) => f(tx),
        };
        if let Err(e) = &result {
            *self = Applying::Failed(e.clone());
        }
        result
    }
}

impl Writer {
    /// Runs one group of `cmds`; with `gather`, also the commands of producers that join it
    /// (see `Writer::gather`).
    pub(super) fn group(&mut self, cmds: Vec<Command>, gather: Option<&Receiver<Command>>) -> Next {
        self.sync_if_due();
        let started = Instant::now();
        let mut group = Group::default();
        let result = self.run_phases(cmds, gather, &mut group);
        if gather.is_some() {
            self.last_callers = group.callers;
        }
        if !group.handoffs.is_empty() || !group.completions.is_empty() {
            let us = started.elapsed().as_secs_f64() * 1e6;
            self.avg_cycle_us = Some(ewma(self.avg_cycle_us, us));
        }
        self.answer(group, result)
    }

    fn run_phases(
        &mut self,
        cmds: Vec<Command>,
        gather: Option<&Receiver<Command>>,
        group: &mut Group,
    ) -> Result<(), Error> {
        #[cfg(test)]
        if std::mem::take(&mut self.panic_next_group) {
            panic!("injected: redb would panic here on a damaged page");
        }
        let now = self.config.clock.now_ms();
        group.at_ms = now;
        self.publish_before(&cmds);
        let txn = match self.take_txn() {
            Ok(txn) => txn,
            Err(e) => {
                self.take_in(&mut Applying::Failed(e.clone()), cmds, gather, group);
                return Err(e);
            }
        };
        let (tally, redo, changed) = {
            let mut tx = self.apply_commands(&txn, now, cmds, gather, group)?;
            let due = self.maintain(&mut tx, now, group)?;
            if let Some(&(base, sealed)) = self.orphan_chords.last() {
                // A part per group; if the group fails, the next open finds the chord again.
                if !tx.finish_orphan_part(base, sealed)? {
                    self.orphan_chords.pop();
                }
                group.next.more |= !self.orphan_chords.is_empty();
            }
            self.claim(&mut tx, group)?;
            if tx.changed() {
                // Progress reported since the last commit goes with this one (no sync of its
                // own).
                for (id, attempt, json) in self.progress.take_dirty() {
                    tx.store_progress(id, attempt, json)?;
                }
            }
            let tally = tx.finish(&self.counts)?;
            // A claim a rate refused goes when its next token is due; one that parked a full
            // batch claims again at once.
            let token = tx.flow.take_wake();
            group.next.more |= tx.flow.take_cut();
            self.next_wake = if due {
                [tx.next_wake()?, token].into_iter().flatten().min()
            } else {
                // An entry removed since the last scan can only make this wake-up early, and
                // an early wake-up rescans.
                [self.next_wake, tx.wake_hint(), token]
                    .into_iter()
                    .flatten()
                    .min()
            };
            group.finalized = tx.take_finalized();
            group.events = tx.take_events();
            group.samples = std::mem::take(&mut tx.samples);
            let changed = tx.changed();
            (tally, self.take_back(tx), changed)
        };
        // Phase 4: log and sync (an unchanged transaction stays open for the next group).
        if changed {
            self.commit(txn, redo, tally)?;
        } else {
            self.redo = redo;
            self.held = Some(txn);
        }
        if !group.checkpoints.is_empty() {
            let done = self
                .take_txn()
                .and_then(|txn| self.commit_durable(txn, None, false));
            for reply in std::mem::take(&mut group.checkpoints) {
                group.reply(reply, done.clone());
            }
        } else if group.flush {
            self.sync_log()?;
        }
        Ok(())
    }

    /// Answers commands without applying them, once the writer no longer runs: each caller
    /// hears why (the writer's stop, or `Closed`), and what the commands do to the writer's
    /// memory still happens (a stopped pool is forgotten).
    pub(super) fn refuse(&mut self, cmds: impl IntoIterator<Item = Command>) {
        let e = self.stopped_error();
        let mut group = Group::default();
        let mut step = Applying::Failed(e.clone());
        for cmd in cmds {
            self.apply(&mut step, cmd, &mut group);
        }
        group.answer(&Err(e));
    }

    /// Phase 1: applies the group's commands to a transaction of `txn`; returns it, or the
    /// error that failed the group.
    fn apply_commands<'t>(
        &mut self,
        txn: &'t WriteTransaction,
        now: u64,
        cmds: Vec<Command>,
        gather: Option<&Receiver<Command>>,
        group: &mut Group,
    ) -> Result<Tx<'t>, Error> {
        let mut step = Applying::Open(self.open_tx(txn, now));
        self.take_in(&mut step, cmds, gather, group);
        match step {
            Applying::Open(tx) => Ok(tx),
            Applying::Failed(e) => Err(e),
        }
    }

    /// Phase 2: stages due work and prunes, when something in the timed indexes can be due
    /// (their earliest entry is known from the last scan plus what this group added).
    /// Returns whether it ran.
    fn maintain(&mut self, tx: &mut Tx<'_>, now: u64, group: &mut Group) -> Result<bool, Error> {
        let due = [self.next_wake, tx.wake_hint()]
            .into_iter()
            .flatten()
            .any(|w| w <= now);
        if due {
            group.next.more |= tx.stage_due(MAINTENANCE_BATCH, &mut self.catalog)?;
            group.next.more |= tx.prune(MAINTENANCE_BATCH)?;
        }
        Ok(due)
    }

    /// Applies the group's commands, and those of the producers that join it during the
    /// gathering window.
    fn take_in(
        &mut self,
        step: &mut Applying<'_>,
        cmds: Vec<Command>,
        gather: Option<&Receiver<Command>>,
        group: &mut Group,
    ) {
        let retried = std::mem::take(&mut self.retry);
        for completion in retried {
            let catalog = &mut self.catalog;
            let _ = step.run(|tx| tx.complete(&completion, catalog));
            group.completions.push(completion);
        }
        let callers = cmds.iter().filter(|c| c.is_enqueue()).count();
        for cmd in cmds {
            self.apply(step, cmd, group);
        }
        if let Some(rx) = gather {
            self.gather(rx, callers, |this, cmd| this.apply(step, cmd, group));
        }
    }

    /// Asks the running attempts `running` (id, attempt) a revoke reached to stop, once the
    /// group is durable (an attempt that has ended since has no signal).
    fn stop_running(&self, running: impl IntoIterator<Item = (u64, u32)>, group: &mut Group) {
        for (id, attempt) in running {
            if let Some((a, signal)) = self.signals.get(&id)
                && *a == attempt
            {
                group.stops.push(signal.clone());
            }
        }
    }

    /// Applies one command: its change to the transaction, its effect on the writer's memory,
    /// and the answer its caller will hear.
    fn apply(&mut self, step: &mut Applying<'_>, cmd: Command, group: &mut Group) {
        match cmd {
            Command::Enqueue { tasks, reply } => {
                group.callers += 1;
                let catalog = &mut self.catalog;
                let ids = step.run(|tx| tx.insert_all(tasks, catalog));
                group.reply(reply, ids);
            }
            Command::Complete {
                pool,
                mut completion,
            } => {
                self.pools.finished(pool, completion.run_us);
                self.forget_signal(completion.id.0, completion.attempt);
                if completion.progress.is_none() {
                    completion.progress = self.progress.take(completion.id, completion.attempt);
                }
                let catalog = &mut self.catalog;
                let _ = step.run(|tx| tx.complete(&completion, catalog));
                group.completions.push(completion);
            }
            Command::Revoke { id, reply } => {
                let done = step.run(|tx| tx.revoke(id.0)).and_then(|answer| answer);
                let answer = done.map(|revoking| {
                    self.stop_running(revoking.running.map(|a| (id.0, a)), group);
                    revoking.answer
                });
                group.reply(reply, answer);
            }
            Command::RevokeWhere { filter, reply } => {
                let catalog = &self.catalog;
                let done = step.run(|tx| tx.revoke_where(&filter, catalog));
                let answer = done.map(|(revoked, running)| {
                    self.stop_running(running, group);
                    revoked
                });
                group.reply(reply, answer);
            }
            Command::RevokeWorkflow { id, reply } => {
                let done = step
                    .run(|tx| tx.revoke_workflow(id.0))
                    .and_then(|answer| answer);
                let answer = done.map(|(revoked, running)| {
                    self.stop_running(running, group);
                    revoked
                });
                group.reply(reply, answer);
            }
            Command::RetryWhere { filter, reply } => {
                let catalog = &self.catalog;
                let done = step.run(|tx| tx.retry_where(&filter, catalog));
                group.reply(reply, done);
            }
            Command::Retry { id, reply } => {
                let done = step
                    .run(|tx| tx.retry_final(id.0))
                    .and_then(|answer| answer);
                group.reply(reply, done);
            }
            Command::Forget { id, reply } => {
                let done = step.run(|tx| tx.forget(id.0)).and_then(|answer| answer);
                group.reply(reply, done);
            }
            Command::Release { pool, id, attempt } => {
                self.pools.released(pool);
                self.forget_signal(id.0, attempt);
                // If the group fails, the task stays running in the file; the next open gives
                // the attempt back.
                let _ = step.run(|tx| tx.release(id.0, attempt));
            }
            Command::Register { pool, jobs, reply } => {
                self.pools.register(pool, jobs);
                group.reply(reply, Ok(()));
            }
            Command::Unregister { pool, reply } => {
                self.pools.unregister(pool);
                group.reply(reply, Ok(()));
            }
            Command::Claim { serves, max, reply } => group.claims.push((serves, max, reply)),
            Command::Schedule { op, reply } => {
                // A missing schedule is the caller's error, not the group's.
                let catalog = &mut self.catalog;
                let changed = step
                    .run(|tx| tx.schedule_op(op, catalog))
                    .and_then(|answer| answer);
                group.reply(reply, changed);
            }
            Command::Flow { op, reply } => {
                let catalog = &mut self.catalog;
                let changed = step.run(|tx| tx.flow_op(op, catalog));
                group.reply(reply, changed);
            }
            Command::Parts { op, reply } => {
                let catalog = &mut self.catalog;
                let answer = step.run(|tx| tx.part_op(op, catalog)).and_then(|a| a);
                group.reply(reply, answer);
            }
            Command::Sync { reply } => {
                group.flush = true;
                group.reply(reply, Ok(()));
            }
            Command::Checkpoint { reply } => group.checkpoints.push(reply),
            Command::Tick => {}
            Command::Shutdown => group.next.shutdown = true,
        }
    }

    /// Phase 3: fills the live pools' free slots, then serves the drains' claims.
    fn claim(&mut self, tx: &mut Tx<'_>, group: &mut Group) -> Result<(), Error> {
        let cycle_us = self.avg_cycle_us.unwrap_or(0.0);
        group.handoffs = self.pools.claim(tx, &self.catalog, cycle_us)?;
        for (_, jobs) in &group.handoffs {
            self.note_signals(jobs);
        }
        let mut failed = None;
        for (serves, max, reply) in std::mem::take(&mut group.claims) {
            let jobs = match &failed {
                Some(e) => Err(Error::clone(e)),
                None => tx.claim(&self.catalog, &serves, max),
            };
            match &jobs {
                Ok(jobs) => self.note_signals(jobs),
                Err(e) => {
                    failed.get_or_insert_with(|| e.clone());
                }
            }
            group.reply(reply, jobs);
        }
        failed.map_or(Ok(()), Err)
    }

    /// The attempt `attempt` of `id` is over: its signal goes (a newer attempt's stays).
    fn forget_signal(&mut self, id: u64, attempt: u32) {
        if let Some(entry) = self.signals.remove(&id)
            && entry.0 != attempt
        {
            self.signals.insert(id, entry);
        }
    }

    /// Keeps the signals of claimed attempts, for revokes while they run.
    fn note_signals(&mut self, jobs: &[Job]) {
        for job in jobs {
            self.signals
                .insert(job.id.0, (job.attempt, job.signal.clone()));
        }
    }

    /// Phase 5: the group is durable, or it failed. Workers get their jobs, callers their
    /// answers, waiters of finished tasks their wake-up; after a failure, the completions
    /// are kept to be applied again.
    fn answer(&mut self, mut group: Group, result: Result<(), Error>) -> Next {
        let mut next = group.next;
        match &result {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                self.config.metrics.record(&group.samples, group.at_ms);
                // Before the jobs go out: a task's `Enqueued` comes before its `Started`.
                if !group.events.is_empty() {
                    let catalog = &self.catalog;
                    let events = group.events.drain(..).map(|n| n.into_event(catalog));
                    self.config.events.publish(events.collect());
                }
                // Workers first: a task should not wait for its enqueuer to be woken.
                let returned = self.pools.hand_out(std::mem::take(&mut group.handoffs));
                for signal in group.stops.drain(..) {
                    signal.stop(StopReason::Revoked);
                }
                group.answer(&result);
                // A woken waiter reads the result: it must find it in redb.
                if self.waiters.any(&group.finalized) {
                    self.publish_or_retry();
                }
                self.waiters.notify(&group.finalized);
                // Jobs whose pool vanished between claim and hand-off go back to the queue.
                next.more |= !returned.is_empty();
                for job in returned {
                    if self.release_returned(&job).is_err() {
                        self.stale = true;
                    }
                }
            }
            Err(e) => {
                self.failures += 1;
                tracing::error!(error = %e, "taskspool group commit failed; nothing in it was applied");
                group.answer(&result);
                self.retry = std::mem::take(&mut group.completions);
                self.stale = true;
                // The completions are applied again with the next group, which runs at once
                // if a command comes, else after a backoff (slept by the writer thread,
                // outside the lock, see `Writer::wait_timeout`).
                let pause = std::time::Duration::from_millis(10u64 << self.failures.min(7));
                self.retry_at = Some(Instant::now() + pause);
                next.more = false;
            }
        }
        next
    }

    /// Gives back a job whose pool is gone, in a transaction of its own.
    fn release_returned(&mut self, job: &Job) -> Result<(), Error> {
        self.forget_signal(job.id.0, job.attempt);
        let txn = self.take_txn()?;
        let (tally, redo) = {
            let mut tx = self.open_tx(&txn, self.config.clock.now_ms());
            tx.release(job.id.0, job.attempt)?;
            let tally = tx.finish(&self.counts)?;
            (tally, self.take_back(tx))
        };
        self.commit(txn, redo, tally)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use crate::store::faults::{enqueue, faulty_spool, task};
    use crate::store::writer::state::Writer;

    /// After a failed group the writer backs off before it applies the group's completions
    /// again, but it does not hold its lock meanwhile: a reader, or a caller running its own
    /// group, goes ahead at once. (Here the backoff is its longest, 1.28 s: the writer has
    /// failed seven groups in a row.)
    #[test]
    fn the_backoff_after_a_failed_group_does_not_hold_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let (log_full, _, mut writer, _db) = faulty_spool(&path);
        assert_eq!(enqueue(&writer, vec![task(1)]).unwrap(), vec![1]);
        crate::store::writer::lock(writer.core()).failures = 6;
        log_full.store(true, Ordering::SeqCst);
        assert!(enqueue(&writer, vec![task(2)]).is_err());
        let deadline = Instant::now() + Duration::from_secs(10);
        let backing_off = loop {
            if let Ok(w) = writer.core().try_lock() {
                let w: &Writer = &w;
                break w.retry_at.is_some_and(|at| at > Instant::now());
            }
            assert!(Instant::now() < deadline, "the writer's lock stayed taken");
            std::thread::yield_now();
        };
        assert!(backing_off, "the lock was held through the backoff");
        log_full.store(false, Ordering::SeqCst);
        assert_eq!(enqueue(&writer, vec![task(3)]).unwrap(), vec![2]);
        let w = crate::store::writer::lock(writer.core());
        assert_eq!((w.failures, w.retry_at), (0, None), "the group went ahead");
        drop(w);
        writer.shutdown();
    }
}
