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

/// Most parked entries moved back per read of the index, and per claim: the rest go with
/// the claims that follow at once (see `Flow::take_cut`), so no transaction grows with the
/// backlog.
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

    /// Sends back to `ready` the parked tasks of the keys to look at — every key a task
    /// stopped running under since the last claim, those of a changed per-key limit, and,
    /// after the writer read its memory again (at open, after a failed group), every parked
    /// key — as many of each as its limit now lets run (every one if the limit is gone), at
    /// most `BATCH` in all: what is left waits for the next claim, which comes at once.
    pub(crate) fn unpark_freed(&mut self, catalog: &Catalog) -> Result<(), Error> {
        let freed = self.running_mut().take_freed();
        let mut keys = self.flow.take_unpark();
        keys.extend(freed);
        if self.flow.take_recheck() {
            keys.extend(self.parked_keys(None)?);
        }
        keys.sort_unstable();
        keys.dedup();
        let mut budget = BATCH;
        while let Some((n, key)) = keys.pop() {
            let room = match self.flow.per_key(&catalog.names.name(n)) {
                Some(limit) => limit.saturating_sub(self.running().key(n, &key)) as usize,
                None => usize::MAX,
            };
            let moved = self.unpark_key(n, &key, room.min(budget))?;
            budget -= moved;
            if budget == 0 {
                // This key may have more, and the others are still to be looked at.
                keys.push((n, key));
                self.flow.cut_claim();
                break;
            }
        }
        self.flow.keep_unpark(keys);
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
    /// order first; returns how many.
    fn unpark_key(&mut self, n: u32, key: &str, mut room: usize) -> Result<usize, Error> {
        let mut moved = 0;
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
            moved += entries.len();
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
        Ok(moved)
    }

    /// Has every key of the tasks named `n` looked at by the next claims (its per-key limit
    /// changed: they move back as many as the new limit lets run, every one if it is gone).
    pub(crate) fn unpark_all(&mut self, n: u32) -> Result<(), Error> {
        let keys = self.parked_keys(Some(n))?;
        self.flow.keep_unpark(keys);
        Ok(())
    }
}
