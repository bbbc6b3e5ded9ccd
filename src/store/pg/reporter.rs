//! How a pool's attempts reach the PostgreSQL engine: start notes, completions (fenced,
//! and decided as the file engine decides them) and hand-backs, each followed by a freed
//! slot for the dispatcher.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::duration_ms;
use crate::error::Error;
use crate::model::{AttemptErrorKind, Disposition, Outcome, PoolId, TaskId, snooze_entry};
use crate::store::pg::complete::Ending;
use crate::store::pg::completer::Done;
use crate::store::pg::lease::note_started;
use crate::store::pg::migrate::pg;
use crate::store::pg::record::{PgRecord, new_row};
use crate::store::pg::sql::Sql;
use crate::store::pg::state::{Event, Inner};
use crate::store::verbs::{Completion, Reporter, ThreadSlot};

/// How a pool's attempts reach the engine.
pub(super) struct PgReporter {
    pub(super) inner: Arc<Inner>,
}

impl Reporter for PgReporter {
    fn join(&self) -> ThreadSlot {
        ThreadSlot {
            place: 0,
            started: 0,
        }
    }

    fn leave(&self, _slot: ThreadSlot) {}

    fn starting(&self, _slot: &mut ThreadSlot, id: TaskId, attempt: u32) {
        let now = self.inner.clock.now_ms();
        let noted = self
            .inner
            .with_db(|db| note_started(db, &self.inner.schema, &[(id.0, attempt)], now));
        if let Err(e) = noted {
            tracing::warn!(error = %e, "could not note an attempt's start");
        }
    }

    fn complete(&self, pool: Option<PoolId>, c: Completion) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.inner.reported(c.id.0, c.attempt);
        let run_us = c.run_us;
        let now = self.inner.clock.now_ms();
        let ending = self.ending(&c, now)?;
        let done = Done {
            attempt: (c.id.0, c.attempt, self.inner.process()),
            now_ms: now,
            ending,
            progress: c.progress,
            returned: c.outcome.describe(),
            run_us,
        };
        self.report(done)?;
        if let Some(pool) = pool {
            let _ = self
                .inner
                .to_dispatcher
                .send(Event::Freed(pool, Some(run_us)));
        }
        Ok(())
    }

    fn release(&self, pool: PoolId, id: TaskId, attempt: u32) -> Result<(), Error> {
        self.inner.reported(id.0, attempt);
        let q = self.inner.schema.quoted();
        // One claimed under a concurrency limit frees a slot of it: every process is woken.
        let sql = format!(
            "WITH back AS (
                 UPDATE {q}.tasks SET state = 1, owner = NULL, attempts = attempts - 1
                 WHERE id = $1 AND attempts = $2 AND owner = $3 AND state = 2
                 RETURNING limited
             )
             SELECT pg_notify($4, '') FROM back WHERE limited"
        );
        let (id64, attempt32, owner) = (id.0 as i64, attempt as i32, self.inner.process() as i64);
        let channel = self.inner.schema.wake_channel();
        self.inner.with_db(|db| {
            db.execute(&sql, &[&id64, &attempt32, &owner, &channel])
                .map_err(pg("hand back an attempt"))
        })?;
        let _ = self.inner.to_dispatcher.send(Event::Freed(pool, None));
        Ok(())
    }

    /// Kept in the task's row while the attempt runs (fenced to it), for `status` in any
    /// process; a failure to write it is logged and the attempt goes on.
    fn progress(&self, id: TaskId, attempt: u32, json: Vec<u8>) {
        let q = self.inner.schema.quoted();
        let written = self.inner.db().execute(
            &format!(
                "UPDATE {q}.tasks SET progress = $3
                 WHERE id = $1 AND attempts = $2 AND owner = $4 AND state = 2"
            ),
            &[
                &(id.0 as i64),
                &(attempt as i32),
                &json,
                &(self.inner.process() as i64),
            ],
        );
        if let Err(e) = written {
            tracing::warn!(error = %e, task = %id, "could not keep an attempt's progress");
        }
    }
}

impl PgReporter {
    /// Applies `done`, fenced to its attempt (applied twice — the first commit's answer lost
    /// with its connection — the second changes nothing). While the server cannot be
    /// reached it tries again, backing off to every 2 s, until it can or the spool closes:
    /// the thread has nothing else to do, and giving up would leave the task running here
    /// for good. A report the server refuses for its data (a NUL in an error message, say:
    /// [`refused`]) is replaced by a failure of the attempt for good, saying why, as a
    /// follow-up this engine cannot encode is.
    ///
    /// # Errors
    /// `Closed` once the spool closes; `Storage` if the server refuses the failure too.
    fn report(&self, mut done: Done) -> Result<(), Error> {
        let mut pause = Duration::from_millis(50);
        let mut replaced = false;
        loop {
            let e = match self.inner.completer.complete(done.clone()) {
                Ok(_) => return Ok(()),
                Err(Error::Closed) => return Err(Error::Closed),
                Err(e) if self.inner.closed.load(Ordering::SeqCst) => return Err(e),
                Err(e) => e,
            };
            if refused(&e) {
                if replaced {
                    return Err(e);
                }
                tracing::error!(error = %e, task = done.attempt.0, "PostgreSQL refused an attempt's report; the attempt fails instead");
                done.ending = Ending::Failed {
                    kind: AttemptErrorKind::Fatal,
                    message: format!("the attempt's report could not be stored: {e}"),
                    retry_at_ms: None,
                };
                done.progress = None;
                replaced = true;
                continue;
            }
            tracing::warn!(error = %e, task = done.attempt.0, "could not report an attempt; trying again in {pause:?}");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// What the attempt's outcome means for the task, as the file engine decides it
    /// (`Outcome::failure`, `Disposition::retry_delay_ms`), with the backoff of the task's
    /// stored retry policy.
    fn ending(&self, c: &Completion, now: u64) -> Result<Ending, Error> {
        let Some((kind, message, disposition)) = c.outcome.failure(c.past_soft_limit) else {
            let output = match &c.outcome {
                Outcome::Succeeded(output) => output.clone(),
                _ => Vec::new(),
            };
            let follow_ups: Result<Vec<_>, Error> =
                c.follow_ups.iter().map(|t| new_row(t, now)).collect();
            return Ok(match follow_ups {
                Ok(follow_ups) => Ending::Succeeded { output, follow_ups },
                // A follow-up this engine cannot store fails the attempt, for good and
                // saying why, rather than dropping the follow-up or the report.
                Err(e) => Ending::Failed {
                    kind: AttemptErrorKind::Fatal,
                    message: format!("the task's follow-up could not be stored: {e}"),
                    retry_at_ms: None,
                },
            });
        };
        let q = self.inner.schema.quoted();
        let sql = format!("SELECT record FROM {q}.tasks WHERE id = $1");
        let row = self.inner.with_db(|db| {
            db.query_one(&sql, &[&(c.id.0 as i64)])
                .map_err(pg("read a task's retry policy"))
        })?;
        let policy = PgRecord::decode(row.get(0))?.retry;
        if let Disposition::Snooze(delay) = disposition {
            return Ok(match snooze_entry(delay, message) {
                Ok(entry) => Ending::Snoozed {
                    at_ms: now.saturating_add(duration_ms(delay)),
                    message: entry,
                },
                Err(why) => Ending::Failed {
                    kind: AttemptErrorKind::Error,
                    message: why,
                    retry_at_ms: Some(now.saturating_add(policy.delay_ms(c.attempt))),
                },
            });
        }
        let delay = disposition.retry_delay_ms(|| policy.delay_ms(c.attempt));
        Ok(Ending::Failed {
            kind,
            message: message.to_string(),
            retry_at_ms: delay.map(|d| now.saturating_add(d)),
        })
    }
}

/// Whether the server refused a statement for what it holds, so that running it again
/// would be refused again: a data exception (a NUL in a text, say), an integrity
/// constraint, a statement error or a program limit (SQLSTATE classes 22, 23, 42, 54).
/// Anything else — out of reach, shutting down, a deadlock, a lock or resource shortage —
/// may pass when tried again.
fn refused(e: &Error) -> bool {
    match e {
        Error::Storage {
            source: Some(source),
            ..
        } => source
            .downcast_ref::<postgres::Error>()
            .and_then(postgres::Error::as_db_error)
            .is_some_and(|db| {
                let class = db.code().code().get(..2).unwrap_or_default();
                matches!(class, "22" | "23" | "42" | "54")
            }),
        _ => false,
    }
}
