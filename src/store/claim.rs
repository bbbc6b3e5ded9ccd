//! Claiming: the verb that starts ready tasks for a pool. It runs inside the writer's group,
//! the same transaction as the event that made a task ready (an enqueue, a promotion, a
//! retry, a recovery), so no thread polls, and an enqueue to an idle worker costs one commit
//! before the task starts.

use std::sync::Arc;

use crate::error::Error;
use crate::model::TaskId;
use crate::options::Limits;
use crate::store::catalog::Catalog;
use crate::store::record::{Slot, TaskRecord};
use crate::store::tx::{Candidate, Tx};
use crate::store::verbs::{Job, Serves};

/// Most tasks one claim parks: a long backlog of one key is parked over several claims
/// (the writer runs them back to back, see `Flow::take_cut`), so no transaction grows with
/// the backlog.
const PARK_BATCH: usize = 1_024;

/// What a claim does with a candidate it takes out of `ready`.
enum Fate {
    /// It runs (or ends `Expired`, see `examine`).
    Run,
    /// Its limit key is at its limit: it waits in `parked` (see `store::parking`).
    Park(Box<TaskRecord>),
}

/// A (queue, name) pair a claim serves, with its ids, and its names if it is under a limit.
struct Pair {
    ids: (u32, u32),
    limited: Option<(Arc<str>, Arc<str>)>,
    /// Its per-key limit, if its task type has one.
    per_key: Option<u32>,
}

impl Tx<'_> {
    /// Claims up to `max` ready tasks that `serves` can run: highest priority first, FIFO
    /// within a priority, across all its (queue, name) pairs. Expired tasks met on the way end
    /// `Expired`. Tasks of other names are never looked at: they sit under other keys.
    ///
    /// With limits declared (`store::flow`), nothing is claimed from a paused queue, and each
    /// candidate is admitted in dispatch order: a pair a rate or a concurrency limit refuses is
    /// passed over for the rest of the claim (its tasks stay ready and other pairs go on), and
    /// a task whose limit key is at its limit is parked.
    pub(crate) fn claim(
        &mut self,
        catalog: &Catalog,
        serves: &Serves,
        max: usize,
    ) -> Result<Vec<Job>, Error> {
        let flow_on = !self.flow.is_empty();
        if flow_on {
            self.unpark_freed(catalog)?;
        } else {
            // Nothing is parked without a limit (removing one sends its parked tasks back):
            // the keys freed since the last claim are forgotten, so they never pile up.
            let _ = self.running_mut().take_freed();
        }
        let mut pairs: Vec<Pair> = Vec::new();
        for queue in &serves.queues {
            let Some(q) = catalog.queues.id(queue) else {
                continue;
            };
            if flow_on && self.flow.is_paused(queue) {
                continue;
            }
            for name in &serves.names {
                let Some(n) = catalog.names.id(name) else {
                    continue;
                };
                let limited = flow_on && self.flow.applies(queue, name);
                pairs.push(Pair {
                    ids: (q, n),
                    limited: limited.then(|| (catalog.queues.name(q), catalog.names.name(n))),
                    per_key: if limited {
                        self.flow.per_key(name)
                    } else {
                        None
                    },
                });
            }
        }
        let any_limited = pairs.iter().any(|p| p.limited.is_some());
        let mut blocked = vec![false; pairs.len()];
        let mut parked = 0;
        let mut jobs = Vec::new();
        while jobs.len() < max {
            // The next `want` tasks in dispatch order are among the first `want` of each pair.
            let want = max - jobs.len();
            let mut candidates: Vec<Candidate> = Vec::new();
            for (i, pair) in pairs.iter().enumerate() {
                if !blocked[i] {
                    self.ready_heads(i, pair.ids, want, &mut candidates)?;
                }
            }
            if candidates.is_empty() {
                break;
            }
            candidates.sort_unstable_by_key(|c| c.0);
            let taken: Vec<(Candidate, Fate)> = if any_limited {
                self.admit(&pairs, &mut blocked, &mut parked, candidates, want)?
            } else {
                candidates.truncate(want);
                candidates.into_iter().map(|c| (c, Fate::Run)).collect()
            };
            // Each pair's share of the stored candidates taken is a run of consecutive index
            // entries (a pair is passed over from its first refusal on): they go in one sweep
            // per pair.
            for (i, pair) in pairs.iter().enumerate() {
                let mut mine = taken
                    .iter()
                    .filter(|(c, _)| c.1 == i && !c.3)
                    .map(|(c, _)| c.0);
                let Some(first) = mine.next() else {
                    continue;
                };
                let last = mine.next_back().unwrap_or(first);
                self.remove_ready_run(pair.ids, first, last)?;
            }
            for ((pos, i, id, pending), fate) in taken {
                if pending {
                    let (q, n) = pairs[i].ids;
                    self.remove_pending_ready((q, n, pos.0, pos.1));
                }
                match fate {
                    Fate::Run => {
                        if let Some(job) = self.examine(catalog, pos.1, id)? {
                            jobs.push(job);
                        }
                    }
                    Fate::Park(rec) => self.park(id, *rec)?,
                }
            }
        }
        // A rate that refused a claim has noted when its next one conforms: the writer wakes
        // then (`Flow::take_wake`).
        Ok(jobs)
    }

    /// Admits `candidates` (in dispatch order) until `want` will run: what each is to do.
    /// A refusal by a rate or a concurrency limit passes its pair over (`blocked`); a task
    /// whose key is full is parked and the claim goes on, up to `PARK_BATCH` parked in the
    /// claim (`parked` counts them), after which its pair waits for the next claim.
    fn admit(
        &mut self,
        pairs: &[Pair],
        blocked: &mut [bool],
        parked: &mut usize,
        candidates: Vec<Candidate>,
        want: usize,
    ) -> Result<Vec<(Candidate, Fate)>, Error> {
        let now = self.now();
        self.flow.begin_round();
        let mut taken = Vec::new();
        let mut running = 0;
        for c in candidates {
            if running == want {
                break;
            }
            let pair = &pairs[c.1];
            if blocked[c.1] {
                continue;
            }
            let Some((queue, name)) = &pair.limited else {
                taken.push((c, Fate::Run));
                running += 1;
                continue;
            };
            let (q, n) = pair.ids;
            // The key a per-key limit counts this task under, once it is known to have room.
            let mut key = None;
            if let Some(limit) = pair.per_key {
                let Some(mut rec) = self.get(c.2)? else {
                    taken.push((c, Fate::Run));
                    continue;
                };
                if let Some(k) = rec.flow.limit_key.as_deref() {
                    let (counts, flow) = self.running_and_flow();
                    if !flow.key_has_room((n, k), limit, counts) {
                        if *parked == PARK_BATCH {
                            flow.cut_claim();
                            blocked[c.1] = true;
                        } else {
                            *parked += 1;
                            taken.push((c, Fate::Park(Box::new(rec))));
                        }
                        continue;
                    }
                    // It runs: this copy of its record is not needed any more.
                    key = rec.flow.limit_key.take();
                }
            }
            let (counts, flow) = self.running_and_flow();
            if !flow.admit((q, queue), (n, name), counts, now) {
                blocked[c.1] = true;
                continue;
            }
            if let Some(k) = &key {
                flow.count_key((n, k));
            }
            taken.push((c, Fate::Run));
            running += 1;
        }
        Ok(taken)
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
        let inputs = if rec.deps.inputs.is_empty() {
            None
        } else {
            Some(Arc::new(self.inputs_of(&rec)?))
        };
        let payload = self.start(id, &mut rec)?;
        Ok(Some(Job {
            inputs,
            id: TaskId(id),
            attempt: rec.attempts,
            queue: catalog.queues.name(rec.queue),
            name: catalog.names.name(rec.name_id),
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
