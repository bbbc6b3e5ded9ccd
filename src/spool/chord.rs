//! Chords (Celery's `chord(group)(body)`): members that run in parallel and a body that runs
//! once after them, reading their outputs in order. A chord up to [`PART`] tasks is stored in
//! one transaction; a larger one in parts (`store::parts`) — its ids reserved at once, its
//! members stored part by part but claimable by no worker until its body seals it — so that
//! storing a million members costs a part's memory, not the chord's. Either way, when the
//! call returns every member exists, and if it fails (or the process dies) before the seal,
//! none does.

use crate::model::TaskId;

use crate::error::Error;
use crate::options::Options;
use crate::result::TaskHandle;
use crate::shared::Spool;
use crate::spool::new_tasks;
use crate::spool::workflow::{GroupHandle, refuse_unique, step};
use crate::store::{Engine, NewTask, PART, PartOp};
use crate::task::Task;

/// A chord: its members, and its body.
#[derive(Debug, Clone)]
pub struct ChordHandle<M, B> {
    /// The members, in order.
    pub members: GroupHandle<M>,
    /// The body: its `wait` gives the chord's result.
    pub body: TaskHandle<B>,
}

/// An unsealed chord being stored in parts: deleted if its producer stops before the seal.
struct Unsealed<'a> {
    engine: &'a dyn Engine,
    base: u64,
    sealed: bool,
}

impl Drop for Unsealed<'_> {
    fn drop(&mut self) {
        // Until nothing is left; if the engine fails, the next open deletes the rest.
        while !self.sealed
            && matches!(
                self.engine.parts(PartOp::Abandon { base: self.base }),
                Ok(1..)
            )
        {}
    }
}

impl Spool {
    /// Enqueues a chord (Celery's `chord(group)(body)`): `members` run in parallel, and
    /// `body` runs once after every one of them succeeded, reading their outputs in member
    /// order with [`Context::inputs`](crate::Context::inputs). Its counter lives in the
    /// body's record and each member's success counts it down in its own transaction, so
    /// nothing polls and a restart loses nothing; a member retried counts once. If a member
    /// does not succeed, the body ends `Failed`, naming it, and never runs.
    ///
    /// All or nothing, durable when it returns: a chord of fewer than 1,024 members is stored
    /// in one transaction; a larger one in parts of 1,024, none of which a worker can claim
    /// before the body is stored last, so its memory is a part's, not the chord's (if the
    /// call fails or the process dies before that, what was stored is deleted — at the
    /// latest after the next open; once the body is stored, a reopen finishes the chord).
    ///
    /// # Errors
    /// `InvalidOption` for a chord without members, or for a member or body with a unique
    /// key; `Json` for bad arguments (nothing is stored); as
    /// [`Spool::enqueue`](crate::Spool::enqueue) (nothing is stored, unless the failure came
    /// after a large chord's body was stored: the chord then exists, and whatever of it is
    /// not yet claimable becomes so after the next open).
    pub fn chord<T: Task, B: Task>(
        &self,
        members: impl IntoIterator<Item = T>,
        body: B,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        self.chord_of(members, body, false)
    }

    /// A chord whose body runs once every member has ended, however it ended (the opt-in
    /// "run anyway"), reading each member's output or failure in member order with
    /// [`Context::results`](crate::Context::results).
    ///
    /// # Errors
    /// As [`chord`](Self::chord).
    pub fn chord_settled<T: Task, B: Task>(
        &self,
        members: impl IntoIterator<Item = T>,
        body: B,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        self.chord_of(members, body, true)
    }

    fn chord_of<T: Task, B: Task>(
        &self,
        members: impl IntoIterator<Item = T>,
        body: B,
        settled: bool,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        let now = self.shared.clock.now_ms();
        let mut body = step(body, Options::new())(now)?;
        body.step_mut().settled = settled;
        let members: Vec<T> = members.into_iter().collect();
        if members.is_empty() {
            return Err(Error::InvalidOption(format!(
                "a chord needs at least one member before its body `{}`",
                B::NAME
            )));
        }
        if members.len() >= PART {
            return self.chord_in_parts::<T, B>(members, body, now);
        }
        // Every member shares one name and one set of resolved options.
        let mut tasks = new_tasks(members, Options::new(), now)?;
        if let Some(first) = tasks.first() {
            refuse_unique(first, "a chord's member")?;
        }
        let n = tasks.len();
        body.step_mut().after = (0..n).collect();
        tasks.push(body);
        let mut stored = self.shared.engine.insert(tasks)?;
        let body = stored.pop().ok_or(Error::Closed)?;
        Ok(ChordHandle {
            members: GroupHandle::of(
                stored
                    .into_iter()
                    .map(|e| TaskHandle::new(e.id, T::NAME, &self.shared))
                    .collect(),
            ),
            body: TaskHandle::new(body.id, B::NAME, &self.shared),
        })
    }

    /// Stores a chord of [`PART`] members or more in parts (see the module docs).
    fn chord_in_parts<T: Task, B: Task>(
        &self,
        members: Vec<T>,
        body: NewTask,
        now: u64,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        let n = u32::try_from(members.len()).map_err(|_| {
            Error::InvalidOption(format!(
                "a chord has at most {} members; this one has {}",
                u32::MAX,
                members.len()
            ))
        })?;
        let engine = self.shared.engine.as_ref();
        let base = engine.parts(PartOp::Open {
            count: u64::from(n) + 1,
        })?;
        let mut unsealed = Unsealed {
            engine,
            base,
            sealed: false,
        };
        let mut first = base;
        let mut members = members.into_iter();
        loop {
            let part: Vec<T> = members.by_ref().take(PART).collect();
            if part.is_empty() {
                break;
            }
            let tasks = new_tasks(part, Options::new(), now)?;
            if first == base
                && let Some(task) = tasks.first()
            {
                refuse_unique(task, "a chord's member")?;
            }
            first += engine.parts(PartOp::Part { base, first, tasks })?;
        }
        let body = engine.parts(PartOp::Seal { base, body })?;
        unsealed.sealed = true;
        while engine.parts(PartOp::Index { base })? > 0 {}
        Ok(ChordHandle {
            members: GroupHandle::run(TaskHandle::new(TaskId(base), T::NAME, &self.shared), n),
            body: TaskHandle::new(TaskId(body), B::NAME, &self.shared),
        })
    }
}
