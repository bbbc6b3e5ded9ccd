//! One write transaction of the writer: its tables (opened on first use), the counters and
//! per-queue counts flushed at its end, and the in-memory records of running tasks it keeps
//! in step. The state changes themselves are in `transitions`.

use std::collections::HashMap;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::codec;
use crate::error::Error;
use crate::state::TaskState;
use crate::store::catalog::Catalog;
use crate::store::record::{Slot, TaskRecord};
use crate::store::redo::{Logged, Op, Redo};
use crate::store::schema::*;

/// The id and sequence counters, loaded at open and written back by every transaction that
/// changes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub next_id: u64,
    pub next_seq: u64,
}

/// A map keyed by task id. Ids are sequential integers: a multiplicative hash spreads them
/// well and costs a fraction of the default SipHash.
pub(crate) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher behind [`IdMap`].
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Loads the records of every running task (the writer's cache after a failed commit).
pub(crate) fn load_running(txn: &WriteTransaction) -> Result<IdMap<TaskRecord>, Error> {
    let running = txn.open_table(RUNNING)?;
    let tasks = txn.open_table(TASKS)?;
    let mut map = IdMap::default();
    for entry in running.iter()? {
        let (id, value) = entry?;
        let (id, (attempt, started)) = (id.value(), value.value());
        if let Some(bytes) = tasks.get(id)? {
            let mut rec: TaskRecord = codec::decode(bytes.value())?;
            rec.overlay_running(attempt, started);
            map.insert(id, rec);
        }
    }
    Ok(map)
}

/// Task counts per (queue id, state code): the `COUNTS` table without its counters.
///
/// The writer keeps them, and the id and sequence counters, in memory: a transaction's changes
/// go into its redo record (so the log restores them after a crash), and only durable commits
/// write them to the table (see [`store_counts`]). Updating the table with every group would
/// make it one more B-tree in every commit (about 9 µs of a 40 µs one-task group).
pub(crate) type Counts = std::collections::BTreeMap<(u32, u8), u64>;

/// What `Spool::stats` reads without a transaction: the counts and the interned names, as of
/// the last durable (logged) group.
#[derive(Debug, Clone, Default)]
pub(crate) struct CountsView {
    pub counts: Counts,
    pub catalog: crate::store::catalog::Catalog,
}

/// What a transaction changed in the counters and counts, for the writer to keep once the
/// transaction is committed.
#[derive(Debug)]
pub(crate) struct Tally {
    pub counters: Counters,
    /// The new value of every count that changed (0: gone).
    pub counts: Vec<((u32, u8), u64)>,
}

impl Tally {
    /// Applies the changes to `counts`.
    pub(crate) fn apply(&self, counts: &mut Counts) {
        for &(key, n) in &self.counts {
            if n == 0 {
                counts.remove(&key);
            } else {
                counts.insert(key, n);
            }
        }
    }
}

/// Reads the task counts (see [`Counts`]).
pub(crate) fn load_counts(txn: &WriteTransaction) -> Result<Counts, Error> {
    let table = txn.open_table(COUNTS)?;
    let mut counts = Counts::new();
    for entry in table.range((0, 0)..(COUNTERS_QUEUE, 0))? {
        let (key, n) = entry?;
        counts.insert(key.value(), n.value());
    }
    Ok(counts)
}

/// Writes the counters and every count to the file (in a durable commit): the table then
/// holds exactly `counts` and `counters`.
pub(crate) fn store_counts(
    txn: &WriteTransaction,
    counts: &Counts,
    counters: Counters,
) -> Result<(), Error> {
    let mut table = txn.open_table(COUNTS)?;
    table.retain(|key, _| counts.contains_key(&key))?;
    for (&key, &n) in counts {
        table.insert(key, n)?;
    }
    table.insert((COUNTERS_QUEUE, NEXT_ID), counters.next_id)?;
    table.insert((COUNTERS_QUEUE, NEXT_SEQ), counters.next_seq)?;
    Ok(())
}

/// Reads the id and sequence counters (1 if absent: a new file).
pub(crate) fn load_counters(txn: &WriteTransaction) -> Result<Counters, Error> {
    let counts = txn.open_table(COUNTS)?;
    let get = |key: u8| -> Result<u64, Error> {
        Ok(counts
            .get((COUNTERS_QUEUE, key))?
            .map(|v| v.value())
            .unwrap_or(1))
    };
    Ok(Counters {
        next_id: get(NEXT_ID)?,
        next_seq: get(NEXT_SEQ)?,
    })
}

/// A key of the ready index: (queue id, name id, 9 − priority, seq).
pub(crate) type ReadyKey = (u32, u32, u8, u64);

/// A table of a write transaction, opened on first use, whose changes go to the redo record.
struct Lazy<'t, K: redb::Key + 'static, V: redb::Value + 'static> {
    def: redb::TableDefinition<'static, K, V>,
    id: u8,
    table: Option<Table<'t, K, V>>,
}

impl<'t, K: redb::Key + 'static, V: redb::Value + 'static> Lazy<'t, K, V> {
    fn new(def: redb::TableDefinition<'static, K, V>, id: u8) -> Self {
        Lazy {
            def,
            id,
            table: None,
        }
    }

    fn open<'a>(
        &'a mut self,
        txn: &'t WriteTransaction,
        redo: &'a mut Redo,
    ) -> Result<Logged<'a, 't, K, V>, Error> {
        let table = match self.table.take() {
            Some(table) => table,
            None => txn.open_table(self.def)?,
        };
        Ok(Logged {
            table: self.table.insert(table),
            redo,
            id: self.id,
        })
    }
}

/// One write transaction's open tables plus the bookkeeping that is flushed at its end.
pub(crate) struct Tx<'t> {
    txn: &'t WriteTransaction,
    pub now: u64,
    pub result_ttl_ms: Option<u64>,
    pub counters: Counters,
    pub(crate) counters_dirty: bool,
    queues_table: Lazy<'t, &'static str, u32>,
    names_table: Lazy<'t, &'static str, u32>,
    tasks: Lazy<'t, u64, &'static [u8]>,
    ready: Lazy<'t, ReadyKey, u64>,
    scheduled: Lazy<'t, (u64, u64), u64>,
    running: Lazy<'t, u64, (u32, u64)>,
    result_expiry: Lazy<'t, (u64, u64), ()>,
    counts: Lazy<'t, (u32, u8), u64>,
    schedules: Lazy<'t, &'static str, &'static [u8]>,
    schedule_due: Lazy<'t, (u64, &'static str), ()>,
    task_expiry: Lazy<'t, (u64, u64), ()>,
    /// Count changes per (queue, state) in this transaction: a handful of entries, so a
    /// vector beats hashing on every transition.
    pub(crate) count_delta: Vec<((u32, u8), i64)>,
    /// Tasks that reached a final state in this transaction (their waiters are woken after commit).
    pub finalized: Vec<u64>,
    /// Whether anything was written (an unchanged transaction is aborted, not committed).
    pub changed: bool,
    /// The earliest due time among the timed-index entries added in this transaction.
    pub wake_hint: Option<u64>,
    /// Records of running tasks, exactly those in the `running` table, kept by the writer
    /// across transactions: a running task's stored record is not rewritten at claim, so this
    /// is where its current state lives until it completes. Every change goes through `put`;
    /// after a failed group the writer reloads it with its next transaction.
    pub running_cache: IdMap<TaskRecord>,
    /// Attempts completed in this transaction whose `running` entries are removed in one sweep
    /// by `finish` (one pass over a small table instead of one tree descent per task).
    pub(crate) running_done: Vec<(u64, u32)>,
    /// Ready-index entries added in this transaction (up to a few thousand; more go to the
    /// table at once), written to the table by `finish`. A task claimed in the transaction
    /// that made it ready (an enqueue to an idle worker) never touches the ready table: one
    /// B-tree fewer in that commit.
    pub(crate) pending_ready: std::collections::BTreeMap<ReadyKey, u64>,
    /// Every row this transaction changed, for the write-ahead log.
    pub(crate) redo: Redo,
}

impl<'t> Tx<'t> {
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        now: u64,
        counters: Counters,
        result_ttl_ms: Option<u64>,
    ) -> Result<Tx<'t>, Error> {
        Ok(Tx {
            txn,
            now,
            result_ttl_ms,
            counters,
            counters_dirty: false,
            queues_table: Lazy::new(QUEUES, table_id::QUEUES),
            names_table: Lazy::new(NAMES, table_id::NAMES),
            tasks: Lazy::new(TASKS, table_id::TASKS),
            ready: Lazy::new(READY, table_id::READY),
            scheduled: Lazy::new(SCHEDULED, table_id::SCHEDULED),
            running: Lazy::new(RUNNING, table_id::RUNNING),
            result_expiry: Lazy::new(RESULT_EXPIRY, table_id::RESULT_EXPIRY),
            counts: Lazy::new(COUNTS, table_id::COUNTS),
            schedules: Lazy::new(SCHEDULES, table_id::SCHEDULES),
            schedule_due: Lazy::new(SCHEDULE_DUE, table_id::SCHEDULE_DUE),
            task_expiry: Lazy::new(TASK_EXPIRY, table_id::TASK_EXPIRY),
            count_delta: Vec::new(),
            finalized: Vec::new(),
            changed: false,
            wake_hint: None,
            running_cache: IdMap::default(),
            running_done: Vec::new(),
            pending_ready: std::collections::BTreeMap::new(),
            redo: Redo::default(),
        })
    }

    // Tables are opened on first use: a small group (one enqueue, say) touches three of the
    // eleven, and opening a table costs a lookup in redb's table tree and a flush at commit.
    pub(crate) fn queues_table(&mut self) -> Result<Logged<'_, 't, &'static str, u32>, Error> {
        self.queues_table.open(self.txn, &mut self.redo)
    }

    pub(crate) fn names_table(&mut self) -> Result<Logged<'_, 't, &'static str, u32>, Error> {
        self.names_table.open(self.txn, &mut self.redo)
    }

    pub(crate) fn tasks(&mut self) -> Result<Logged<'_, 't, u64, &'static [u8]>, Error> {
        self.tasks.open(self.txn, &mut self.redo)
    }

    pub(crate) fn ready(&mut self) -> Result<Logged<'_, 't, ReadyKey, u64>, Error> {
        self.ready.open(self.txn, &mut self.redo)
    }

    pub(crate) fn scheduled(&mut self) -> Result<Logged<'_, 't, (u64, u64), u64>, Error> {
        self.scheduled.open(self.txn, &mut self.redo)
    }

    pub(crate) fn running(&mut self) -> Result<Logged<'_, 't, u64, (u32, u64)>, Error> {
        self.running.open(self.txn, &mut self.redo)
    }

    pub(crate) fn result_expiry(&mut self) -> Result<Logged<'_, 't, (u64, u64), ()>, Error> {
        self.result_expiry.open(self.txn, &mut self.redo)
    }

    pub(crate) fn counts(&mut self) -> Result<Logged<'_, 't, (u32, u8), u64>, Error> {
        self.counts.open(self.txn, &mut self.redo)
    }

    pub(crate) fn schedules(
        &mut self,
    ) -> Result<Logged<'_, 't, &'static str, &'static [u8]>, Error> {
        self.schedules.open(self.txn, &mut self.redo)
    }

    pub(crate) fn schedule_due(
        &mut self,
    ) -> Result<Logged<'_, 't, (u64, &'static str), ()>, Error> {
        self.schedule_due.open(self.txn, &mut self.redo)
    }

    pub(crate) fn task_expiry(&mut self) -> Result<Logged<'_, 't, (u64, u64), ()>, Error> {
        self.task_expiry.open(self.txn, &mut self.redo)
    }

    /// Applies the row changes of one write-ahead log record (at open, before recovery).
    pub(crate) fn replay(&mut self, record: &[u8]) -> Result<(), Error> {
        let ops = crate::store::redo::decode(record).ok_or_else(|| {
            Error::Storage("write-ahead log: a record with a valid checksum is malformed".into())
        })?;
        for op in ops {
            let (table, key, value) = match op {
                Op::Put { table, key, value } => (table, key, Some(value)),
                Op::Delete { table, key } => (table, key, None),
            };
            match table {
                table_id::QUEUES => self.queues_table()?.replay(key, value)?,
                table_id::NAMES => self.names_table()?.replay(key, value)?,
                table_id::TASKS => self.tasks()?.replay(key, value)?,
                table_id::READY => self.ready()?.replay(key, value)?,
                table_id::SCHEDULED => self.scheduled()?.replay(key, value)?,
                table_id::RUNNING => self.running()?.replay(key, value)?,
                table_id::RESULT_EXPIRY => self.result_expiry()?.replay(key, value)?,
                table_id::COUNTS => self.counts()?.replay(key, value)?,
                table_id::SCHEDULES => self.schedules()?.replay(key, value)?,
                table_id::SCHEDULE_DUE => self.schedule_due()?.replay(key, value)?,
                table_id::TASK_EXPIRY => self.task_expiry()?.replay(key, value)?,
                other => {
                    return Err(Error::Storage(format!(
                        "write-ahead log: a record names table {other}, which this build does \
                         not have"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Writes what was deferred to the end of the transaction (new ready entries, the sweep of
    /// finished attempts), and works out the new counters and counts from `counts` (the
    /// writer's current ones): they go into the redo record, and come back as a [`Tally`]
    /// for the writer to keep once the transaction commits. Call once, before commit.
    pub(crate) fn finish(&mut self, counts: &Counts) -> Result<Tally, Error> {
        if !self.pending_ready.is_empty() {
            let pending = std::mem::take(&mut self.pending_ready);
            let mut ready = self.ready()?;
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
            self.running()?
                .retain_in(first..=last, |id, (attempt, _)| {
                    done.binary_search(&(id, attempt)).is_err()
                })?;
        }
        if self.counters_dirty {
            let Counters { next_id, next_seq } = self.counters;
            self.redo
                .log_count((COUNTERS_QUEUE, NEXT_ID), Some(next_id));
            self.redo
                .log_count((COUNTERS_QUEUE, NEXT_SEQ), Some(next_seq));
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
            self.redo.log_count(key, (new > 0).then_some(new));
            changed.push((key, new));
        }
        Ok(Tally {
            counters: self.counters,
            counts: changed,
        })
    }

    /// Records that something becomes due at `at_ms` (a new entry in one of the timed indexes).
    pub(crate) fn note_wake(&mut self, at_ms: u64) {
        self.wake_hint = Some(self.wake_hint.map_or(at_ms, |w| w.min(at_ms)));
    }

    /// The earliest time something becomes due: a scheduled task, a schedule's fire, an
    /// expiry, or a result to prune.
    pub(crate) fn next_wake(&mut self) -> Result<Option<u64>, Error> {
        let due = self.scheduled()?.first()?.map(|(k, _)| k.value().0);
        let prune = self.result_expiry()?.first()?.map(|(k, _)| k.value().0);
        let fire = self.schedule_due()?.first()?.map(|(k, _)| k.value().0);
        let expiry = self.task_expiry()?.first()?.map(|(k, _)| k.value().0);
        Ok([due, prune, fire, expiry].into_iter().flatten().min())
    }

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
            None => {
                self.changed = true;
                catalog.queues.intern(queue, &mut self.queues_table()?)?
            }
        };
        let n = match catalog.names.id(name) {
            Some(n) => n,
            None => {
                self.changed = true;
                catalog.names.intern(name, &mut self.names_table()?)?
            }
        };
        Ok((q, n))
    }

    pub(crate) fn get(&mut self, id: u64) -> Result<Option<TaskRecord>, Error> {
        if let Some(rec) = self.running_cache.get(&id) {
            return Ok(Some(rec.clone()));
        }
        match self.tasks()?.get(id)? {
            Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a record. A running task's record stays in memory (its `running` entry is what
    /// is durable); any other state is written to the file.
    pub(crate) fn put(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        self.changed = true;
        if rec.state == TaskState::Running {
            self.running_cache.insert(id, rec.clone());
            return Ok(());
        }
        self.running_cache.remove(&id);
        let bytes = codec::encode(rec)?;
        self.tasks()?.insert(id, bytes.as_slice())?;
        Ok(())
    }

    pub(crate) fn count(&mut self, queue: u32, state: TaskState, delta: i64) {
        let key = (queue, state.code());
        match self.count_delta.iter_mut().find(|(k, _)| *k == key) {
            Some((_, d)) => *d += delta,
            None => self.count_delta.push((key, delta)),
        }
    }

    pub(crate) fn set_state(&mut self, rec: &mut TaskRecord, state: TaskState) {
        if rec.state != state {
            self.count(rec.queue, rec.state, -1);
            self.count(rec.queue, state, 1);
            rec.state = state;
        }
    }

    /// Removes the task from whichever index holds it.
    pub(crate) fn unslot(&mut self, rec: &mut TaskRecord) -> Result<(), Error> {
        match rec.slot {
            Slot::None => {}
            Slot::Ready { seq } => {
                let key = rec.ready_key(seq);
                if self.pending_ready.remove(&key).is_none() {
                    self.ready()?.remove(key)?;
                }
            }
            Slot::Scheduled { at_ms, seq } => {
                self.scheduled()?.remove((at_ms, seq))?;
            }
        }
        rec.slot = Slot::None;
        Ok(())
    }
}
