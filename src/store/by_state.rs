//! The `by_state` index (format 8): every stored task under the state its record holds, in id
//! order, so that a listing of one state (`store::query`) reads that state's entries and
//! nothing else, and a bulk retry of failed tasks does not read the succeeded ones.
//!
//! The index follows the *stored* record: a task's record is not rewritten when it starts
//! (see `RUNNING`), so a running task keeps the `ready` entry it was claimed with and a claim
//! touches no index entry; listings of running tasks read `RUNNING`. An entry moves when the
//! stored state changes — which is also when the state counts change — so every count change
//! of a task goes through this file: [`Tx::add_task`], [`Tx::set_state`], [`Tx::drop_task`].
//! Members of a chord being stored in parts are neither counted nor indexed until their part
//! is indexed (`store::parts`).

use redb::{ReadableTable, WriteTransaction};

use crate::error::Error;
use crate::model::TaskState;
use crate::store::errors::Db;
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

impl Tx<'_> {
    /// Task `id` is stored (or a held chord member indexed): it is counted and indexed under
    /// its state.
    pub(crate) fn add_task(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        self.count(rec.queue, rec.state, 1);
        self.tables()
            .by_state()?
            .insert((stored(rec.state).code(), id), (rec.queue, rec.name_id))?;
        Ok(())
    }

    /// Task `id` is deleted: its count and its entry go.
    pub(crate) fn drop_task(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        self.count(rec.queue, rec.state, -1);
        self.tables()
            .by_state()?
            .remove((stored(rec.state).code(), id))?;
        Ok(())
    }

    /// Moves task `id` to `state`: its counts, and its entry if its stored state changes.
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
        let (from, to) = (stored(rec.state), stored(state));
        rec.state = state;
        if from != to {
            let mut index = self.tables().by_state()?;
            index.remove((from.code(), id))?;
            index.insert((to.code(), id), (rec.queue, rec.name_id))?;
        }
        Ok(())
    }
}

/// Builds the index of a file from before format 8, at open (after its log is applied,
/// before its orphans are recovered): an entry for every stored task but the held members of
/// chords being stored in parts. Returns how many it wrote.
pub(crate) fn build(txn: &WriteTransaction) -> Result<u64, Error> {
    let held: Vec<(u64, u64)> = {
        let rows = txn.open_table(OPEN_WORKFLOWS).db()?;
        let mut held = Vec::new();
        for row in rows.iter().db()? {
            let (base, row) = row.db()?;
            let (base, (end, next, sealed)) = (base.value(), row.value());
            held.push(if sealed { (next, end - 1) } else { (base, end) });
        }
        held
    };
    let tasks = txn.open_table(TASKS).db()?;
    let mut index = txn.open_table(BY_STATE).db()?;
    let mut n = 0;
    for entry in tasks.iter().db()? {
        let (id, bytes) = entry.db()?;
        let id = id.value();
        if held.iter().any(|&(from, to)| (from..to).contains(&id)) {
            continue;
        }
        let rec = TaskRecord::decode(bytes.value())?;
        index
            .insert((stored(rec.state).code(), id), (rec.queue, rec.name_id))
            .db()?;
        n += 1;
    }
    Ok(n)
}
