//! The id and sequence counters and the per-queue state counts: kept in memory by the writer,
//! logged with every group, and written to the `COUNTS` table only by durable commits.
//!
//! Updating the table with every group would make it one more B-tree in every commit (about
//! 9 µs of a 40 µs one-task group). Instead a transaction's changes go into its redo record
//! (so the log restores them after a crash, see [`log_count`]), and the writer keeps the
//! current values (see [`Counts`]).

use std::collections::BTreeMap;

use redb::{ReadableTable, Value, WriteTransaction};

use crate::error::Error;
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::redo::Redo;
use crate::store::schema::{COUNTERS_QUEUE, COUNTS, NEXT_ID, NEXT_SEQ, table_id};

/// The id and sequence counters, loaded at open and kept by the writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    pub next_id: u64,
    pub next_seq: u64,
}

/// Task counts per (queue id, state code): the `COUNTS` table without its counters.
pub(crate) type Counts = BTreeMap<(u32, u8), u64>;

/// What `stats` and `status` read without a transaction: the counts and the interned names,
/// as of the last durable (logged) group.
#[derive(Debug, Clone, Default)]
pub(crate) struct CountsView {
    pub counts: Counts,
    pub catalog: Catalog,
    /// The paused queues, by name.
    pub paused: Vec<String>,
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

/// Records a `COUNTS` row that the transaction does not write itself: its new value, or its
/// removal, which replay writes to the table.
pub(crate) fn log_count(redo: &mut Redo, key: (u32, u8), value: Option<u64>) {
    let key = <(u32, u8) as Value>::as_bytes(&key);
    match value {
        Some(n) => redo.put(
            table_id::COUNTS,
            key.as_ref(),
            &<u64 as Value>::as_bytes(&n),
        ),
        None => redo.delete(table_id::COUNTS, key.as_ref()),
    }
}

/// Records the counters (see [`log_count`]).
pub(crate) fn log_counters(redo: &mut Redo, counters: Counters) {
    log_count(redo, (COUNTERS_QUEUE, NEXT_ID), Some(counters.next_id));
    log_count(redo, (COUNTERS_QUEUE, NEXT_SEQ), Some(counters.next_seq));
}

/// Reads the task counts.
pub(crate) fn load_counts(txn: &WriteTransaction) -> Result<Counts, Error> {
    read_counts(&txn.open_table(COUNTS).db()?)
}

/// The task counts of a `COUNTS` table (of a write transaction, or of a snapshot).
pub(crate) fn read_counts(table: &impl ReadableTable<(u32, u8), u64>) -> Result<Counts, Error> {
    let mut counts = Counts::new();
    for entry in table.range((0, 0)..(COUNTERS_QUEUE, 0)).db()? {
        let (key, n) = entry.db()?;
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
    let mut table = txn.open_table(COUNTS).db()?;
    table.retain(|key, _| counts.contains_key(&key)).db()?;
    for (&key, &n) in counts {
        table.insert(key, n).db()?;
    }
    table
        .insert((COUNTERS_QUEUE, NEXT_ID), counters.next_id)
        .db()?;
    table
        .insert((COUNTERS_QUEUE, NEXT_SEQ), counters.next_seq)
        .db()?;
    Ok(())
}

/// Reads the id and sequence counters (1 if absent: a new file).
pub(crate) fn load_counters(txn: &WriteTransaction) -> Result<Counters, Error> {
    let counts = txn.open_table(COUNTS).db()?;
    let get = |key: u8| -> Result<u64, Error> {
        Ok(counts
            .get((COUNTERS_QUEUE, key))
            .db()?
            .map(|v| v.value())
            .unwrap_or(1))
    };
    Ok(Counters {
        next_id: get(NEXT_ID)?,
        next_seq: get(NEXT_SEQ)?,
    })
}
