//! A chord too large for one transaction, stored in parts (format 7).
//!
//! One transaction holds its changes in memory until it commits, so a chord of a million
//! members stored at once costs hundreds of MiB. Instead its producer:
//!
//! 1. **opens** it: the ids of every member and of the body (the last one) are reserved at
//!    once, so the chord's ids are consecutive as if one insert had stored it, and an
//!    `open_workflows` row records them;
//! 2. stores its members **part** by part, each record complete (its child is the body,
//!    whose id is known) and written once, with its index position (`slot`) drawn — but
//!    with no index entry and no count: no worker can claim it and no count shows it;
//! 3. **seals** it by storing the body, waiting for every member: from this commit on the
//!    chord exists;
//! 4. **indexes** its members part by part (their ready, scheduled and expiry entries and
//!    their counts); the last part removes the row.
//!
//! Every commit is a prefix of this sequence, so a crash leaves either an unsealed chord,
//! which is deleted after the next open (no member ran: none was indexed), or a sealed one,
//! whose remaining members are indexed after it — by the writer, a part per group from its
//! first on, so that finishing a huge chord costs a part's memory too. A producer that fails
//! before the seal (a member's arguments do not encode, the disk fails) deletes what it
//! stored ([`PartOp::Abandon`]).
//! A member not yet indexed is invisible to revokes (see [`Tx::is_held`]).

use redb::ReadableTable;

use crate::error::Error;
use crate::model::{TaskId, TaskState};
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::record::{Deps, Slot};
use crate::store::transitions::new_record;
use crate::store::tx::Tx;
use crate::store::verbs::{NewTask, PartOp};

/// How many members one part stores or indexes: a part's redo record (about 150 bytes a
/// member) stays under the size that the log takes (`wal::DIRECT_BYTES`).
pub(crate) const PART: usize = 1024;

/// An open chord's row: one past its last id (its body's), the next member to index (after
/// the seal; the next to delete before it), and whether it is sealed.
type Row = (u64, u64, bool);

/// The ids of chord `base` (with its `open_workflows` row) stored but not yet indexed: all of
/// them until it is sealed, then the members from `next to index` on (the body is indexed at
/// the seal).
pub(crate) fn held(base: u64, (end, next, sealed): Row) -> std::ops::Range<u64> {
    if sealed { next..end - 1 } else { base..end }
}

impl Tx<'_> {
    /// Applies one step of storing a chord in parts; see [`PartOp`] for the answers.
    ///
    /// The outer result is the transaction's; the inner one the caller's: `NotFound` for a
    /// chord that is not open (or not in the state the step needs), which fails only this
    /// request (nothing is changed).
    pub(crate) fn part_op(
        &mut self,
        op: PartOp,
        catalog: &mut Catalog,
    ) -> Result<Result<u64, Error>, Error> {
        let (base, sealed) = match &op {
            PartOp::Open { count } => {
                if !(2..=u64::from(u32::MAX) + 1).contains(count) {
                    return Ok(Err(Error::InvalidOption(format!(
                        "a chord has 1 to {} members and a body; this one has {count} tasks",
                        u32::MAX
                    ))));
                }
                let base = self.reserve_ids(*count);
                self.tables()
                    .open_workflows()?
                    .insert(base, (base + count, base, false))?;
                return Ok(Ok(base));
            }
            PartOp::Part { base, .. } | PartOp::Seal { base, .. } | PartOp::Abandon { base } => {
                (*base, false)
            }
            PartOp::Index { base } => (*base, true),
        };
        let Some((end, _, _)) = self.open_row(base, sealed)? else {
            return Ok(Err(Error::NotFound(TaskId(base))));
        };
        Ok(Ok(match op {
            PartOp::Open { .. } => unreachable!("answered above"),
            PartOp::Part { first, tasks, .. } => {
                let len = tasks.len() as u64;
                if first < base || first + len > end - 1 {
                    // Only a producer that lost count gets here.
                    return Ok(Err(Error::NotFound(TaskId(first))));
                }
                for (id, task) in (first..).zip(tasks) {
                    self.store_held(id, task, end - 1, base, catalog)?;
                }
                len
            }
            PartOp::Seal { body, .. } => {
                let id = end - 1;
                self.store_body(id, base, body, catalog)?;
                self.start_workflow(base, end - base)?;
                self.tables()
                    .open_workflows()?
                    .insert(base, (end, base, true))?;
                id
            }
            PartOp::Index { .. } => self.index_part(base)?,
            PartOp::Abandon { .. } => self.abandon_part(base)?,
        }))
    }

    /// Indexes the next members of sealed chord `base`; returns how many are left (0 if it
    /// is not open).
    fn index_part(&mut self, base: u64) -> Result<u64, Error> {
        let Some((end, next, _)) = self.open_row(base, true)? else {
            return Ok(0);
        };
        let stop = (next + PART as u64).min(end - 1);
        for id in next..stop {
            self.index_held(id)?;
        }
        let mut rows = self.tables().open_workflows()?;
        if stop == end - 1 {
            rows.remove(base)?;
        } else {
            rows.insert(base, (end, stop, true))?;
        }
        Ok(end - 1 - stop)
    }

    /// Deletes the next stored members of unsealed chord `base`; returns 0 once nothing of
    /// it is left (or it is not open), else how many ids it spans.
    fn abandon_part(&mut self, base: u64) -> Result<u64, Error> {
        let Some((end, _, _)) = self.open_row(base, false)? else {
            return Ok(0);
        };
        let ids: Vec<u64> = self
            .tables()
            .tasks()?
            .range(base..end)
            .db()?
            .take(PART)
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .db()?;
        {
            let mut tasks = self.tables().tasks()?;
            for &id in &ids {
                tasks.remove(id)?;
            }
        }
        if ids.len() < PART {
            self.tables().open_workflows()?.remove(base)?;
            return Ok(0);
        }
        Ok(end - base)
    }

    /// The row of open chord `base`, if it is open and sealed (or not, as `sealed` says).
    fn open_row(&mut self, base: u64, sealed: bool) -> Result<Option<Row>, Error> {
        Ok(self
            .tables()
            .open_workflows()?
            .get(base)
            .db()?
            .map(|row| row.value())
            .filter(|row| row.2 == sealed))
    }

    /// Stores member `id` of chord `base`, whose body is `body`: complete, with its place in
    /// its index drawn, but neither indexed nor counted.
    fn store_held(
        &mut self,
        id: u64,
        task: NewTask,
        body: u64,
        base: u64,
        catalog: &mut Catalog,
    ) -> Result<(), Error> {
        let interned = self.intern(&task.opts.queue, &task.name, catalog)?;
        let deps = Deps {
            workflow: Some(base),
            children: vec![body],
            ..Deps::default()
        };
        let mut rec = new_record(task, interned, deps, None);
        let seq = self.next_seq();
        if rec.due_at_ms > self.now() {
            rec.state = TaskState::Scheduled;
            rec.slot = Slot::Scheduled {
                at_ms: rec.due_at_ms,
                seq,
            };
        } else {
            rec.slot = Slot::Ready { seq };
        }
        self.put(id, &rec)
    }

    /// Stores the body of chord `base` under `id`, waiting for every member before it.
    fn store_body(
        &mut self,
        id: u64,
        base: u64,
        mut body: NewTask,
        catalog: &mut Catalog,
    ) -> Result<(), Error> {
        let members = u32::try_from(id - base).map_err(|_| {
            Error::InvalidOption(format!(
                "a chord has at most {} members; this one has {}",
                u32::MAX,
                id - base
            ))
        })?;
        let links = self.store_links(&mut body, catalog)?;
        let settled = body.step.as_ref().is_some_and(|s| s.settled);
        let interned = self.intern(&body.opts.queue, &body.name, catalog)?;
        let deps = Deps {
            workflow: Some(base),
            parents_left: members,
            children: Vec::new(),
            inputs: vec![(base, members)],
            links,
            settled,
        };
        let mut rec = new_record(body, interned, deps, None);
        rec.state = TaskState::Waiting;
        self.index_expiry(id, &rec)?;
        self.add_task(id, &rec)?;
        self.put(id, &rec)
    }

    /// Gives stored member `id` its index entries and its count, unless something changed it
    /// since it was stored.
    fn index_held(&mut self, id: u64) -> Result<(), Error> {
        let Some(rec) = self.get(id)? else {
            return Ok(());
        };
        match (rec.state, rec.slot) {
            (TaskState::Ready, Slot::Ready { seq }) => {
                self.insert_ready(rec.ready_key(seq), id)?;
            }
            (TaskState::Scheduled, Slot::Scheduled { at_ms, seq }) => {
                self.tables().scheduled()?.insert((at_ms, seq), id)?;
                self.note_wake(at_ms);
            }
            _ => return Ok(()),
        }
        self.index_expiry(id, &rec)?;
        self.add_task(id, &rec)
    }

    /// Whether `id` is a member of a chord being stored in parts that is not indexed yet: such
    /// a task is not counted and no index holds it, so a revoke must leave it alone.
    pub(crate) fn is_held(&mut self, id: u64) -> Result<bool, Error> {
        let rows = self.tables().open_workflows()?;
        let Some(entry) = rows.range(..=id).db()?.next_back() else {
            return Ok(false);
        };
        let (key, row) = entry.db()?;
        Ok(held(key.value(), row.value()).contains(&id))
    }

    /// The chords being stored in parts (first id, sealed): at open, those a dead process
    /// left.
    pub(crate) fn open_chords(&mut self) -> Result<Vec<(u64, bool)>, Error> {
        self.tables()
            .open_workflows()?
            .iter()
            .db()?
            .map(|e| e.map(|(k, v)| (k.value(), v.value().2)))
            .collect::<Result<_, _>>()
            .db()
    }

    /// One part of the work on a chord a dead process left open: indexes the next members of
    /// a sealed one, deletes the next of an unsealed one. Returns whether some is left.
    pub(crate) fn finish_orphan_part(&mut self, base: u64, sealed: bool) -> Result<bool, Error> {
        let left = match sealed {
            true => self.index_part(base)?,
            false => self.abandon_part(base)?,
        };
        Ok(left > 0)
    }
}
