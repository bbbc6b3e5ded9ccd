//! One write transaction of the writer: its tables (`schema::Tables`: opened on first use,
//! every change logged), the bookkeeping flushed at its end (new ready entries, the sweep of
//! finished attempts, the counters and counts), and the writer's in-memory records of running
//! tasks, which it keeps in step. The state changes themselves are the verbs in
//! `transitions`, `claim` and `schedules`.

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use crate::error::Error;
use crate::metrics::Samples;
use crate::model::{TaskId, TaskState};
use crate::store::catalog::Catalog;
use crate::store::counts::{Counters, Counts, Tally, log_count, log_counters};
use crate::store::errors::Db;
use crate::store::flow::Flow;
use crate::store::idmap::IdMap;
use crate::store::noted::Noted;
use crate::store::record::{Slot, TaskRecord};
use crate::store::redo::Redo;
use crate::store::running::Running;
use crate::store::schema::{RUNNING, ReadyKey, TASKS, Tables};

/// Most ready entries a transaction keeps in memory (see `Tx::pending_ready`); the rest go to
/// the table at once (keeping 100k in an in-memory B-tree first cost 6–8 % of
/// `enqueue_bulk`).
const PENDING_READY_MAX: usize = 4_096;

/// What the writer lends each transaction and takes back after it: its records of running
/// tasks, its mirror of the declared limits, and the redo buffer (whose allocation is
/// reused).
#[derive(Default)]
pub(crate) struct Lent {
    pub running: Running,
    pub flow: Flow,
    pub redo: Redo,
    /// Where the transaction notes its events, if someone subscribes (see `store::noted`).
    pub events: Option<Vec<Noted>>,
}

/// A ready-index entry met by a claim: (position: 9 − priority and seq), the index of its
/// (queue, name) pair in the claim, the task id, and whether the entry is only in memory.
pub(crate) type Candidate = ((u8, u64), usize, u64, bool);

/// One write transaction's tables plus the bookkeeping that is flushed at its end.
pub(crate) struct Tx<'t> {
    tables: Tables<'t>,
    now: u64,
    result_ttl_ms: Option<u64>,
    counters: Counters,
    counters_dirty: bool,
    /// Count changes per (queue, state) in this transaction: a handful of entries, so a
    /// vector beats hashing on every transition.
    count_delta: Vec<((u32, u8), i64)>,
    /// Tasks that reached a final state in this transaction (their waiters are woken after
    /// commit).
    finalized: Vec<TaskId>,
    /// The earliest due time among the timed-index entries added in this transaction.
    wake_hint: Option<u64>,
    /// Records of running tasks, exactly those in the `running` table, kept by the writer
    /// across transactions: a running task's stored record is not rewritten at claim, so this
    /// is where its current state lives until it completes. Every change goes through `put`;
    /// after a failed group the writer reloads it with its next transaction.
    running: Running,
    /// The declared limits and pauses (the `flow` table's mirror, see `store::flow`), kept
    /// by the writer like `running`.
    pub(crate) flow: Flow,
    /// Attempts completed in this transaction whose `running` entries are removed in one sweep
    /// by `finish` (one pass over a small table instead of one tree descent per task).
    running_done: Vec<(u64, u32)>,
    /// Ready-index entries added in this transaction (up to [`PENDING_READY_MAX`]), written
    /// to the table by `finish`. A task claimed in the transaction that made it ready (an
    /// enqueue to an idle worker) never touches the ready table: one B-tree fewer in that
    /// commit.
    pending_ready: BTreeMap<ReadyKey, u64>,
    /// Workflow steps to fail because a task before them did not succeed, with the reason
    /// (see `store::workflow`), and whether that loop is running.
    pub(crate) cascade: Vec<(u64, String)>,
    pub(crate) cascading: bool,
    /// Waiting workflow steps counted down in this transaction (a chord's body, by each of
    /// the members completed in it): written once, by `finish`, instead of once per member.
    /// Each is also in the table, as it stood before this transaction.
    counted: IdMap<TaskRecord>,
    /// Per workflow touched in this transaction, how many of its tasks became final (less
    /// those that left a final state), written by `finish` (see `store::workflow_end`).
    pub(crate) workflow_ends: Vec<(u64, i64)>,
    /// The events noted in this transaction, if they are collected.
    events: Option<Vec<Noted>>,
    /// The rows of the `by_state` index this transaction read or changed, written by
    /// `finish` (see `store::by_state`).
    pub(crate) state_rows: BTreeMap<(u8, u64), Vec<u8>>,
    /// What this transaction counts into the metrics once it is durable (see
    /// `crate::metrics`).
    pub(crate) samples: Samples,
}

impl<'t> Tx<'t> {
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        now: u64,
        counters: Counters,
        result_ttl_ms: Option<u64>,
        lent: Lent,
    ) -> Tx<'t> {
        let Lent {
            running,
            flow,
            mut redo,
            events,
        } = lent;
        redo.clear();
        Tx {
            tables: Tables::new(txn, redo),
            now,
            result_ttl_ms,
            counters,
            counters_dirty: false,
            count_delta: Vec::new(),
            workflow_ends: Vec::new(),
            finalized: Vec::new(),
            wake_hint: None,
            running,
            flow,
            running_done: Vec::new(),
            pending_ready: BTreeMap::new(),
            cascade: Vec::new(),
            cascading: false,
            counted: IdMap::default(),
            events,
            state_rows: BTreeMap::new(),
            samples: Samples::default(),
        }
    }

    /// The transaction's tables.
    pub(crate) fn tables(&mut self) -> &mut Tables<'t> {
        &mut self.tables
    }

    /// The time this transaction runs at, in ms since the epoch.
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// How long finished tasks are kept, if they are pruned.
    pub(crate) fn result_ttl_ms(&self) -> Option<u64> {
        self.result_ttl_ms
    }

    /// Writes what was deferred to the end of the transaction (new ready entries, the sweep of
    /// finished attempts), and works out the new counters and counts from `counts` (the
    /// writer's current ones): they go into the redo record, and come back as a [`Tally`]
    /// for the writer to keep once the transaction is durable. Call once, before commit.
    pub(crate) fn finish(&mut self, counts: &Counts) -> Result<Tally, Error> {
        if !self.counted.is_empty() {
            let counted = std::mem::take(&mut self.counted);
            let mut tasks = self.tables.tasks()?;
            for (id, rec) in counted {
                tasks.insert(id, rec.encode()?.as_slice())?;
            }
        }
        if !self.workflow_ends.is_empty() {
            self.store_workflow_ends()?;
        }
        if !self.state_rows.is_empty() {
            self.store_state_rows()?;
        }
        if !self.pending_ready.is_empty() {
            let pending = std::mem::take(&mut self.pending_ready);
            let mut ready = self.tables.ready()?;
            for (key, id) in pending {
                ready.insert(key, id)?;
            }
        }
        if !self.running_done.is_empty() {
            let mut done = std::mem::take(&mut self.running_done);
            done.sort_unstable();
            let (first, last) = (done[0].0, done[done.len() - 1].0);
            // Only the entry of the completed attempt goes: a task retried and claimed again
            // in this same transaction has a newer attempt in its entry and keeps it.
            self.tables
                .running()?
                .retain_in(first..=last, |id, (attempt, _)| {
                    done.binary_search(&(id, attempt)).is_err()
                })?;
        }
        if self.counters_dirty {
            log_counters(self.tables.redo(), self.counters);
            self.counters_dirty = false;
        }
        let mut changed = Vec::new();
        for (key, delta) in std::mem::take(&mut self.count_delta) {
            if delta == 0 {
                continue;
            }
            let new = counts
                .get(&key)
                .copied()
                .unwrap_or(0)
                .saturating_add_signed(delta);
            log_count(self.tables.redo(), key, (new > 0).then_some(new));
            changed.push((key, new));
        }
        Ok(Tally {
            counters: self.counters,
            counts: changed,
        })
    }

    /// Whether the transaction changed anything (an unchanged one needs no commit).
    pub(crate) fn changed(&mut self) -> bool {
        self.tables.redo().changed()
    }

    /// The earliest due time among the timed-index entries this transaction added.
    pub(crate) fn wake_hint(&self) -> Option<u64> {
        self.wake_hint
    }

    /// The tasks this transaction ended in a final state.
    pub(crate) fn take_finalized(&mut self) -> Vec<TaskId> {
        std::mem::take(&mut self.finalized)
    }

    /// Ends the transaction's use of what the writer lent it.
    pub(crate) fn into_lent(self) -> Lent {
        Lent {
            running: self.running,
            flow: self.flow,
            redo: self.tables.into_redo(),
            events: None,
        }
    }

    /// Records that something becomes due at `at_ms` (a new entry in one of the timed indexes).
    pub(crate) fn note_wake(&mut self, at_ms: u64) {
        self.wake_hint = Some(self.wake_hint.map_or(at_ms, |w| w.min(at_ms)));
    }

    /// The earliest time something becomes due: a scheduled task, a schedule's fire, an
    /// expiry, or a result to prune.
    pub(crate) fn next_wake(&mut self) -> Result<Option<u64>, Error> {
        let t = &mut self.tables;
        let due = t.scheduled()?.first().db()?.map(|(k, _)| k.value().0);
        let prune = t.result_expiry()?.first().db()?.map(|(k, _)| k.value().0);
        let fire = t.schedule_due()?.first().db()?.map(|(k, _)| k.value().0);
        let expiry = t.task_expiry()?.first().db()?.map(|(k, _)| k.value().0);
        Ok([due, prune, fire, expiry].into_iter().flatten().min())
    }

    /// The id the next new task gets.
    pub(crate) fn peek_next_id(&self) -> u64 {
        self.counters.next_id
    }

    /// A new task id.
    pub(crate) fn next_id(&mut self) -> u64 {
        let id = self.counters.next_id;
        self.counters.next_id += 1;
        self.counters_dirty = true;
        id
    }

    /// Reserves `n` consecutive new task ids at once; returns the first.
    pub(crate) fn reserve_ids(&mut self, n: u64) -> u64 {
        let first = self.counters.next_id;
        self.counters.next_id += n;
        self.counters_dirty = true;
        first
    }

    /// A new index sequence number (FIFO order).
    pub(crate) fn next_seq(&mut self) -> u64 {
        let seq = self.counters.next_seq;
        self.counters.next_seq += 1;
        self.counters_dirty = true;
        seq
    }

    /// The ids of a queue and a task name, creating them on first use.
    pub(crate) fn intern(
        &mut self,
        queue: &str,
        name: &str,
        catalog: &mut Catalog,
    ) -> Result<(u32, u32), Error> {
        let q = match catalog.queues.id(queue) {
            Some(q) => q,
            None => catalog.queues.intern(queue, &mut self.tables.queues()?)?,
        };
        let n = match catalog.names.id(name) {
            Some(n) => n,
            None => catalog.names.intern(name, &mut self.tables.names()?)?,
        };
        Ok((q, n))
    }

    pub(crate) fn get(&mut self, id: u64) -> Result<Option<TaskRecord>, Error> {
        if let Some(rec) = self.running.get(id) {
            return Ok(Some(rec.clone()));
        }
        if !self.counted.is_empty()
            && let Some(rec) = self.counted.get(&id)
        {
            return Ok(Some(rec.clone()));
        }
        match self.tables.tasks()?.get(id).db()? {
            Some(bytes) => Ok(Some(TaskRecord::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a record. A running task's record stays in memory (its `running` entry is what
    /// is durable); any other state is written to the file.
    pub(crate) fn put(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        if rec.flow.unique.is_some() {
            self.release_unique(id, rec)?;
        }
        if rec.state == TaskState::Running {
            self.running.insert(id, rec.clone());
            return Ok(());
        }
        self.running.remove(id);
        if !self.counted.is_empty() {
            self.counted.remove(&id);
        }
        let bytes = rec.encode()?;
        self.tables.tasks()?.insert(id, bytes.as_slice())?;
        Ok(())
    }

    /// Counts down a waiting step already kept by [`Tx::put_counted`], if that leaves it
    /// waiting; returns whether it did (else the caller reads the record and goes on).
    pub(crate) fn count_down_counted(&mut self, id: u64) -> bool {
        match self.counted.get_mut(&id) {
            Some(rec) if rec.deps.parents_left > 1 => {
                rec.deps.parents_left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Keeps a waiting step's record whose count of parents went down but not to zero: it
    /// is written by `finish` (see `counted`).
    pub(crate) fn put_counted(&mut self, id: u64, rec: TaskRecord) {
        debug_assert_eq!(rec.state, TaskState::Waiting);
        self.counted.insert(id, rec);
    }

    /// The record of a running task, taken out of memory for its completion: `None` if the
    /// task is not running. Give it back with [`Tx::keep_running`] if the completion does
    /// not apply.
    pub(crate) fn take_running(&mut self, id: u64) -> Option<TaskRecord> {
        self.running.remove(id)
    }

    /// The running tasks' records and counts.
    pub(crate) fn running(&self) -> &Running {
        &self.running
    }

    pub(crate) fn running_mut(&mut self) -> &mut Running {
        &mut self.running
    }

    /// The running tasks' counts and the declared limits, for a claim's admission.
    pub(crate) fn running_and_flow(&mut self) -> (&Running, &mut Flow) {
        (&self.running, &mut self.flow)
    }

    pub(crate) fn keep_running(&mut self, id: u64, rec: TaskRecord) {
        self.running.insert(id, rec);
    }

    /// The attempt's `running` entry goes at the end of the transaction.
    pub(crate) fn attempt_done(&mut self, id: u64, attempt: u32) {
        self.running_done.push((id, attempt));
    }

    /// Where events are noted, if they are collected.
    pub(crate) fn events_mut(&mut self) -> Option<&mut Vec<Noted>> {
        self.events.as_mut()
    }

    /// The events noted so far (none if they are not collected).
    pub(crate) fn take_events(&mut self) -> Vec<Noted> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The task reached a final state in this transaction.
    pub(crate) fn mark_final(&mut self, id: u64) {
        self.finalized.push(TaskId(id));
    }

    /// Counts a change of the tasks in `state` on `queue` (only through `store::by_state`,
    /// which keeps the index in step).
    pub(super) fn count(&mut self, queue: u32, state: TaskState, delta: i64) {
        let key = (queue, state.code());
        match self.count_delta.iter_mut().find(|(k, _)| *k == key) {
            Some((_, d)) => *d += delta,
            None => self.count_delta.push((key, delta)),
        }
    }

    /// Removes the task from whichever index holds it.
    pub(crate) fn unslot(&mut self, rec: &mut TaskRecord) -> Result<(), Error> {
        match rec.slot {
            Slot::None => {}
            Slot::Ready { seq } => {
                let key = rec.ready_key(seq);
                if self.pending_ready.remove(&key).is_none() {
                    self.tables.ready()?.remove(key)?;
                }
            }
            Slot::Scheduled { at_ms, seq } => {
                self.tables.scheduled()?.remove((at_ms, seq))?;
            }
            Slot::Parked { seq } => self.unpark_entry(rec, seq)?,
        }
        rec.slot = Slot::None;
        Ok(())
    }

    /// Puts the task in the ready index at the back of its priority.
    pub(crate) fn make_ready(&mut self, id: u64, rec: &mut TaskRecord) -> Result<(), Error> {
        self.unslot(rec)?;
        let seq = self.next_seq();
        self.insert_ready(rec.ready_key(seq), id)?;
        rec.slot = Slot::Ready { seq };
        Ok(())
    }

    /// Adds a ready-index entry.
    pub(crate) fn insert_ready(&mut self, key: ReadyKey, id: u64) -> Result<(), Error> {
        if self.pending_ready.len() < PENDING_READY_MAX {
            self.pending_ready.insert(key, id);
        } else {
            // A bulk enqueue: far more than any claim of this transaction can take.
            self.tables.ready()?.insert(key, id)?;
        }
        Ok(())
    }

    /// Adds a new task's entry to the expiry index, if it expires.
    pub(crate) fn index_expiry(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        if let Some(exp) = rec.expires_at_ms {
            self.tables.task_expiry()?.insert((exp, id), ())?;
            self.note_wake(exp);
        }
        Ok(())
    }

    /// Puts the task in the scheduled index, due at `at_ms`.
    pub(crate) fn make_scheduled(
        &mut self,
        id: u64,
        rec: &mut TaskRecord,
        at_ms: u64,
    ) -> Result<(), Error> {
        self.unslot(rec)?;
        let seq = self.next_seq();
        self.tables.scheduled()?.insert((at_ms, seq), id)?;
        self.note_wake(at_ms);
        rec.slot = Slot::Scheduled { at_ms, seq };
        rec.due_at_ms = at_ms;
        Ok(())
    }

    /// Adds the first `want` ready entries of the (queue, name) pair `pair` (number `index`
    /// in the caller's list) to `out`, from the table and from this transaction's new ones.
    pub(crate) fn ready_heads(
        &mut self,
        index: usize,
        pair: (u32, u32),
        want: usize,
        out: &mut Vec<Candidate>,
    ) -> Result<(), Error> {
        let (q, n) = pair;
        let range = (q, n, 0, 0)..=(q, n, u8::MAX, u64::MAX);
        for entry in self.tables.ready()?.range(range.clone()).db()?.take(want) {
            let (key, id) = entry.db()?;
            let (_, _, inv, seq) = key.value();
            out.push(((inv, seq), index, id.value(), false));
        }
        for (&(_, _, inv, seq), &id) in self.pending_ready.range(range).take(want) {
            out.push(((inv, seq), index, id, true));
        }
        Ok(())
    }

    /// Removes the stored ready entries of `pair` from position `first` to `last` (a run of
    /// consecutive keys: one sweep instead of one tree descent per entry).
    pub(crate) fn remove_ready_run(
        &mut self,
        pair: (u32, u32),
        first: (u8, u64),
        last: (u8, u64),
    ) -> Result<(), Error> {
        let (q, n) = pair;
        self.tables
            .ready()?
            .retain_in((q, n, first.0, first.1)..=(q, n, last.0, last.1), |_, _| {
                false
            })
    }

    /// Removes one of this transaction's new ready entries.
    pub(crate) fn remove_pending_ready(&mut self, key: ReadyKey) {
        self.pending_ready.remove(&key);
    }
}

/// Loads the records of every running task (the writer's memory of them after a failed
/// commit).
pub(crate) fn load_running(txn: &WriteTransaction) -> Result<Running, Error> {
    let running = txn.open_table(RUNNING).db()?;
    let tasks = txn.open_table(TASKS).db()?;
    let mut map = IdMap::default();
    for entry in running.iter().db()? {
        let (id, value) = entry.db()?;
        let (id, (attempt, started)) = (id.value(), value.value());
        if let Some(bytes) = tasks.get(id).db()? {
            let mut rec = TaskRecord::decode(bytes.value())?;
            rec.overlay_running(attempt, started);
            map.insert(id, rec);
        }
    }
    Ok(Running::from_map(map))
}
