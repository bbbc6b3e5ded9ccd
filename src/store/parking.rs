//! Parking: a ready task whose limit key is at its type's per-key concurrency limit waits in
//! the `parked` index, in dispatch order, instead of in `ready` — so a claim never walks past
//! it again (ten thousand exports of one customer ahead of one export of another cost a
//! claim nothing) — and goes back to `ready`, at its old place, when a task of its key
//! stops running.

use std::ops::Bound;

use redb::ReadableTable;

use crate::error::Error;
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::record::{Slot, TaskRecord};
use crate::store::tx::Tx;

/// Most parked entries moved back per read of the index.
const BATCH: usize = 1_024;

impl Tx<'_> {
    /// Parks the ready task `id`, whose ready entry the caller has removed.
    pub(crate) fn park(&mut self, id: u64, mut rec: TaskRecord) -> Result<(), Error> {
        let (Slot::Ready { seq }, Some(key)) = (rec.slot, rec.flow.limit_key.clone()) else {
            return Ok(());
        };
        let (_, n, inv, _) = rec.ready_key(seq);
        self.tables()
            .parked()?
            .insert((n, key.as_str(), inv, seq), id)?;
        rec.slot = Slot::Parked { seq };
        self.put(id, &rec)
    }

    /// Removes a parked task's entry (it is leaving the ready state).
    pub(crate) fn unpark_entry(&mut self, rec: &TaskRecord, seq: u64) -> Result<(), Error> {
        let (_, n, inv, _) = rec.ready_key(seq);
        let key = rec.flow.limit_key.as_deref().unwrap_or_default();
        self.tables().parked()?.remove((n, key, inv, seq))?;
        Ok(())
    }

    /// Sends back to `ready` the parked tasks of every key a task stopped running under since
    /// the last claim, as many as its limit now lets run (every one if the limit is gone).
    /// After the writer read its memory again (at open, after a failed group), every parked
    /// key is looked at.
    pub(crate) fn unpark_freed(&mut self, catalog: &Catalog) -> Result<(), Error> {
        let (mut freed, all) = self.running_mut().take_freed();
        if all {
            freed = self.parked_keys(None)?;
        }
        freed.sort_unstable();
        freed.dedup();
        for (n, key) in freed {
            let room = match self.flow.per_key(&catalog.names.name(n)) {
                Some(limit) => limit.saturating_sub(self.running().key(n, &key)),
                None => u32::MAX,
            };
            self.unpark_key(n, &key, room as usize)?;
        }
        Ok(())
    }

    /// Every (name id, key) with parked tasks (of name `only`, if given): one seek per key.
    fn parked_keys(&mut self, only: Option<u32>) -> Result<Vec<(u32, String)>, Error> {
        let mut keys: Vec<(u32, String)> = Vec::new();
        loop {
            let next = {
                let parked = self.tables().parked()?;
                let mut range = match (keys.last(), only) {
                    (Some((n, key)), _) => parked.range::<(u32, &str, u8, u64)>((
                        Bound::Excluded((*n, key.as_str(), u8::MAX, u64::MAX)),
                        Bound::Unbounded,
                    )),
                    (None, Some(n)) => parked.range((n, "", 0, 0)..),
                    (None, None) => parked.range::<(u32, &str, u8, u64)>(..),
                }
                .db()?;
                match range.next() {
                    Some(entry) => {
                        let (k, _) = entry.db()?;
                        let (n, key, _, _) = k.value();
                        Some((n, key.to_string()))
                    }
                    None => None,
                }
            };
            match next {
                Some((n, _)) if only.is_some_and(|o| o != n) => return Ok(keys),
                Some(k) => keys.push(k),
                None => return Ok(keys),
            }
        }
    }

    /// Moves up to `room` parked tasks of (`n`, `key`) back to `ready`, first in dispatch
    /// order first.
    fn unpark_key(&mut self, n: u32, key: &str, mut room: usize) -> Result<(), Error> {
        while room > 0 {
            let entries: Vec<(u8, u64, u64)> = {
                let parked = self.tables().parked()?;
                let range = (n, key, 0, 0)..=(n, key, u8::MAX, u64::MAX);
                let mut out = Vec::new();
                for entry in parked.range(range).db()?.take(room.min(BATCH)) {
                    let (k, id) = entry.db()?;
                    let (_, _, inv, seq) = k.value();
                    out.push((inv, seq, id.value()));
                }
                out
            };
            if entries.is_empty() {
                break;
            }
            room -= entries.len();
            for (inv, seq, id) in entries {
                self.tables().parked()?.remove((n, key, inv, seq))?;
                let Some(mut rec) = self.get(id)? else {
                    continue;
                };
                if rec.slot != (Slot::Parked { seq }) {
                    continue;
                }
                rec.slot = Slot::Ready { seq };
                self.insert_ready(rec.ready_key(seq), id)?;
                self.put(id, &rec)?;
            }
        }
        Ok(())
    }

    /// Sends every parked task named `n` back to `ready` (its per-key limit changed: the next
    /// claim parks again those still over the new one).
    pub(crate) fn unpark_all(&mut self, n: u32) -> Result<(), Error> {
        for (n, key) in self.parked_keys(Some(n))? {
            self.unpark_key(n, &key, usize::MAX)?;
        }
        Ok(())
    }
}
