//! Unique tasks: the `unique` index maps (task name, unique key) to the task holding the key.
//! The check and the insert are one step of the writer's transaction, so producers racing on
//! one key create exactly one task, with no lock and no TTL. A key is free again once its
//! holder no longer holds it (final, started, or its period over, as it was enqueued); the
//! entry goes when the holder lets it go, and with the holder's record at the latest, so
//! pruning never leaves one behind.

use redb::ReadableTable;

use crate::error::Error;
use crate::model::TaskState;
use crate::options::Unique;
use crate::store::errors::Db;
use crate::store::record::{StoredUnique, TaskRecord, UniqueKey};
use crate::store::tx::Tx;

/// The key a new task takes, as stored: a period runs from the enqueue.
pub(crate) fn stored(key: &str, until: Unique, enqueued_at_ms: u64) -> UniqueKey {
    let until = match until {
        Unique::UntilFinal => StoredUnique::UntilFinal,
        Unique::UntilStarted => StoredUnique::UntilStarted,
        Unique::For(period) => {
            StoredUnique::Until(enqueued_at_ms.saturating_add(crate::clock::duration_ms(period)))
        }
    };
    UniqueKey {
        key: key.to_string(),
        until,
    }
}

/// Whether `rec` holds its unique key at `now_ms`.
fn holds(rec: &TaskRecord, now_ms: u64) -> bool {
    let Some(unique) = &rec.flow.unique else {
        return false;
    };
    match unique.until {
        StoredUnique::UntilFinal => !rec.state.is_final(),
        StoredUnique::UntilStarted => {
            rec.attempts == 0 && !rec.state.is_final() && rec.state != TaskState::Running
        }
        StoredUnique::Until(at) => now_ms < at,
    }
}

impl Tx<'_> {
    /// The task named `n` that holds `key` now, if one does.
    pub(crate) fn unique_holder(&mut self, n: u32, key: &str) -> Result<Option<u64>, Error> {
        let Some(id) = self
            .tables()
            .unique()?
            .get((n, key))
            .db()?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let now = self.now();
        Ok(self.get(id)?.filter(|rec| holds(rec, now)).map(|_| id))
    }

    /// Task `id`, named `n`, takes `key`.
    pub(crate) fn take_unique(&mut self, n: u32, key: &str, id: u64) -> Result<(), Error> {
        self.tables().unique()?.insert((n, key), id)?;
        Ok(())
    }

    /// Lets `rec`'s key go if it no longer holds it by its state (a period ends with the
    /// record: see [`Tx::drop_unique`]).
    pub(crate) fn release_unique(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        match &rec.flow.unique {
            Some(u) if !matches!(u.until, StoredUnique::Until(_)) && !holds(rec, self.now()) => {
                self.drop_unique(id, rec)
            }
            _ => Ok(()),
        }
    }

    /// Removes `rec`'s unique entry if it is still task `id`'s (its record is going).
    pub(crate) fn drop_unique(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        let Some(u) = &rec.flow.unique else {
            return Ok(());
        };
        let key = (rec.name_id, u.key.as_str());
        let mut table = self.tables().unique()?;
        if table.get(key).db()?.is_some_and(|v| v.value() == id) {
            table.remove(key)?;
        }
        Ok(())
    }
}
