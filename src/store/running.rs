//! The writer's records of running tasks, with how many run per queue, per task name and per
//! limit key — what a concurrency limit counts (`store::flow`), kept in step with every
//! record that starts or stops running, so a claim reads a count instead of scanning.

use std::collections::HashMap;

use crate::model::TaskState;
use crate::store::idmap::IdMap;
use crate::store::record::TaskRecord;

/// Records of running tasks by id, and their counts.
#[derive(Debug, Default)]
pub(crate) struct Running {
    map: IdMap<TaskRecord>,
    /// Running tasks per queue id (indexed by it: ids are small and dense).
    by_queue: Vec<u32>,
    /// Running tasks per task-name id.
    by_name: Vec<u32>,
    /// Running tasks per name id and limit key, for those that have a key (looked up by
    /// `&str`, without building a key).
    by_key: HashMap<u32, HashMap<String, u32>>,
    /// Keys a task stopped running under since the last [`Running::take_freed`]: their
    /// parked tasks may go now.
    freed: Vec<(u32, String)>,
}

impl Running {
    /// The records of `map`, counted.
    pub(crate) fn from_map(map: IdMap<TaskRecord>) -> Running {
        let mut running = Running::default();
        for (id, rec) in map {
            running.insert(id, rec);
        }
        running
    }

    pub(crate) fn get(&self, id: u64) -> Option<&TaskRecord> {
        self.map.get(&id)
    }

    /// Keeps `rec` as the record of running task `id` (replacing an older one).
    pub(crate) fn insert(&mut self, id: u64, rec: TaskRecord) {
        debug_assert_eq!(rec.state, TaskState::Running);
        self.count(&rec, 1);
        if let Some(old) = self.map.insert(id, rec) {
            self.count(&old, -1);
        }
    }

    /// Takes the record of `id` out: the task no longer runs.
    pub(crate) fn remove(&mut self, id: u64) -> Option<TaskRecord> {
        let rec = self.map.remove(&id)?;
        self.count(&rec, -1);
        if let Some(key) = &rec.flow.limit_key {
            self.freed.push((rec.name_id, key.clone()));
        }
        Some(rec)
    }

    /// How many run on queue `q`.
    pub(crate) fn queue(&self, q: u32) -> u32 {
        self.by_queue.get(q as usize).copied().unwrap_or(0)
    }

    /// How many named `n` run.
    pub(crate) fn name(&self, n: u32) -> u32 {
        self.by_name.get(n as usize).copied().unwrap_or(0)
    }

    /// How many named `n` run under limit key `key`.
    pub(crate) fn key(&self, n: u32, key: &str) -> u32 {
        self.by_key
            .get(&n)
            .and_then(|keys| keys.get(key))
            .copied()
            .unwrap_or(0)
    }

    /// The keys tasks stopped running under since the last call.
    pub(crate) fn take_freed(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.freed)
    }

    fn count(&mut self, rec: &TaskRecord, delta: i32) {
        bump(&mut self.by_queue, rec.queue, delta);
        bump(&mut self.by_name, rec.name_id, delta);
        if let Some(key) = &rec.flow.limit_key {
            let keys = self.by_key.entry(rec.name_id).or_default();
            let n = keys
                .get(key.as_str())
                .copied()
                .unwrap_or(0)
                .saturating_add_signed(delta);
            if n == 0 {
                keys.remove(key.as_str());
            } else if let Some(count) = keys.get_mut(key.as_str()) {
                *count = n;
            } else {
                keys.insert(key.clone(), n);
            }
        }
    }
}

fn bump(counts: &mut Vec<u32>, id: u32, delta: i32) {
    let i = id as usize;
    if counts.len() <= i {
        counts.resize(i + 1, 0);
    }
    counts[i] = counts[i].saturating_add_signed(delta);
}
