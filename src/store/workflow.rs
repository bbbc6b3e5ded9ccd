//! Workflows in the writer: steps that wait for the tasks before them (`Waiting`, with a
//! count of parents left in the record's `Deps`), stored with their parents in one insert,
//! made ready in the transaction that stores their last parent's success, and failed — with
//! everything after them — when a parent does not succeed. A chord's body is a step with
//! every member as a parent: its counter lives in its record and each member's success
//! decrements it, so nothing polls and nothing expires.

use std::sync::Arc;

use redb::ReadableTable;

use crate::error::{Error, Failure};
use crate::model::{AttemptError, AttemptErrorKind, Revoke, Revoked, TaskId, TaskState, id_runs};
use crate::options::{FlowKeys, Resolved};
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::record::{Deps, StoredLink, TaskRecord};
use crate::store::tx::Tx;
use crate::store::verbs::{Enqueued, Inputs, NewTask};

/// What revoking a workflow did, and the running attempts (id, attempt) to ask to stop.
pub(crate) type RevokedMembers = (Revoked, Vec<(u64, u32)>);

/// Visits every task of the workflow `base` in `tasks` with its stored record: the tasks
/// stored with it have the next ids (one insert stored them), so one sweep from its first
/// finds them all; a finished one may be gone.
pub(crate) fn each_member(
    tasks: &impl ReadableTable<u64, &'static [u8]>,
    base: u64,
    mut visit: impl FnMut(u64, &TaskRecord) -> Result<(), Error>,
) -> Result<(), Error> {
    for entry in tasks.range(base..).db()? {
        let (key, bytes) = entry.db()?;
        let rec = TaskRecord::decode(bytes.value())?;
        if rec.deps.workflow != Some(base) {
            break;
        }
        visit(key.value(), &rec)?;
    }
    Ok(())
}

impl Tx<'_> {
    /// Stores a workflow: tasks whose `after` name earlier tasks of the same insert. Each
    /// task's id is known before it is stored (ids are given in order), so every record is
    /// written once, with its parents and children. The caller has refused unique keys in
    /// a workflow (a duplicate would leave a step without its task).
    pub(crate) fn insert_workflow(
        &mut self,
        tasks: Vec<NewTask>,
        catalog: &mut Catalog,
    ) -> Result<Vec<Enqueued>, Error> {
        let base = self.peek_next_id();
        self.start_workflow(base, tasks.len() as u64)?;
        let mut children: Vec<Vec<u64>> = vec![Vec::new(); tasks.len()];
        for (j, task) in tasks.iter().enumerate() {
            for &i in task.after() {
                debug_assert!(i < j, "a step waits only for steps before it");
                if let Some(c) = children.get_mut(i) {
                    c.push(base + j as u64);
                }
            }
        }
        let mut out = Vec::with_capacity(tasks.len());
        for (j, mut task) in tasks.into_iter().enumerate() {
            let links = self.store_links(&mut task, catalog)?;
            let spec = task.step.take().unwrap_or_default();
            let deps = Deps {
                workflow: Some(base),
                parents_left: u32::try_from(spec.after.len()).unwrap_or(u32::MAX),
                children: std::mem::take(&mut children[j]),
                inputs: id_runs(spec.after.iter().map(|&i| base + i as u64)),
                links,
                settled: spec.settled,
            };
            let interned = self.intern(&task.opts.queue, &task.name, catalog)?;
            let stored = self.insert_with(task, interned, deps)?;
            debug_assert_eq!(stored.id, TaskId(base + j as u64));
            out.push(stored);
        }
        Ok(out)
    }

    /// What a task's final state does to the steps waiting for it: a success counts down
    /// each child's parents (the last one makes it ready); any other end fails every step
    /// after it, as `Failed` with the reason, and theirs in turn (iteratively: a long chain
    /// does not deepen the stack).
    pub(crate) fn after_final(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        let succeeded = rec.state == TaskState::Succeeded;
        let mut fired = Vec::new();
        for link in rec.deps.links.iter().filter(|l| l.on_failure != succeeded) {
            fired.push(self.fire_link(id, link)?);
        }
        if !fired.is_empty() {
            // Its callbacks are its children now: its status shows them, and its output is
            // kept until they have read it.
            let mut stored = rec.clone();
            stored.deps.children.extend(&fired);
            self.put(id, &stored)?;
        }
        if succeeded {
            for &child in &rec.deps.children {
                self.parent_succeeded(child)?;
            }
            return Ok(());
        }
        let reason = format!(
            "task {id} (`{}`), which it waits for, ended {}; it never ran",
            rec.name, rec.state
        );
        for &child in &rec.deps.children {
            self.cascade.push((child, reason.clone()));
        }
        if self.cascading {
            return Ok(());
        }
        self.cascading = true;
        while let Some((child, reason)) = self.cascade.pop() {
            let Some(mut crec) = self.get(child)? else {
                continue;
            };
            if crec.state != TaskState::Waiting {
                continue;
            }
            if crec.deps.settled {
                // It runs whatever its parents did: this one has ended.
                self.parent_succeeded(child)?;
                continue;
            }
            crec.errors.push(AttemptError {
                attempt: crec.attempts,
                at: crate::clock::to_system_time(self.now()),
                kind: AttemptErrorKind::Upstream,
                message: reason,
            });
            tracing::info!(task.id = child, task.name = %crec.name, "workflow step failed: a task before it did not succeed");
            // Its own children are queued by this call (the loop above is running).
            self.finalize(child, &mut crec, TaskState::Failed)?;
        }
        self.cascading = false;
        Ok(())
    }

    /// The callbacks of `task`, interned and ready to store with it.
    pub(crate) fn store_links(
        &mut self,
        task: &mut NewTask,
        catalog: &mut Catalog,
    ) -> Result<Vec<StoredLink>, Error> {
        let links = task
            .step
            .as_mut()
            .map(|s| std::mem::take(&mut s.links))
            .unwrap_or_default();
        let mut stored = Vec::with_capacity(links.len());
        for link in links {
            let t = link.task;
            let (queue_id, name_id) = self.intern(&t.opts.queue, &t.name, catalog)?;
            stored.push(StoredLink {
                on_failure: link.on_failure,
                name: t.name.to_string(),
                name_id,
                queue: t.opts.queue.clone(),
                queue_id,
                payload: t.payload,
                priority: t.opts.priority,
                max_retries: t.opts.max_retries,
                retry: t.opts.retry,
                limits: t.opts.limits,
            });
        }
        Ok(stored)
    }

    /// Enqueues a callback of task `id`, which just ended: ready at once, its input the
    /// task's output (or its failure).
    fn fire_link(&mut self, id: u64, link: &StoredLink) -> Result<u64, Error> {
        let now = self.now();
        let opts = Resolved {
            queue: link.queue.clone(),
            priority: link.priority,
            max_retries: link.max_retries,
            retry: link.retry,
            due_ms: now,
            expires_ms: None,
            limits: link.limits,
            keys: FlowKeys::default(),
        };
        let task = NewTask {
            name: Arc::from(link.name.as_str()),
            payload: link.payload.clone(),
            opts: Arc::new(opts),
            enqueued_at_ms: now,
            origin: None,
            step: None,
        };
        let deps = Deps {
            inputs: vec![(id, 1)],
            ..Deps::default()
        };
        let fired = self.insert_with(task, (link.queue_id, link.name_id), deps)?;
        tracing::info!(
            task.id = id,
            callback = fired.id.as_u64(),
            callback.name = %link.name,
            "task ended: its {} callback enqueued",
            if link.on_failure { "failure" } else { "success" }
        );
        Ok(fired.id.as_u64())
    }

    /// One parent of `child` succeeded: the last one makes it ready (or scheduled, if it has
    /// a countdown still to run).
    fn parent_succeeded(&mut self, child: u64) -> Result<(), Error> {
        // A chord's body met again in this transaction: counted in place.
        if self.count_down_counted(child) {
            return Ok(());
        }
        let Some(mut rec) = self.get(child)? else {
            return Ok(());
        };
        if rec.state != TaskState::Waiting {
            // Failed or revoked meanwhile (a chord body after a member failed).
            return Ok(());
        }
        rec.deps.parents_left = rec.deps.parents_left.saturating_sub(1);
        if rec.deps.parents_left > 0 {
            // Written once at the end of the transaction, however many parents count down.
            self.put_counted(child, rec);
            return Ok(());
        }
        if rec.due_at_ms > self.now() {
            self.set_state(child, &mut rec, TaskState::Scheduled)?;
            let due = rec.due_at_ms;
            self.make_scheduled(child, &mut rec, due)?;
        } else {
            self.set_state(child, &mut rec, TaskState::Ready)?;
            self.make_ready(child, &mut rec)?;
        }
        self.put(child, &rec)
    }

    /// The outputs a step receives, in order: its parents', as one JSON array (`null` for
    /// a parent whose output is gone). Each run of parents is read in one sweep of the
    /// table (their records are final: none is in memory).
    pub(crate) fn inputs_of(&mut self, rec: &TaskRecord) -> Result<Inputs, Error> {
        let mut inputs = Inputs::start();
        for &(first, n) in &rec.deps.inputs {
            let end = first + u64::from(n);
            let mut next = first;
            let tasks = self.tables().tasks()?;
            for entry in tasks.range(first..end).db()? {
                let (id, bytes) = entry.db()?;
                // A parent gone from the table (it cannot be pruned while this step waits,
                // but a file could lack it): its input is null.
                for _ in next..id.value() {
                    inputs.push_missing();
                }
                let parent = TaskRecord::decode(bytes.value())?;
                if parent.state == TaskState::Succeeded {
                    inputs.push_parent(rec.deps.settled, Ok(parent.output.as_deref()))?;
                } else {
                    let failure = Failure::ended(
                        (TaskId(id.value()), parent.name, parent.attempts),
                        parent.state,
                        parent.errors,
                    );
                    inputs.push_parent(rec.deps.settled, Err(&failure))?;
                }
                next = id.value() + 1;
            }
            for _ in next..end {
                inputs.push_missing();
            }
        }
        Ok(inputs.finish())
    }

    /// Revokes every task of the workflow `base` that is not final, as `revoke` does each,
    /// last first (so the steps after a revoked one end `Revoked` too, not `Failed` by the
    /// cascade); returns what it did and the running attempts to stop. The inner error is
    /// the caller's: `NotFound` if `base` is not a workflow's first task.
    pub(crate) fn revoke_workflow(
        &mut self,
        base: u64,
    ) -> Result<Result<RevokedMembers, Error>, Error> {
        match self.get(base)? {
            Some(rec) if rec.deps.workflow == Some(base) => {}
            _ => return Ok(Err(Error::NotFound(TaskId(base)))),
        }
        // A running member's stored record is the one it was claimed with: not final either.
        let mut members = Vec::new();
        each_member(&*self.tables().tasks()?, base, |id, rec| {
            if !rec.state.is_final() {
                members.push(id);
            }
            Ok(())
        })?;
        let mut done = Revoked::default();
        let mut running = Vec::new();
        for id in members.into_iter().rev() {
            if let Ok(revoking) = self.revoke(id)? {
                match revoking.running {
                    Some(attempt) => {
                        done.cancelling += 1;
                        running.push((id, attempt));
                    }
                    None if matches!(revoking.answer, Revoke::Revoked) => done.revoked += 1,
                    None => {}
                }
            }
        }
        Ok(Ok((done, running)))
    }

    /// Whether a finished task's output is still to be read by a step after it (pruning
    /// waits: a result is kept until every consumer has run).
    pub(crate) fn output_still_needed(&mut self, rec: &TaskRecord) -> Result<bool, Error> {
        for &child in &rec.deps.children {
            if let Some(c) = self.get(child)?
                && !c.state.is_final()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn inputs_are_stored_as_runs_of_consecutive_ids() {
        assert_eq!(
            crate::model::id_runs([5, 6, 7, 9, 10, 3]),
            vec![(5, 3), (9, 2), (3, 1)]
        );
        assert_eq!(crate::model::id_runs([]), Vec::<(u64, u32)>::new());
    }
}
