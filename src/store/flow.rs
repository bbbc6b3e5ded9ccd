//! Flow control in the writer: the limits and pauses declared on task types and queues
//! (stored in the `flow` table, mirrored in memory), the token buckets of their rates, and
//! the admission of each claim — so every limit holds across every pool of the spool,
//! exactly, with no locks and no TTLs.
//!
//! A rate is a generic cell rate algorithm (`flow::Bucket`, shared with the PostgreSQL
//! engine): each target keeps a theoretical arrival time. A claim is admitted when it conforms, and the writer is
//! told when the next claim of a blocked target will (it sleeps until then).

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::flow::{Bucket, Limit, LimitTarget, Rate};
use crate::store::codec;
use crate::store::errors::Db;
use crate::store::running::Running;
use crate::store::schema::{FLOW, PARKED};
use crate::store::verbs::FlowOp;

/// The kind of a `flow` key: a task type's limits.
const TASK: u8 = 0;
/// The kind of a `flow` key: a queue's limits and pause.
const QUEUE: u8 = 1;

/// A target's limits and pause, as stored in the `flow` table (one part).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlowRecord {
    pub rate: Option<Rate>,
    pub concurrency: Option<u32>,
    pub per_key: Option<u32>,
    /// Queues only: nothing is claimed from it.
    pub paused: bool,
}

impl FlowRecord {
    fn is_empty(&self) -> bool {
        *self == FlowRecord::default()
    }
}

/// One target's rules in memory, with its rate's state.
#[derive(Debug, Clone)]
struct Rules {
    record: FlowRecord,
    tat: Bucket,
}

impl Rules {
    fn new(record: FlowRecord) -> Rules {
        Rules {
            record,
            tat: Bucket::default(),
        }
    }
}

/// What a change to the mirror stores in the `flow` table.
pub(crate) struct FlowChange {
    pub kind: u8,
    pub name: String,
    /// The target's new record; `None`: it has no limit and no pause any more.
    pub record: Option<FlowRecord>,
    /// A task type's per-key limit changed: its parked tasks go back to `ready`.
    pub per_key_changed: bool,
}

/// The `flow` key of a target.
fn target_key(target: &LimitTarget) -> (u8, String) {
    match target {
        LimitTarget::Task(name) => (TASK, name.clone()),
        LimitTarget::Queue(queue) => (QUEUE, queue.clone()),
    }
}

/// The rules of every task type and queue that has some, and what the current claim has
/// admitted so far.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    tasks: HashMap<String, Rules>,
    queues: HashMap<String, Rules>,
    /// Admitted in the claim round in progress (their running entries come after), by queue
    /// and by task name.
    admitted_queues: HashMap<u32, u32>,
    admitted_names: HashMap<u32, u32>,
    admitted_keys: HashMap<u32, HashMap<String, u32>>,
    /// The earliest time, in ms, a claim blocked by a rate could go.
    wake: Option<u64>,
    /// A claim stopped parking at its batch's end: claim again at once.
    cut: bool,
    /// Keys whose parked tasks the next claim looks at (a limit changed, or the last claim
    /// ran out of its batch): bounded by the keys, not by the tasks.
    unpark: Vec<(u32, String)>,
    /// Read from the file with parked tasks in it: the next claim looks at every parked key.
    recheck: bool,
    /// The paused queues, sorted (for `stats`).
    paused: Vec<String>,
}

impl Flow {
    /// The rules stored in the file.
    pub(crate) fn load(txn: &WriteTransaction) -> Result<Flow, Error> {
        let mut flow = Flow::default();
        for (target, record) in records(&txn.open_table(FLOW).db()?)? {
            let rules = Rules::new(record);
            match target {
                LimitTarget::Task(name) => flow.tasks.insert(name, rules),
                LimitTarget::Queue(queue) => flow.queues.insert(queue, rules),
            };
        }
        flow.note_pauses();
        flow.recheck = txn.open_table(PARKED).db()?.first().db()?.is_some();
        Ok(flow)
    }

    /// The queues paused now, by name.
    pub(crate) fn paused(&self) -> impl Iterator<Item = &str> {
        self.paused.iter().map(String::as_str)
    }

    fn note_pauses(&mut self) {
        self.paused = self
            .queues
            .iter()
            .filter(|(_, r)| r.record.paused)
            .map(|(name, _)| name.clone())
            .collect();
        self.paused.sort();
    }

    /// Whether nothing limits any claim and nothing is parked (the claim then skips every
    /// check).
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.queues.is_empty() && self.unpark.is_empty() && !self.recheck
    }

    /// The keys to look at that a claim left (see `unpark`).
    pub(crate) fn take_unpark(&mut self) -> Vec<(u32, String)> {
        std::mem::take(&mut self.unpark)
    }

    /// Keeps keys to look at for the next claim.
    pub(crate) fn keep_unpark(&mut self, keys: Vec<(u32, String)>) {
        self.unpark.extend(keys);
    }

    /// Whether every parked key is to be looked at (taken once).
    pub(crate) fn take_recheck(&mut self) -> bool {
        std::mem::take(&mut self.recheck)
    }

    /// Whether any rule applies to tasks named `name` on `queue`.
    pub(crate) fn applies(&self, queue: &str, name: &str) -> bool {
        self.queues.contains_key(queue) || self.tasks.contains_key(name)
    }

    /// Whether `queue` is paused.
    pub(crate) fn is_paused(&self, queue: &str) -> bool {
        self.queues.get(queue).is_some_and(|r| r.record.paused)
    }

    /// The per-key limit of the tasks named `name`.
    pub(crate) fn per_key(&self, name: &str) -> Option<u32> {
        self.tasks.get(name).and_then(|r| r.record.per_key)
    }

    /// Starts a claim round: nothing admitted yet.
    pub(crate) fn begin_round(&mut self) {
        self.admitted_queues.clear();
        self.admitted_names.clear();
        self.admitted_keys.clear();
    }

    /// Whether one more task named `n` with limit key `key` may run under the per-key limit
    /// `limit`, given those running and those admitted in this round.
    pub(crate) fn key_has_room(
        &self,
        (n, key): (u32, &str),
        limit: u32,
        running: &Running,
    ) -> bool {
        let admitted = self
            .admitted_keys
            .get(&n)
            .and_then(|keys| keys.get(key))
            .copied()
            .unwrap_or(0);
        running.key(n, key) + admitted < limit
    }

    /// Counts an admitted task under its limit key, for the rest of the round.
    pub(crate) fn count_key(&mut self, (n, key): (u32, &str)) {
        let keys = self.admitted_keys.entry(n).or_default();
        match keys.get_mut(key) {
            Some(count) => *count += 1,
            None => {
                keys.insert(key.to_string(), 1);
            }
        }
    }

    /// A claim left tasks to park for the next one.
    pub(crate) fn cut_claim(&mut self) {
        self.cut = true;
    }

    /// Takes (and forgets) whether a claim left tasks to park: the writer then runs its next
    /// group at once.
    pub(crate) fn take_cut(&mut self) -> bool {
        std::mem::take(&mut self.cut)
    }

    /// Takes (and forgets) the earliest time a rate-blocked claim could go.
    pub(crate) fn take_wake(&mut self) -> Option<u64> {
        self.wake.take()
    }

    /// Admits one claim of a task named `name` (interned `n`) on `queue` (interned `q`) at
    /// `now_ms`, given the tasks running now: it conforms to both targets' rates (each then
    /// counts it) and neither is at its concurrency limit. A claim a rate refuses notes when
    /// it would conform.
    pub(crate) fn admit(
        &mut self,
        (q, queue): (u32, &str),
        (n, name): (u32, &str),
        running: &Running,
        now_ms: u64,
    ) -> bool {
        let queue_rules = self.queues.get(queue);
        let name_rules = self.tasks.get(name);
        if queue_rules.is_none() && name_rules.is_none() {
            return true;
        }
        if queue_rules.is_some_and(|r| r.record.paused) {
            return false;
        }
        let at_limit = |rules: Option<&Rules>, now: u32| {
            rules
                .and_then(|r| r.record.concurrency)
                .is_some_and(|limit| now >= limit)
        };
        let queue_now = running.queue(q) + self.admitted_queues.get(&q).copied().unwrap_or(0);
        let name_now = running.name(n) + self.admitted_names.get(&n).copied().unwrap_or(0);
        if at_limit(queue_rules, queue_now) || at_limit(name_rules, name_now) {
            return false;
        }
        // Both rates must conform before either counts the claim.
        for rules in [queue_rules, name_rules].into_iter().flatten() {
            let Some(rate) = rules.record.rate else {
                continue;
            };
            if let Err(at_ms) = rules.tat.check(&rate, now_ms) {
                self.wake = Some(self.wake.map_or(at_ms, |w| w.min(at_ms)));
                return false;
            }
        }
        for rules in [self.queues.get_mut(queue), self.tasks.get_mut(name)]
            .into_iter()
            .flatten()
        {
            if let Some(rate) = rules.record.rate {
                rules.tat.take(&rate, now_ms);
            }
        }
        *self.admitted_queues.entry(q).or_default() += 1;
        *self.admitted_names.entry(n).or_default() += 1;
        true
    }

    /// Applies a change to the mirror; returns what the file must store, or `None` if it
    /// changes nothing.
    pub(crate) fn apply(&mut self, op: FlowOp) -> Option<FlowChange> {
        let (kind, name) = match &op {
            FlowOp::Limit(limit) => target_key(&limit.target),
            FlowOp::Unlimit(target) => target_key(target),
            FlowOp::Pause { queue, .. } => (QUEUE, queue.clone()),
        };
        let map = if kind == TASK {
            &mut self.tasks
        } else {
            &mut self.queues
        };
        let old = map.get(&name).cloned();
        let before = old.as_ref().map(|r| r.record.clone()).unwrap_or_default();
        let mut after = before.clone();
        match op {
            FlowOp::Limit(limit) => {
                after.rate = limit.rate;
                after.concurrency = limit.concurrency;
                after.per_key = limit.per_key;
            }
            FlowOp::Unlimit(_) => {
                after.rate = None;
                after.concurrency = None;
                after.per_key = None;
            }
            FlowOp::Pause { paused, .. } => after.paused = paused,
        }
        if after == before {
            return None;
        }
        if after.is_empty() {
            map.remove(&name);
        } else {
            // A changed rate starts over; an unchanged one keeps its schedule.
            let tat = old
                .filter(|r| r.record.rate == after.rate)
                .map_or(Bucket::default(), |r| r.tat);
            map.insert(
                name.clone(),
                Rules {
                    record: after.clone(),
                    tat,
                },
            );
        }
        if after.paused != before.paused {
            self.note_pauses();
        }
        Some(FlowChange {
            kind,
            per_key_changed: kind == TASK && after.per_key != before.per_key,
            record: (!after.is_empty()).then_some(after),
            name,
        })
    }
}

/// Every target's record in the `flow` table, in its key order: task types first, then
/// queues, each by name.
fn records(
    table: &impl ReadableTable<(u8, &'static str), &'static [u8]>,
) -> Result<Vec<(LimitTarget, FlowRecord)>, Error> {
    let mut out = Vec::new();
    for entry in table.iter().db()? {
        let (key, bytes) = entry.db()?;
        let (kind, name) = key.value();
        let target = match kind {
            TASK => LimitTarget::Task(name.to_string()),
            _ => LimitTarget::Queue(name.to_string()),
        };
        out.push((target, codec::decode(bytes.value())?));
    }
    Ok(out)
}

/// Every declared limit in the `flow` table, task types first, each by name (pauses alone
/// are not limits: `stats` shows them).
pub(crate) fn read_limits(
    table: &impl ReadableTable<(u8, &'static str), &'static [u8]>,
) -> Result<Vec<Limit>, Error> {
    Ok(records(table)?
        .into_iter()
        .filter(|(_, r)| r.rate.is_some() || r.concurrency.is_some() || r.per_key.is_some())
        .map(|(target, r)| Limit {
            target,
            rate: r.rate,
            concurrency: r.concurrency,
            per_key: r.per_key,
        })
        .collect())
}

/// The paused queues, by name, sorted.
pub(crate) fn read_paused(
    table: &impl ReadableTable<(u8, &'static str), &'static [u8]>,
) -> Result<Vec<String>, Error> {
    let mut paused: Vec<String> = records(table)?
        .into_iter()
        .filter_map(|(target, r)| match target {
            LimitTarget::Queue(queue) if r.paused => Some(queue),
            _ => None,
        })
        .collect();
    paused.sort();
    Ok(paused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn flow_with(rate: Rate) -> Flow {
        let mut flow = Flow::default();
        flow.tasks.insert(
            "t".into(),
            Rules::new(FlowRecord {
                rate: Some(rate),
                ..FlowRecord::default()
            }),
        );
        flow
    }

    /// 10/s with a burst of 1: one claim every 100 ms exactly, from the first.
    #[test]
    fn a_rate_admits_claims_on_its_exact_schedule() {
        let mut flow = flow_with(Rate::per_second(10).unwrap());
        let running = Running::default();
        let mut admitted = Vec::new();
        let mut wake = None;
        for ms in 0..1_000u64 {
            flow.begin_round();
            while flow.admit((0, "q"), (0, "t"), &running, 1_000_000 + ms) {
                admitted.push(ms);
            }
            wake = flow.take_wake();
            // Told exactly when the next claim conforms.
            assert_eq!(wake, Some(1_000_000 + (ms / 100 + 1) * 100), "at {ms}");
        }
        assert_eq!(admitted, (0..10).map(|i| i * 100).collect::<Vec<_>>());
        assert_eq!(wake, Some(1_001_000));
    }

    /// A burst of 3 lets three go at once after a quiet spell, then the rate holds.
    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let mut flow = flow_with(
            Rate::per(2, Duration::from_secs(1))
                .unwrap()
                .burst(3)
                .unwrap(),
        );
        let running = Running::default();
        let admit_at = |flow: &mut Flow, ms: u64| {
            let mut n = 0;
            while flow.admit((0, "q"), (0, "t"), &running, ms) {
                n += 1;
            }
            n
        };
        assert_eq!(admit_at(&mut flow, 10_000), 3);
        assert_eq!(admit_at(&mut flow, 10_499), 0);
        assert_eq!(admit_at(&mut flow, 10_500), 1);
        assert_eq!(admit_at(&mut flow, 11_000), 1);
        // Quiet for long: the bucket fills to the burst, no more.
        assert_eq!(admit_at(&mut flow, 60_000), 3);
    }
}
