//! Every state change of a task, applied inside one write transaction: the file engine's
//! verbs (insert, start, complete, release, promote due tasks, expire, prune, recover at
//! open). The writer decides when to call them and makes the group durable. Each verb keeps
//! the indexes and the per-queue state counts consistent with the task record.

use redb::ReadableTable;

use crate::clock::{rfc3339_ms, to_system_time};
use crate::error::Error;
use crate::model::{AttemptError, AttemptErrorKind, Disposition, Outcome, TaskId, TaskState};
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::inflight::Started;
use crate::store::noted::{Noted, What};
use crate::store::record::{Control, Deps, FlowPart, Slot, TaskRecord, UniqueKey};
use crate::store::tx::Tx;
use crate::store::unique;
use crate::store::verbs::{Completion, Enqueued, NewTask};

/// The first `limit` keys of a `(due at ms, id) → ()` index that are due at `now`, and
/// whether more are due.
fn due_keys(
    index: &redb::Table<'_, (u64, u64), ()>,
    now: u64,
    limit: usize,
) -> Result<(Vec<(u64, u64)>, bool), Error> {
    let mut due: Vec<(u64, u64)> = index
        .range(..=(now, u64::MAX))
        .db()?
        .take(limit + 1)
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()
        .db()?;
    let more = due.len() > limit;
    due.truncate(limit);
    Ok((due, more))
}

/// The record of a new task on the interned queue and name `ids`, `Ready` until it is placed.
pub(crate) fn new_record(
    new: NewTask,
    ids: (u32, u32),
    deps: Deps,
    unique: Option<UniqueKey>,
) -> TaskRecord {
    let (queue, name_id) = ids;
    TaskRecord {
        name: new.name.to_string(),
        name_id,
        queue,
        priority: new.opts.priority,
        state: TaskState::Ready,
        attempts: 0,
        max_retries: new.opts.max_retries,
        retry: new.opts.retry,
        enqueued_at_ms: new.enqueued_at_ms,
        due_at_ms: new.opts.due_ms,
        started_at_ms: None,
        finished_at_ms: None,
        expires_at_ms: new.opts.expires_ms,
        slot: Slot::None,
        errors: Vec::new(),
        origin: new.origin,
        output: None,
        payload: new.payload,
        control: Control {
            time_limit_ms: new.opts.limits.time_limit_ms,
            soft_time_limit_ms: new.opts.limits.soft_time_limit_ms,
            ..Control::default()
        },
        flow: FlowPart {
            unique,
            limit_key: new.opts.keys.limit_key.clone(),
        },
        deps,
    }
}

impl Tx<'_> {
    /// Stores new tasks, interning their queues and names; returns their ids.
    pub(crate) fn insert_all(
        &mut self,
        tasks: Vec<NewTask>,
        catalog: &mut Catalog,
    ) -> Result<Vec<Enqueued>, Error> {
        if tasks.iter().any(|t| !t.after().is_empty()) {
            return self.insert_workflow(tasks, catalog);
        }
        let mut ids = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            let interned = self.intern(&task.opts.queue, &task.name, catalog)?;
            if task.step.is_none() {
                ids.push(self.insert(task, interned)?);
            } else {
                let deps = Deps {
                    links: self.store_links(&mut task, catalog)?,
                    ..Deps::default()
                };
                ids.push(self.insert_with(task, interned, deps)?);
            }
        }
        Ok(ids)
    }

    /// Stores a new task on the interned queue and name `ids`; returns its id — or, if a task
    /// holds its unique key, stores nothing and returns the holder's.
    pub(crate) fn insert(&mut self, new: NewTask, ids: (u32, u32)) -> Result<Enqueued, Error> {
        self.insert_with(new, ids, Deps::default())
    }

    /// As [`Tx::insert`], with its place in a workflow: a step with parents left waits.
    pub(crate) fn insert_with(
        &mut self,
        new: NewTask,
        ids: (u32, u32),
        deps: Deps,
    ) -> Result<Enqueued, Error> {
        let (_, name_id) = ids;
        let unique = match &new.opts.keys.unique {
            Some((key, until)) => {
                if let Some(holder) = self.unique_holder(name_id, key)? {
                    return Ok(Enqueued {
                        id: TaskId(holder),
                        duplicate: true,
                    });
                }
                Some(unique::stored(key, *until, new.enqueued_at_ms))
            }
            None => None,
        };
        let id = self.next_id();
        if let Some(u) = &unique {
            self.take_unique(name_id, &u.key, id)?;
        }
        let due = new.opts.due_ms;
        let mut rec = new_record(new, ids, deps, unique);
        self.index_expiry(id, &rec)?;
        if rec.deps.parents_left > 0 {
            // Made ready (or scheduled) by its last parent's success.
            rec.state = TaskState::Waiting;
        } else if due > self.now() {
            rec.state = TaskState::Scheduled;
            self.make_scheduled(id, &mut rec, due)?;
        } else {
            self.make_ready(id, &mut rec)?;
        }
        self.add_task(id, &rec)?;
        self.put(id, &rec)?;
        Ok(Enqueued {
            id: TaskId(id),
            duplicate: false,
        })
    }

    /// Moves a ready task to `Running` for its next attempt; returns its payload.
    pub(crate) fn start(&mut self, id: u64, rec: &mut TaskRecord) -> Result<Vec<u8>, Error> {
        self.unslot(rec)?;
        rec.attempts += 1;
        let now = self.now();
        rec.started_at_ms = Some(now);
        self.set_state(id, rec, TaskState::Running)?;
        self.tables().running()?.insert(id, (rec.attempts, now))?;
        self.note(|| What::Started, id, rec);
        // The worker gets the arguments; the writer's copy goes without (see `restore_payload`).
        let payload = std::mem::take(&mut rec.payload);
        self.put(id, rec)?;
        Ok(payload)
    }

    /// Gives a running task's in-memory record its arguments back from the stored record
    /// (which is not rewritten while the task runs), before it is stored for another attempt
    /// or as a failure.
    pub(crate) fn restore_payload(&mut self, id: u64, rec: &mut TaskRecord) -> Result<(), Error> {
        if rec.payload.is_empty()
            && let Some(bytes) = self.tables().tasks()?.get(id).db()?
        {
            rec.payload = TaskRecord::decode(bytes.value())?.payload;
        }
        Ok(())
    }

    /// Ends a task in a final state: records the time and schedules its pruning.
    pub(crate) fn finalize(
        &mut self,
        id: u64,
        rec: &mut TaskRecord,
        state: TaskState,
    ) -> Result<(), Error> {
        self.unslot(rec)?;
        self.set_state(id, rec, state)?;
        let now = self.now();
        rec.finished_at_ms = Some(now);
        if let Some(ttl) = self.result_ttl_ms() {
            let at = now.saturating_add(ttl);
            self.tables().result_expiry()?.insert((at, id), ())?;
            self.note_wake(at);
        }
        self.put(id, rec)?;
        self.mark_final(id);
        self.note_final(id, rec);
        if let Some(base) = rec.deps.workflow {
            self.workflow_task_ended(base, 1);
        }
        if !rec.deps.children.is_empty() || !rec.deps.links.is_empty() {
            self.after_final(id, rec)?;
        }
        Ok(())
    }

    /// Ends a task as `Expired` with the reason in its history.
    pub(crate) fn expire(&mut self, id: u64, rec: &mut TaskRecord) -> Result<(), Error> {
        let now = self.now();
        let expired_at = rec.expires_at_ms.unwrap_or(now);
        let message = format!("expired at {} before it started", rfc3339_ms(expired_at));
        tracing::info!(task.id = id, task.name = %rec.name, "task {message}");
        rec.errors.push(AttemptError {
            attempt: rec.attempts,
            at: to_system_time(now),
            kind: AttemptErrorKind::Expired,
            message,
        });
        self.finalize(id, rec, TaskState::Expired)
    }

    /// Applies a worker's report. Discarded (returns `false`) unless the task is still running
    /// this very attempt: a late report can never overwrite a newer state.
    pub(crate) fn complete(
        &mut self,
        c: &Completion,
        catalog: &mut Catalog,
    ) -> Result<bool, Error> {
        let id = c.id.0;
        // Every running task's record is in memory; one that is not is not running.
        let Some(mut rec) = self.take_running(id) else {
            tracing::debug!(id, "discarding a completion of a task that is not running");
            return Ok(false);
        };
        if rec.attempts != c.attempt {
            self.keep_running(id, rec);
            tracing::debug!(id, attempt = c.attempt, "discarding a stale completion");
            return Ok(false);
        }
        self.attempt_done(id, c.attempt);
        self.samples.ran(rec.queue, rec.name_id, c.run_us);
        rec.started_at_ms = Some(c.started_at_ms);
        if let Some(progress) = &c.progress {
            rec.control.progress = Some(progress.to_vec());
        }
        if rec.control.revoke_requested {
            // Revoked while it ran: whatever the attempt returned, the task ends here.
            self.end_revoked(id, &mut rec, c)?;
            return Ok(true);
        }
        let Some((kind, message, disposition)) = c.outcome.failure(c.past_soft_limit) else {
            if let Outcome::Succeeded(output) = &c.outcome {
                rec.output = Some(output.clone());
            }
            self.finalize(id, &mut rec, TaskState::Succeeded)?;
            // The handler's follow-ups exist exactly when its success does.
            if !c.follow_ups.is_empty() {
                self.insert_all(c.follow_ups.clone(), catalog)?;
            }
            return Ok(true);
        };
        if let Disposition::Snooze(delay) = disposition {
            return self
                .snooze(id, rec, c.attempt, delay, message)
                .map(|()| true);
        }
        let message = message.to_string();
        let delay = disposition.retry_delay_ms(|| rec.retry.delay_ms(rec.attempts));
        self.fail_attempt(id, rec, c.attempt, (kind, message), delay)?;
        Ok(true)
    }

    /// Records a failed attempt, then retries the task after `delay` if retries remain, or
    /// ends it `Failed`.
    pub(crate) fn fail_attempt(
        &mut self,
        id: u64,
        mut rec: TaskRecord,
        attempt: u32,
        (kind, message): (AttemptErrorKind, String),
        delay: Option<u64>,
    ) -> Result<(), Error> {
        let now = self.now();
        rec.errors.push(AttemptError {
            attempt,
            at: to_system_time(now),
            kind,
            message,
        });
        self.restore_payload(id, &mut rec)?;
        // Logged here, where the outcome is decided (the attempt's span is on the worker).
        let error = rec.errors.last().map_or("", |e| e.message.as_str());
        match delay {
            Some(delay) if rec.retries_left() => {
                tracing::warn!(
                    task.id = id,
                    task.name = %rec.name,
                    attempt,
                    delay_s = delay as f64 / 1000.0,
                    error,
                    "task failed; retrying in {:.3}s",
                    delay as f64 / 1000.0
                );
                let error = error.to_string();
                self.set_state(id, &mut rec, TaskState::Retrying)?;
                let due_ms = now.saturating_add(delay);
                self.make_scheduled(id, &mut rec, due_ms)?;
                self.note(|| What::Retried { error, due_ms }, id, &rec);
                self.put(id, &rec)
            }
            _ => {
                tracing::error!(
                    task.id = id,
                    task.name = %rec.name,
                    attempt,
                    error,
                    "task failed for good after {} attempt(s)",
                    rec.attempts
                );
                self.finalize(id, &mut rec, TaskState::Failed)
            }
        }
    }

    /// Returns a claimed attempt that never started (a prefetched task at shutdown) to the
    /// ready index, giving the attempt back.
    pub(crate) fn release(&mut self, id: u64, attempt: u32) -> Result<(), Error> {
        let Some(rec) = self.get(id)? else {
            return Ok(());
        };
        if rec.state != TaskState::Running || rec.attempts != attempt {
            return Ok(());
        }
        self.tables().running()?.remove(id)?;
        self.unstart(id, rec)
    }

    /// Back to the ready index with the attempt given back.
    fn unstart(&mut self, id: u64, mut rec: TaskRecord) -> Result<(), Error> {
        self.restore_payload(id, &mut rec)?;
        rec.attempts = rec.attempts.saturating_sub(1);
        rec.started_at_ms = None;
        self.set_state(id, &mut rec, TaskState::Ready)?;
        self.make_ready(id, &mut rec)?;
        self.put(id, &rec)
    }

    /// Stages due work, at most `limit` of each kind: fires due schedules, moves scheduled
    /// tasks whose time has come to the ready index (or to `Expired`), and expires tasks not
    /// started by their expiry. Returns whether more is due.
    pub(crate) fn stage_due(&mut self, limit: usize, catalog: &mut Catalog) -> Result<bool, Error> {
        let mut more = self.fire_schedules(limit, catalog)?;
        more |= self.promote_due(limit)?;
        more |= self.expire_due(limit)?;
        Ok(more)
    }

    /// Moves up to `limit` scheduled tasks whose time has come to the ready index (or to
    /// `Expired`). Returns whether more are due.
    fn promote_due(&mut self, limit: usize) -> Result<bool, Error> {
        let now = self.now();
        let due: Vec<((u64, u64), u64)> = self
            .tables()
            .scheduled()?
            .range(..=(now, u64::MAX))
            .db()?
            .take(limit + 1)
            .map(|e| e.map(|(k, v)| (k.value(), v.value())))
            .collect::<Result<_, _>>()
            .db()?;
        let more = due.len() > limit;
        for &(_, id) in due.iter().take(limit) {
            let Some(mut rec) = self.get(id)? else {
                continue;
            };
            if rec.expires_at_ms.is_some_and(|e| e <= now) {
                self.expire(id, &mut rec)?;
                continue;
            }
            self.set_state(id, &mut rec, TaskState::Ready)?;
            self.make_ready(id, &mut rec)?;
            self.put(id, &rec)?;
        }
        Ok(more)
    }

    /// Ends as `Expired` up to `limit` tasks whose expiry has passed before they started.
    /// Returns whether more are due.
    fn expire_due(&mut self, limit: usize) -> Result<bool, Error> {
        let now = self.now();
        let (due, more) = due_keys(&*self.tables().task_expiry()?, now, limit)?;
        for key in due {
            self.tables().task_expiry()?.remove(key)?;
            let Some(mut rec) = self.get(key.1)? else {
                continue;
            };
            // A started task is not interrupted; if it retries, the next claim expires it.
            if matches!(
                rec.state,
                TaskState::Scheduled | TaskState::Ready | TaskState::Retrying | TaskState::Waiting
            ) {
                self.expire(key.1, &mut rec)?;
            }
        }
        Ok(more)
    }

    /// Deletes up to `limit` finished tasks whose results TTL has passed. Returns whether more
    /// are due.
    pub(crate) fn prune(&mut self, limit: usize) -> Result<bool, Error> {
        let now = self.now();
        let (due, more) = due_keys(&*self.tables().result_expiry()?, now, limit)?;
        for key in due {
            let id = key.1;
            self.tables().result_expiry()?.remove(key)?;
            match self.get(id)? {
                // Retried by hand since it finished: not a result any more.
                Some(rec) if !rec.state.is_final() => continue,
                Some(rec) if let Some(at) = self.kept_until(id, &rec)? => {
                    // Its workflow has not ended a TTL ago, or a task that reads its output
                    // has not ended.
                    self.tables().result_expiry()?.insert((at, id), ())?;
                    continue;
                }
                Some(rec) => {
                    self.drop_task(id, &rec)?;
                    self.drop_unique(id, &rec)?;
                }
                None => {}
            }
            self.tables().tasks()?.remove(id)?;
        }
        Ok(more)
    }

    /// At open: every attempt still marked running belonged to a dead process. One that had
    /// started (per the start journal) counts as an attempt ("worker lost"): the task runs
    /// again at once, or ends `Failed` when its attempts are used up. One that was only
    /// prefetched gets its attempt back. Returns (the started orphans, how many were not).
    pub(crate) fn recover_orphans(
        &mut self,
        started: &Started,
    ) -> Result<(Vec<u64>, usize), Error> {
        let orphans: Vec<(u64, (u32, u64))> = self
            .tables()
            .running()?
            .iter()
            .db()?
            .map(|e| e.map(|(k, v)| (k.value(), v.value())))
            .collect::<Result<_, _>>()
            .db()?;
        let mut lost = Vec::new();
        for &(id, (attempt, started_at_ms)) in &orphans {
            self.tables().running()?.remove(id)?;
            let Some(mut rec) = self.get(id)? else {
                continue;
            };
            rec.overlay_running(attempt, started_at_ms);
            if rec.control.revoke_requested {
                self.end_revoked_orphan(id, rec, attempt)?;
                continue;
            }
            if !started.contains(id, attempt) {
                self.unstart(id, rec)?;
                continue;
            }
            lost.push(id);
            rec.errors.push(AttemptError {
                attempt,
                at: to_system_time(self.now()),
                kind: AttemptErrorKind::WorkerLost,
                message: format!(
                    "worker lost: the process exited while attempt {attempt} was running"
                ),
            });
            if rec.retries_left() {
                tracing::warn!(
                    task.id = id,
                    task.name = %rec.name,
                    attempt,
                    "task recovered: attempt {attempt} was running when the previous owner of \
                     the file died; it runs again now"
                );
                self.set_state(id, &mut rec, TaskState::Ready)?;
                self.make_ready(id, &mut rec)?;
                self.put(id, &rec)?;
            } else {
                tracing::error!(
                    task.id = id,
                    task.name = %rec.name,
                    attempt,
                    "task failed for good: attempt {attempt} was running when the previous \
                     owner of the file died, and it was the last one allowed"
                );
                self.finalize(id, &mut rec, TaskState::Failed)?;
            }
        }
        let unstarted = orphans.len() - lost.len();
        Ok((lost, unstarted))
    }
}

/// Noting events (see `store::noted`).
impl Tx<'_> {
    /// Notes `what` of task `id` now, if events are collected.
    pub(crate) fn note(&mut self, what: impl FnOnce() -> What, id: u64, rec: &TaskRecord) {
        let now = self.now();
        if let Some(events) = self.events_mut() {
            events.push(Noted::of(what(), id, rec, now));
        }
    }

    /// Notes a task's final state.
    pub(crate) fn note_final(&mut self, id: u64, rec: &TaskRecord) {
        self.note(
            || match rec.state {
                TaskState::Succeeded => What::Succeeded,
                TaskState::Expired => What::Expired,
                TaskState::Revoked => What::Revoked,
                _ => What::Failed(
                    rec.errors
                        .last()
                        .map(|e| e.message.clone())
                        .unwrap_or_default(),
                ),
            },
            id,
            rec,
        );
    }
}
