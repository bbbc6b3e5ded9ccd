//! Claiming: the verb that starts ready tasks for a pool. It runs inside the writer's group,
//! the same transaction as the event that made a task ready (an enqueue, a promotion, a
//! retry, a recovery), so no thread polls, and an enqueue to an idle worker costs one commit
//! before the task starts.

use std::sync::Arc;

use crate::error::Error;
use crate::model::TaskId;
use crate::options::Limits;
use crate::store::catalog::Catalog;
use crate::store::record::Slot;
use crate::store::tx::{Candidate, Tx};
use crate::store::verbs::{Job, Serves};

impl Tx<'_> {
    /// Claims up to `max` ready tasks that `serves` can run: highest priority first, FIFO
    /// within a priority, across all its (queue, name) pairs. Expired tasks met on the way end
    /// `Expired`. Tasks of other names are never looked at: they sit under other keys.
    pub(crate) fn claim(
        &mut self,
        catalog: &Catalog,
        serves: &Serves,
        max: usize,
    ) -> Result<Vec<Job>, Error> {
        let pairs: Vec<(u32, u32)> = serves
            .queues
            .iter()
            .filter_map(|q| catalog.queues.id(q))
            .flat_map(|q| {
                serves
                    .names
                    .iter()
                    .filter_map(|n| catalog.names.id(n))
                    .map(move |n| (q, n))
            })
            .collect();
        let mut jobs = Vec::new();
        while jobs.len() < max {
            // The next `want` tasks in dispatch order are among the first `want` of each pair.
            let want = max - jobs.len();
            let mut candidates: Vec<Candidate> = Vec::new();
            for (i, &pair) in pairs.iter().enumerate() {
                self.ready_heads(i, pair, want, &mut candidates)?;
            }
            if candidates.is_empty() {
                break;
            }
            candidates.sort_unstable_by_key(|c| c.0);
            candidates.truncate(want);
            // Each pair's share of the stored candidates is a run of consecutive index
            // entries: they go in one sweep per pair.
            for (i, &pair) in pairs.iter().enumerate() {
                let mut mine = candidates.iter().filter(|c| c.1 == i && !c.3).map(|c| c.0);
                let Some(first) = mine.next() else {
                    continue;
                };
                let last = mine.next_back().unwrap_or(first);
                self.remove_ready_run(pair, first, last)?;
            }
            for (pos, i, id, pending) in candidates {
                if pending {
                    let (q, n) = pairs[i];
                    self.remove_pending_ready((q, n, pos.0, pos.1));
                }
                if let Some(job) = self.examine(catalog, pos.1, id)? {
                    jobs.push(job);
                }
            }
        }
        Ok(jobs)
    }

    /// Starts the ready task `id` (index entry at `seq`, already removed by the caller), or
    /// ends it `Expired` if its expiry has passed.
    fn examine(&mut self, catalog: &Catalog, seq: u64, id: u64) -> Result<Option<Job>, Error> {
        let Some(mut rec) = self.get(id)? else {
            // An index entry without a record cannot be run; it is dropped.
            return Ok(None);
        };
        debug_assert_eq!(rec.slot, Slot::Ready { seq });
        rec.slot = Slot::None;
        if rec.expires_at_ms.is_some_and(|e| e <= self.now()) {
            self.expire(id, &mut rec)?;
            return Ok(None);
        }
        let payload = self.start(id, &mut rec)?;
        Ok(Some(Job {
            id: TaskId(id),
            attempt: rec.attempts,
            queue: catalog.queues.name(rec.queue),
            name: rec.name,
            payload,
            max_retries: rec.max_retries,
            enqueued_at_ms: rec.enqueued_at_ms,
            limits: Limits {
                time_limit_ms: rec.control.time_limit_ms,
                soft_time_limit_ms: rec.control.soft_time_limit_ms,
            },
            origin: rec.origin,
            signal: Arc::default(),
        }))
    }
}
