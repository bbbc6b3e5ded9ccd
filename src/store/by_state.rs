//! The `by_state` index (format 8): which stored tasks are in each state, in id order, so that
//! a listing of one state (`store::query`) reads that state's entries and nothing else, and a
//! bulk retry of failed tasks does not read the succeeded ones.
//!
//! The index is a bitmap per state, in chunks of [`CHUNK_IDS`] consecutive ids: row `(state
//! code, id / CHUNK_IDS)` holds one bit per id of its chunk. A one-row-per-task index cost a
//! B-tree insert and delete for every transition, which took 30 % off `drain_noop` and a fifth
//! off `enqueue_bulk` in an alternating A/B run; tasks that move together have neighbouring
//! ids, so a group's transitions touch a few rows, each loaded once, changed in memory and
//! written once by `Tx::finish` (with its bytes in the redo record).
//!
//! The index follows the *stored* record: a task's record is not rewritten when it starts
//! (see `RUNNING`), so a running task keeps the `ready` bit it was claimed with and a claim
//! touches no row; listings of running tasks read `RUNNING`. A bit moves when the stored
//! state changes — which is also when the state counts change — so every count change of a
//! task goes through this file: [`Tx::add_task`], [`Tx::set_state`], [`Tx::drop_task`].
//! Members of a chord being stored in parts are neither counted nor indexed until their part
//! is indexed (`store::parts`).

use std::collections::BTreeMap;

use redb::{ReadableTable, WriteTransaction};

use crate::error::Error;
use crate::model::TaskState;
use crate::store::errors::Db;
use crate::store::noted::What;
use crate::store::parts;
use crate::store::record::TaskRecord;
use crate::store::schema::{BY_STATE, OPEN_WORKFLOWS, TASKS};
use crate::store::tx::Tx;

/// The state a task's stored record holds while it is in `state`: a running task's record
/// holds the state it was claimed in.
pub(crate) fn stored(state: TaskState) -> TaskState {
    match state {
        TaskState::Running => TaskState::Ready,
        other => other,
    }
}

/// Ids per row of the index.
pub(crate) const CHUNK_IDS: u64 = 1_024;
/// Bytes per row: a bit per id.
pub(crate) const CHUNK_BYTES: usize = (CHUNK_IDS / 8) as usize;

/// The row and the bit of `id`.
fn place(id: u64) -> (u64, usize, u8) {
    let bit = id % CHUNK_IDS;
    (id / CHUNK_IDS, (bit / 8) as usize, 1 << (bit % 8))
}

/// The ids of a row's set bits, in order.
pub(crate) fn ids_of(chunk: u64, bits: &[u8]) -> impl DoubleEndedIterator<Item = u64> + '_ {
    bits.iter().enumerate().flat_map(move |(byte, &b)| {
        (0..8u64)
            .filter(move |bit| b & (1 << bit) != 0)
            .map(move |bit| chunk * CHUNK_IDS + byte as u64 * 8 + bit)
    })
}

impl Tx<'_> {
    /// Task `id` is stored (or a held chord member indexed): it is counted and indexed under
    /// its state.
    pub(crate) fn add_task(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        self.count(rec.queue, rec.state, 1);
        self.note(|| What::Enqueued, id, rec);
        self.samples.entered(rec.queue, rec.name_id, rec.state);
        self.mark(stored(rec.state), id, true)
    }

    /// Task `id` is deleted: its count and its bit go.
    pub(crate) fn drop_task(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        self.count(rec.queue, rec.state, -1);
        self.mark(stored(rec.state), id, false)
    }

    /// Moves task `id` to `state`: its counts, and its bit if its stored state changes.
    pub(crate) fn set_state(
        &mut self,
        id: u64,
        rec: &mut TaskRecord,
        state: TaskState,
    ) -> Result<(), Error> {
        if rec.state == state {
            return Ok(());
        }
        self.count(rec.queue, rec.state, -1);
        self.count(rec.queue, state, 1);
        if state.is_final() || state == TaskState::Retrying {
            self.samples.entered(rec.queue, rec.name_id, state);
        }
        let (from, to) = (stored(rec.state), stored(state));
        rec.state = state;
        if from != to {
            self.mark(from, id, false)?;
            self.mark(to, id, true)?;
        }
        Ok(())
    }

    /// Sets or clears the bit of `id` under `state`, in the transaction's copy of its row.
    fn mark(&mut self, state: TaskState, id: u64, on: bool) -> Result<(), Error> {
        let (chunk, byte, mask) = place(id);
        let bits = self.state_row(state.code(), chunk)?;
        if on {
            bits[byte] |= mask;
        } else {
            bits[byte] &= !mask;
        }
        Ok(())
    }

    /// The transaction's copy of row `(code, chunk)`, read on first use.
    fn state_row(&mut self, code: u8, chunk: u64) -> Result<&mut Vec<u8>, Error> {
        let key = (code, chunk);
        if !self.state_rows.contains_key(&key) {
            let stored = match self.tables().by_state()?.get(key).db()? {
                Some(bits) => bits.value().to_vec(),
                None => vec![0; CHUNK_BYTES],
            };
            self.state_rows.insert(key, stored);
        }
        Ok(self.state_rows.entry(key).or_default())
    }

    /// Up to `max` ids stored in state `code` from `from` on, in order, as this transaction
    /// sees them; and where to go on (`None` after the last).
    pub(crate) fn ids_in_state(
        &mut self,
        code: u8,
        from: u64,
        max: usize,
    ) -> Result<(Vec<u64>, Option<u64>), Error> {
        let mut ids = Vec::new();
        let mut chunk = from / CHUNK_IDS;
        loop {
            // The next row at or after `chunk`, in the table or only in this transaction.
            let in_table = match self
                .tables()
                .by_state()?
                .range((code, chunk)..=(code, u64::MAX))
                .db()?
                .next()
            {
                Some(row) => Some(row.db()?.0.value().1),
                None => None,
            };
            let in_tx = self
                .state_rows
                .range((code, chunk)..=(code, u64::MAX))
                .next()
                .map(|(&(_, c), _)| c);
            let Some(next) = [in_table, in_tx].into_iter().flatten().min() else {
                return Ok((ids, None));
            };
            let bits = match self.state_rows.get(&(code, next)) {
                Some(bits) => bits.clone(),
                None => match self.tables().by_state()?.get((code, next)).db()? {
                    Some(bits) => bits.value().to_vec(),
                    None => Vec::new(),
                },
            };
            for id in ids_of(next, &bits).filter(|&id| id >= from) {
                if ids.len() == max {
                    return Ok((ids, Some(id)));
                }
                ids.push(id);
            }
            chunk = next + 1;
        }
    }

    /// Writes the rows this transaction changed (a row left empty goes). Called by `finish`.
    pub(crate) fn store_state_rows(&mut self) -> Result<(), Error> {
        let rows = std::mem::take(&mut self.state_rows);
        let mut table = self.tables().by_state()?;
        for (key, bits) in rows {
            if bits.iter().all(|&b| b == 0) {
                table.remove(key)?;
            } else {
                table.insert(key, bits.as_slice())?;
            }
        }
        Ok(())
    }
}

/// Builds the index of a file from before format 8, at open (after its log is applied,
/// before its orphans are recovered): a bit for every stored task but the held members of
/// chords being stored in parts. Returns how many it set.
pub(crate) fn build(txn: &WriteTransaction) -> Result<u64, Error> {
    let held: Vec<std::ops::Range<u64>> = {
        let rows = txn.open_table(OPEN_WORKFLOWS).db()?;
        let mut held = Vec::new();
        for row in rows.iter().db()? {
            let (base, row) = row.db()?;
            held.push(parts::held(base.value(), row.value()));
        }
        held
    };
    let tasks = txn.open_table(TASKS).db()?;
    let mut rows: BTreeMap<(u8, u64), Vec<u8>> = BTreeMap::new();
    let mut n = 0;
    for entry in tasks.iter().db()? {
        let (id, bytes) = entry.db()?;
        let id = id.value();
        if held.iter().any(|ids| ids.contains(&id)) {
            continue;
        }
        let rec = TaskRecord::decode(bytes.value())?;
        let (chunk, byte, mask) = place(id);
        rows.entry((stored(rec.state).code(), chunk))
            .or_insert_with(|| vec![0; CHUNK_BYTES])[byte] |= mask;
        n += 1;
    }
    let mut index = txn.open_table(BY_STATE).db()?;
    for (key, bits) in rows {
        index.insert(key, bits.as_slice()).db()?;
    }
    Ok(n)
}
