//! Progress reported by running handlers (`Context::set_progress`): kept in memory, with no
//! sync of its own, shown by `status` at once, and taken into the task's record by its
//! attempt's completion (the writer also stores it with any group that commits meanwhile).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::model::TaskId;
use crate::store::idmap::IdMap;

/// The latest progress of each running attempt, as JSON.
#[derive(Default)]
pub(crate) struct Progress {
    inner: Mutex<Inner>,
    /// Whether any progress is held: the writer, which asks at every completion and group,
    /// then takes no lock while no handler reports progress.
    any: AtomicBool,
}

#[derive(Default)]
struct Inner {
    latest: IdMap<(u32, Vec<u8>)>,
    /// Tasks whose progress changed since the writer last stored it.
    dirty: Vec<u64>,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Attempt `attempt` of `id` reports `json`; the latest report wins.
    pub(crate) fn set(&self, id: TaskId, attempt: u32, json: Vec<u8>) {
        let mut inner = self.lock();
        self.any.store(true, Ordering::SeqCst);
        let known = inner.latest.insert(id.0, (attempt, json)).is_some();
        if !known || !inner.dirty.contains(&id.0) {
            inner.dirty.push(id.0);
        }
    }

    /// The latest progress of attempt `attempt` of `id`, if it reported any.
    pub(crate) fn get(&self, id: TaskId, attempt: u32) -> Option<Vec<u8>> {
        if !self.any.load(Ordering::SeqCst) {
            return None;
        }
        let inner = self.lock();
        inner
            .latest
            .get(&id.0)
            .filter(|(a, _)| *a == attempt)
            .map(|(_, json)| json.clone())
    }

    /// Takes the progress of `id` out at its attempt's completion: the attempt's own, or
    /// nothing (an older attempt's is dropped).
    pub(crate) fn take(&self, id: TaskId, attempt: u32) -> Option<Vec<u8>> {
        if !self.any.load(Ordering::SeqCst) {
            return None;
        }
        let mut inner = self.lock();
        let (a, json) = inner.latest.remove(&id.0)?;
        if inner.latest.is_empty() {
            self.any.store(false, Ordering::SeqCst);
        }
        (a == attempt).then_some(json)
    }

    /// The progress reported since the last call, to store with a group that commits.
    pub(crate) fn take_dirty(&self) -> Vec<(u64, u32, Vec<u8>)> {
        if !self.any.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let mut inner = self.lock();
        if inner.dirty.is_empty() {
            return Vec::new();
        }
        let dirty = std::mem::take(&mut inner.dirty);
        dirty
            .into_iter()
            .filter_map(|id| {
                inner
                    .latest
                    .get(&id)
                    .map(|(attempt, json)| (id, *attempt, json.clone()))
            })
            .collect()
    }
}
