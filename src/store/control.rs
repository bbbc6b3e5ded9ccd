//! Execution control, inside one write transaction: revoking a task (before it runs, or while
//! an attempt runs), snoozing one, and retrying or forgetting a finished one. Like every
//! transition, each is one change of the record and its indexes, fenced by the state the
//! record is in.

use redb::ReadableTable;

use crate::clock::{duration_ms, to_system_time};
use crate::error::Error;
use crate::model::{
    AttemptError, AttemptErrorKind, Revoke, Revoked, TaskId, TaskState, snooze_entry,
};
use crate::query::TaskFilter;
use crate::store::by_state::stored;
use crate::store::catalog::Catalog;
use crate::store::errors::Db;
use crate::store::record::TaskRecord;
use crate::store::tx::Tx;
use crate::store::verbs::Completion;

/// How many records a bulk request reads at a time (its memory stays this bounded).
const BULK_BATCH: usize = 1024;

/// What revoking did, for the writer: the answer, and the attempt to signal if one runs.
pub(crate) struct Revoking {
    pub answer: Revoke,
    /// The running attempt whose handler is to be asked to stop.
    pub running: Option<u32>,
}

impl Tx<'_> {
    /// Revokes task `id`: a waiting task ends `Revoked` now; a running one is marked so that
    /// its attempt's end (or the next open, after a crash) ends it `Revoked`.
    ///
    /// The outer result is the transaction's; the inner one the caller's: `NotFound` for
    /// an unknown id, which fails only this request (nothing is changed).
    pub(crate) fn revoke(&mut self, id: u64) -> Result<Result<Revoking, Error>, Error> {
        if self.is_held(id)? {
            return Ok(Err(Error::NotFound(TaskId(id))));
        }
        let Some(mut rec) = self.get(id)? else {
            return Ok(Err(Error::NotFound(TaskId(id))));
        };
        let revoking = match rec.state {
            state if state.is_final() => Revoking {
                answer: Revoke::AlreadyFinal(state),
                running: None,
            },
            TaskState::Running => {
                if !rec.control.revoke_requested {
                    rec.control.revoke_requested = true;
                    self.mark_stored(id, |stored| stored.control.revoke_requested = true)?;
                    self.put(id, &rec)?;
                    tracing::info!(
                        task.id = id,
                        task.name = %rec.name,
                        attempt = rec.attempts,
                        "task revoked while attempt {} runs; it ends when the attempt returns",
                        rec.attempts
                    );
                }
                Revoking {
                    answer: Revoke::Cancelling,
                    running: Some(rec.attempts),
                }
            }
            _ => {
                self.unslot(&mut rec)?;
                rec.errors.push(AttemptError {
                    attempt: rec.attempts,
                    at: to_system_time(self.now()),
                    kind: AttemptErrorKind::Revoked,
                    message: "revoked before it ran".into(),
                });
                tracing::info!(task.id = id, task.name = %rec.name, "task revoked before it ran");
                self.finalize(id, &mut rec, TaskState::Revoked)?;
                Revoking {
                    answer: Revoke::Revoked,
                    running: None,
                }
            }
        };
        Ok(Ok(revoking))
    }

    /// Changes the stored record of a running task (the writer's copy in memory is the
    /// current one; the stored one is what an open after a crash reads).
    fn mark_stored(&mut self, id: u64, change: impl FnOnce(&mut TaskRecord)) -> Result<(), Error> {
        let stored = match self.tables().tasks()?.get(id).db()? {
            Some(bytes) => TaskRecord::decode(bytes.value())?,
            None => return Ok(()),
        };
        let mut stored = stored;
        change(&mut stored);
        let bytes = stored.encode()?;
        self.tables().tasks()?.insert(id, bytes.as_slice())
    }

    /// Stores the progress a running attempt reported (with a group that commits anyway).
    pub(crate) fn store_progress(
        &mut self,
        id: u64,
        attempt: u32,
        json: Vec<u8>,
    ) -> Result<(), Error> {
        let Some(mut rec) = self.take_running(id) else {
            return Ok(());
        };
        if rec.attempts == attempt {
            rec.control.progress = Some(json.clone());
            self.mark_stored(id, |stored| stored.control.progress = Some(json))?;
        }
        self.keep_running(id, rec);
        Ok(())
    }

    /// Ends a task whose attempt returned (or was recovered) after a revoke was asked: its
    /// outcome is discarded.
    pub(crate) fn end_revoked(
        &mut self,
        id: u64,
        rec: &mut TaskRecord,
        c: &Completion,
    ) -> Result<(), Error> {
        self.restore_payload(id, rec)?;
        rec.output = None;
        rec.control.revoke_requested = false;
        let message = format!(
            "revoked while attempt {} ran; what it returned ({}) was discarded",
            c.attempt,
            c.outcome.describe()
        );
        tracing::info!(task.id = id, task.name = %rec.name, attempt = c.attempt, "task {message}");
        rec.errors.push(AttemptError {
            attempt: c.attempt,
            at: to_system_time(self.now()),
            kind: AttemptErrorKind::Revoked,
            message,
        });
        self.finalize(id, rec, TaskState::Revoked)
    }

    /// At open: an orphan whose revoke was asked before the process died ends `Revoked`
    /// instead of running again.
    pub(crate) fn end_revoked_orphan(
        &mut self,
        id: u64,
        mut rec: TaskRecord,
        attempt: u32,
    ) -> Result<(), Error> {
        rec.control.revoke_requested = false;
        rec.errors.push(AttemptError {
            attempt,
            at: to_system_time(self.now()),
            kind: AttemptErrorKind::Revoked,
            message: format!(
                "revoked while attempt {attempt} ran; the process exited before it returned"
            ),
        });
        tracing::info!(task.id = id, task.name = %rec.name, attempt, "task revoked at recovery");
        self.finalize(id, &mut rec, TaskState::Revoked)
    }

    /// The handler asked to run again after `delay` without using up a retry: the task gets
    /// one more retry than it had (as Oban's snooze does), so attempt numbers stay unique.
    /// A zero delay or one over [`MAX_DELAY`](crate::MAX_DELAY) fails the attempt instead (retried by its
    /// policy), with a message that says why.
    pub(crate) fn snooze(
        &mut self,
        id: u64,
        mut rec: TaskRecord,
        attempt: u32,
        delay: std::time::Duration,
        message: &str,
    ) -> Result<(), Error> {
        let entry = match snooze_entry(delay, message) {
            Ok(entry) => entry,
            Err(why) => {
                let backoff = rec.retry.delay_ms(rec.attempts);
                return self.fail_attempt(
                    id,
                    rec,
                    attempt,
                    (AttemptErrorKind::Error, why),
                    Some(backoff),
                );
            }
        };
        self.restore_payload(id, &mut rec)?;
        rec.control.base_retries = Some(rec.base_retries());
        rec.max_retries = rec.max_retries.saturating_add(1);
        let now = self.now();
        let secs = delay.as_secs_f64();
        rec.errors.push(AttemptError {
            attempt,
            at: to_system_time(now),
            kind: AttemptErrorKind::Snoozed,
            message: entry,
        });
        tracing::info!(task.id = id, task.name = %rec.name, attempt, "task snoozed for {secs}s");
        self.set_state(id, &mut rec, TaskState::Scheduled)?;
        self.make_scheduled(id, &mut rec, now.saturating_add(duration_ms(delay)))?;
        self.put(id, &rec)
    }

    /// Runs a `Failed`, `Expired` or `Revoked` task again: back to `Ready` now, its history
    /// kept, with a fresh retry budget (the retries it was enqueued with, counted from here)
    /// and without the expiry that may have ended it.
    ///
    /// The inner result is the caller's: `NotFound` for an unknown id, `WrongState` for a
    /// task that is not in one of those states (nothing is changed).
    pub(crate) fn retry_final(&mut self, id: u64) -> Result<Result<(), Error>, Error> {
        let Some(mut rec) = self.get(id)? else {
            return Ok(Err(Error::NotFound(TaskId(id))));
        };
        if !matches!(
            rec.state,
            TaskState::Failed | TaskState::Expired | TaskState::Revoked
        ) {
            return Ok(Err(Error::WrongState {
                id: TaskId(id),
                state: rec.state,
                applies: "only a failed, expired or revoked task can be retried",
            }));
        }
        self.unprune(id, &rec)?;
        if let Some(workflow) = rec.deps.workflow {
            self.workflow_task_ended(workflow, -1);
        }
        let base = rec.base_retries();
        rec.control.base_retries = Some(base);
        rec.max_retries = rec.attempts.saturating_add(base);
        rec.finished_at_ms = None;
        rec.output = None;
        let now = self.now();
        if rec.expires_at_ms.is_some_and(|e| e <= now) {
            rec.expires_at_ms = None;
        }
        rec.due_at_ms = now;
        tracing::info!(task.id = id, task.name = %rec.name, "task retried by hand");
        self.set_state(id, &mut rec, TaskState::Ready)?;
        self.make_ready(id, &mut rec)?;
        self.put(id, &rec)?;
        Ok(Ok(()))
    }

    /// Deletes a finished task and its result now.
    ///
    /// The inner result is the caller's: `NotFound` for an unknown id, `WrongState` for a
    /// task not in a final state (nothing is changed).
    pub(crate) fn forget(&mut self, id: u64) -> Result<Result<(), Error>, Error> {
        let Some(rec) = self.get(id)? else {
            return Ok(Err(Error::NotFound(TaskId(id))));
        };
        if !rec.state.is_final() {
            return Ok(Err(Error::WrongState {
                id: TaskId(id),
                state: rec.state,
                applies: "only a finished task (succeeded, failed, expired or revoked) can be \
                          forgotten",
            }));
        }
        self.unprune(id, &rec)?;
        self.drop_task(id, &rec)?;
        self.drop_unique(id, &rec)?;
        self.tables().tasks()?.remove(id)?;
        Ok(Ok(()))
    }

    /// The tasks that match `filter` and are in a state `applies` to, among those stored in
    /// state `code` (see `store::by_state`), a batch of up to `BULK_BATCH` ids at a time, from
    /// `after` on; returns them and where to go on (`None` at the end of that state).
    fn matching(
        &mut self,
        filter: &TaskFilter,
        catalog: &Catalog,
        applies: fn(TaskState) -> bool,
        (code, after): (u8, u64),
    ) -> Result<(Vec<u64>, Option<u64>), Error> {
        let (keys, next) = self.ids_in_state(code, after, BULK_BATCH)?;
        let mut ids = Vec::new();
        for id in keys {
            let Some(rec) = self.get(id)? else {
                continue;
            };
            let schedule = rec.origin.as_ref().map(|o| o.schedule.as_str());
            if applies(rec.state)
                && filter.matches(
                    &catalog.queues.name(rec.queue),
                    &rec.name,
                    rec.state,
                    rec.enqueued_at_ms,
                    schedule,
                )
            {
                ids.push(id);
            }
        }
        Ok((ids, next))
    }

    /// Calls `each` with every batch of tasks that match `filter` and are in a state
    /// `applies` to, reading only the index entries of those states.
    fn each_matching(
        &mut self,
        filter: &TaskFilter,
        catalog: &Catalog,
        applies: fn(TaskState) -> bool,
        mut each: impl FnMut(&mut Self, Vec<u64>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut codes: Vec<u8> = TaskState::ALL
            .into_iter()
            .filter(|&s| applies(s) && (filter.states.is_empty() || filter.states.contains(&s)))
            .map(|s| stored(s).code())
            .collect();
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            let mut after = Some(0);
            while let Some(from) = after {
                let (ids, next) = self.matching(filter, catalog, applies, (code, from))?;
                each(self, ids)?;
                after = next;
            }
        }
        Ok(())
    }

    /// Revokes every task `filter` matches that has not finished; returns what it did, and
    /// the running attempts to ask to stop.
    pub(crate) fn revoke_where(
        &mut self,
        filter: &TaskFilter,
        catalog: &Catalog,
    ) -> Result<(Revoked, Vec<(u64, u32)>), Error> {
        let mut done = Revoked::default();
        let mut running = Vec::new();
        self.each_matching(
            filter,
            catalog,
            |s| !s.is_final(),
            |tx, ids| {
                for id in ids {
                    if let Ok(revoking) = tx.revoke(id)? {
                        match revoking.running {
                            Some(attempt) => {
                                done.cancelling += 1;
                                running.push((id, attempt));
                            }
                            None => done.revoked += 1,
                        }
                    }
                }
                Ok(())
            },
        )?;
        Ok((done, running))
    }

    /// Retries every failed, expired or revoked task `filter` matches; returns how many.
    pub(crate) fn retry_where(
        &mut self,
        filter: &TaskFilter,
        catalog: &Catalog,
    ) -> Result<u64, Error> {
        let mut retried = 0;
        let retryable = |s| {
            matches!(
                s,
                TaskState::Failed | TaskState::Expired | TaskState::Revoked
            )
        };
        self.each_matching(filter, catalog, retryable, |tx, ids| {
            for id in ids {
                if tx.retry_final(id)?.is_ok() {
                    retried += 1;
                }
            }
            Ok(())
        })?;
        Ok(retried)
    }

    /// Removes a finished task's entry in the pruning index.
    fn unprune(&mut self, id: u64, rec: &TaskRecord) -> Result<(), Error> {
        if let (Some(ttl), Some(finished)) = (self.result_ttl_ms(), rec.finished_at_ms)
            && self
                .tables()
                .result_expiry()?
                .remove((finished.saturating_add(ttl), id))?
        {
            return Ok(());
        }
        // Not where this TTL puts it: the file was open with another TTL when the task
        // finished. A scan finds it (rare: only after the TTL changed).
        let mut keys: Vec<(u64, u64)> = Vec::new();
        for entry in self.tables().result_expiry()?.iter().db()? {
            let key = entry.db()?.0.value();
            if key.1 == id {
                keys.push(key);
            }
        }
        for key in keys {
            self.tables().result_expiry()?.remove(key)?;
        }
        Ok(())
    }
}
