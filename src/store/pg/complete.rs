//! How an attempt ends on PostgreSQL, and due work: a completion is applied only to the
//! attempt it reports — the task still running that very attempt for that very process — so
//! a late report, or one from a process whose lease was rescued, changes nothing (as the
//! file engine fences a stale completion). A final state is notified on the schema's `done`
//! channel with the task's id, for waiters in any process. Due scheduled and retrying tasks
//! are made ready by whoever promotes them.

use crate::error::Error;
use crate::model::{AttemptErrorKind, TaskState};
use crate::store::pg::claim::NewRow;
use crate::store::pg::follow::ended;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::tell;
use crate::store::pg::notify::{Whose, notify_done, notify_wake};
use crate::store::pg::sql::Sql;
use crate::store::pg::tally::{Counted, Did};
use crate::store::pg::unique::insert_new;

/// How an attempt ended, as the engine decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// It succeeded with this JSON output; the tasks its handler enqueued through its
    /// context are stored with the success, in its transaction (and dropped with any other
    /// end, as on the file engine).
    Succeeded {
        output: Vec<u8>,
        follow_ups: Vec<NewRow>,
    },
    /// It failed: retried at `retry_at_ms` if the task has an attempt left (and a retry was
    /// decided), else the task fails for good.
    Failed {
        kind: AttemptErrorKind,
        message: String,
        retry_at_ms: Option<u64>,
    },
    /// It asked to run again at `at_ms` without using up a retry (`TaskError::snooze`);
    /// `message` is its history entry.
    Snoozed { at_ms: u64, message: String },
}

/// An attempt's report: how it ended, the handler's latest progress (JSON) if it reported
/// any, and what it returned in a few words (for the history entry of a revoke that
/// discards it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Report<'a> {
    pub(crate) ending: &'a Ending,
    pub(crate) progress: Option<&'a [u8]>,
    pub(crate) returned: &'a str,
    /// How long the attempt ran, in µs (for the metrics).
    pub(crate) run_us: u64,
}

impl<'a> Report<'a> {
    /// A report of `ending` with no progress, which returned what `ending` says.
    #[cfg(test)]
    pub(crate) fn of(ending: &'a Ending) -> Report<'a> {
        Report {
            ending,
            progress: None,
            returned: match ending {
                Ending::Succeeded { .. } => "a success",
                _ => "a failure",
            },
            run_us: 0,
        }
    }
}

/// Ends attempt `attempt` of task `id`, run by process `owner`, at `now_ms`, as `report`
/// says, in a transaction of its own. Returns the task's new state, or `None` when the
/// report is not of the task's current attempt in this process (discarded, changing
/// nothing).
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn complete(
    db: &mut impl Sql,
    schema: &SchemaName,
    attempt: (u64, u32, u64),
    now_ms: u64,
    report: Report<'_>,
) -> Result<Option<TaskState>, Error> {
    let mut tx = db.transaction().map_err(pg("begin a completion"))?;
    let state = complete_in(&mut tx, schema, attempt, now_ms, report)?;
    tx.commit().map_err(pg("commit a completion"))?;
    Ok(state)
}

/// As [`complete`], in the caller's transaction (a group of completions shares one
/// commit, `store::pg::completer`); rows it locks stay locked until that commits.
///
/// # Errors
/// `Storage` on a failure of the server (the caller's transaction is then to be dropped).
pub(crate) fn complete_in(
    tx: &mut impl Sql,
    schema: &SchemaName,
    (id, attempt, owner): (u64, u32, u64),
    now_ms: u64,
    report: Report<'_>,
) -> Result<Option<TaskState>, Error> {
    let Report {
        ending,
        progress,
        returned,
        run_us,
    } = report;
    let q = schema.quoted();
    let running = i16::from(TaskState::Running.code());
    let id = id as i64;
    let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
    let owner = owner as i64;
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    // The fence: only the current attempt, of this process, may end.
    let current = tx
        .query_opt(
            &format!(
                "SELECT attempts, max_retries, revoke_requested, follows, limited, queue, name
                 FROM {q}.tasks
                 WHERE id = $1 AND state = {running} AND attempts = $2 AND owner = $3
                 FOR UPDATE"
            ),
            &[&id, &attempt, &owner],
        )
        .map_err(pg("read the running attempt"))?;
    let Some(current) = current else {
        return Ok(None);
    };
    let (attempts, max_retries, revoke_requested, follows, limited): (i32, i32, bool, bool, bool) = (
        current.get(0),
        current.get(1),
        current.get(2),
        current.get(3),
        current.get(4),
    );
    let whose = Whose::Of(current.get(5), current.get(6));
    if let Some(progress) = progress {
        tx.execute(
            &format!("UPDATE {q}.tasks SET progress = $2 WHERE id = $1"),
            &[&id, &progress],
        )
        .map_err(pg("keep an attempt's progress"))?;
    }
    let state = match ending {
        // Revoked while it ran: whatever the attempt returned, the task ends here.
        _ if revoke_requested => {
            let message = format!(
                "revoked while attempt {attempt} ran; what it returned ({returned}) was discarded"
            );
            let revoked = TaskState::Revoked;
            end(
                tx,
                schema,
                (id, whose),
                (attempt, now),
                revoked,
                AttemptErrorKind::Revoked,
                &message,
            )?;
            revoked
        }
        Ending::Succeeded { output, follow_ups } => {
            if !follow_ups.is_empty() {
                insert_new(tx, schema, follow_ups, now_ms)?;
            }
            tx.execute(
                &format!(
                    "UPDATE {q}.tasks SET state = {succeeded}, owner = NULL, output = $2,
                         payload = NULL, finished_at_ms = $3
                     WHERE id = $1",
                    succeeded = TaskState::Succeeded.code()
                ),
                &[&id, output, &now],
            )
            .map_err(pg("store a success"))?;
            notify_done(tx, schema, &[id], (whose, Some(TaskState::Succeeded)))?;
            TaskState::Succeeded
        }
        Ending::Failed {
            kind,
            message,
            retry_at_ms,
        } => match retry_at_ms {
            Some(at) if attempts <= max_retries => {
                record_error(tx, schema, id, (attempt, now), *kind, message)?;
                run_again(tx, schema, (id, whose), (*at, now_ms), TaskState::Retrying)?
            }
            _ => {
                let failed = TaskState::Failed;
                end(
                    tx,
                    schema,
                    (id, whose),
                    (attempt, now),
                    failed,
                    *kind,
                    message,
                )?;
                failed
            }
        },
        Ending::Snoozed { at_ms, message } => {
            let snoozed = AttemptErrorKind::Snoozed;
            record_error(tx, schema, id, (attempt, now), snoozed, message)?;
            run_again(
                tx,
                schema,
                (id, whose),
                (*at_ms, now_ms),
                TaskState::Scheduled,
            )?
        }
    };
    if let (true, Whose::Of(queue, name)) = (tx.counts(), whose) {
        let mut counted = Counted::default();
        counted.add(queue, name, Did::Ran(run_us));
        tx.count(counted);
    }
    if follows && state.is_final() {
        ended(tx, schema, &[id], now_ms)?;
    }
    if limited {
        // A slot of a concurrency limit is free: any process may claim under it now.
        notify_wake(tx, schema)?;
    }
    Ok(Some(state))
}

/// Makes task `id` wait in `state` until `at_ms` — `Retrying` after a failed attempt, or
/// `Scheduled` after a snooze, which also allows one more attempt (a snooze uses none of the
/// retries) — and tells every dispatcher the new due time. Returns `state`.
fn run_again(
    tx: &mut impl Sql,
    schema: &SchemaName,
    (id, whose): (i64, Whose<'_>),
    (at_ms, now_ms): (u64, u64),
    state: TaskState,
) -> Result<TaskState, Error> {
    let q = schema.quoted();
    let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
    let extra = if state == TaskState::Scheduled {
        ", max_retries = max_retries + 1"
    } else {
        ""
    };
    tx.execute(
        &format!(
            "UPDATE {q}.tasks SET state = {}, owner = NULL, due_at_ms = $2{extra}
             WHERE id = $1",
            state.code()
        ),
        &[&id, &at],
    )
    .map_err(pg("schedule a task to run again"))?;
    if state == TaskState::Retrying {
        tell(tx, schema, ("retried", whose), &[id], now_ms)?;
    }
    notify_wake(tx, schema)?;
    Ok(state)
}

/// Adds an error of `kind` for `attempt` of task `id`, at `now`, to its history.
fn record_error(
    db: &mut impl Sql,
    schema: &SchemaName,
    id: i64,
    (attempt, now): (i32, i64),
    kind: AttemptErrorKind,
    message: &str,
) -> Result<(), Error> {
    let q = schema.quoted();
    db.execute(
        &format!(
            "INSERT INTO {q}.attempt_errors (task, attempt, at_ms, kind, message)
             VALUES ($1, $2, $3, $4, $5)"
        ),
        &[&id, &attempt, &now, &i16::from(kind.code()), &message],
    )
    .map_err(pg("record an attempt's error"))?;
    Ok(())
}

/// Ends task `id` in the final `state` with an error of `kind` for `attempt`, at `now`; its
/// `done` is notified with the transaction. The caller follows up its end
/// (`follow::ended`) if the task is marked `follows`.
pub(super) fn end(
    db: &mut impl Sql,
    schema: &SchemaName,
    (id, whose): (i64, Whose<'_>),
    (attempt, now): (i32, i64),
    state: TaskState,
    kind: AttemptErrorKind,
    message: &str,
) -> Result<(), Error> {
    let q = schema.quoted();
    record_error(db, schema, id, (attempt, now), kind, message)?;
    db.execute(
        &format!(
            "UPDATE {q}.tasks SET state = {state}, owner = NULL, output = NULL,
                 revoke_requested = false, finished_at_ms = $2
             WHERE id = $1",
            state = state.code()
        ),
        &[&id, &now],
    )
    .map_err(pg("end a task"))?;
    notify_done(db, schema, &[id], (whose, Some(state)))
}

/// Makes every scheduled or retrying task due at `now_ms` ready; returns how many, and the
/// next due time after them (for the wake-up's timeout). Notifies the wake-up channel when
/// any became ready.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn promote_due(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
) -> Result<(u64, Option<u64>), Error> {
    let q = schema.quoted();
    let due = format!(
        "state IN ({}, {})",
        TaskState::Scheduled.code(),
        TaskState::Retrying.code()
    );
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = db.transaction().map_err(pg("begin a promotion"))?;
    let promoted = tx
        .execute(
            &format!(
                "UPDATE {q}.tasks SET state = {ready} WHERE {due} AND due_at_ms <= $1",
                ready = TaskState::Ready.code()
            ),
            &[&now],
        )
        .map_err(pg("promote due tasks"))?;
    let next: Option<i64> = tx
        .query_one(
            &format!("SELECT min(due_at_ms) FROM {q}.tasks WHERE {due}"),
            &[],
        )
        .map_err(pg("read the next due time"))?
        .get(0);
    if promoted > 0 {
        notify_wake(&mut tx, schema)?;
    }
    tx.commit().map_err(pg("commit a promotion"))?;
    Ok((promoted, next.map(|ms| ms as u64)))
}

/// A task's state and, once it succeeded, its output.
#[cfg(test)]
pub(crate) type Outcome = (TaskState, Option<Vec<u8>>);

/// A task's state and, once it succeeded, its output; `None` for an unknown id.
///
/// # Errors
/// `Storage` on a failure of the server.
#[cfg(test)]
pub(crate) fn result(
    db: &mut impl Sql,
    schema: &SchemaName,
    id: u64,
) -> Result<Option<Outcome>, Error> {
    let q = schema.quoted();
    let row = db
        .query_opt(
            &format!("SELECT state, output FROM {q}.tasks WHERE id = $1"),
            &[&(id as i64)],
        )
        .map_err(pg("read a result"))?;
    Ok(row.and_then(|r| {
        let code = u8::try_from(r.get::<_, i16>(0)).ok()?;
        Some((TaskState::from_code(code)?, r.get(1)))
    }))
}

/// Ends every task that has not started and whose expiry has passed at `now_ms` as
/// `Expired`, with the reason in its history; returns them, and the next expiry after them
/// (for the wake-up's timeout).
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn expire_due(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
) -> Result<(Vec<u64>, Option<u64>), Error> {
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let waiting = format!(
        "state IN ({}, {}, {})",
        TaskState::Scheduled.code(),
        TaskState::Ready.code(),
        TaskState::Retrying.code()
    );
    let mut tx = db.transaction().map_err(pg("begin an expiry"))?;
    let gone = tx
        .query(
            &format!(
                "UPDATE {q}.tasks SET state = {expired}, finished_at_ms = $1
                 WHERE {waiting} AND expires_at_ms <= $1
                 RETURNING id, attempts, expires_at_ms",
                expired = TaskState::Expired.code()
            ),
            &[&now],
        )
        .map_err(pg("expire tasks"))?;
    let ids: Vec<i64> = gone.iter().map(|r| r.get(0)).collect();
    if !ids.is_empty() {
        let attempts: Vec<i32> = gone.iter().map(|r| r.get(1)).collect();
        let messages: Vec<String> = gone
            .iter()
            .map(|r| {
                let at = r.get::<_, i64>(2) as u64;
                format!(
                    "expired at {} before it started",
                    crate::clock::rfc3339_ms(at)
                )
            })
            .collect();
        tx.execute(
            &format!(
                "INSERT INTO {q}.attempt_errors (task, attempt, at_ms, kind, message)
                 SELECT id, attempt, $4, $5, message
                 FROM unnest($1::int8[], $2::int4[], $3::text[]) AS e(id, attempt, message)"
            ),
            &[
                &ids,
                &attempts,
                &messages,
                &now,
                &i16::from(AttemptErrorKind::Expired.code()),
            ],
        )
        .map_err(pg("record expiries"))?;
        notify_done(&mut tx, schema, &ids, (Whose::Rows, None))?;
        ended(&mut tx, schema, &ids, now_ms)?;
    }
    let next: Option<i64> = tx
        .query_one(
            &format!("SELECT min(expires_at_ms) FROM {q}.tasks WHERE {waiting}"),
            &[],
        )
        .map_err(pg("read the next expiry"))?
        .get(0);
    tx.commit().map_err(pg("commit an expiry"))?;
    Ok((
        ids.into_iter().map(|id| id as u64).collect(),
        next.map(|ms| ms as u64),
    ))
}

/// The most finished tasks one [`prune_due`] deletes (the next one goes on at once).
const PRUNE_BATCH: i64 = 10_000;

/// Deletes up to [`PRUNE_BATCH`] tasks that finished `ttl_ms` or longer before `now_ms`,
/// with their errors (the results TTL); returns when the next one is due: `now_ms` again if
/// the batch was full, else the oldest remaining finish plus the TTL, and never before
/// `now_ms + 1` (`now_ms + ttl_ms` when nothing is finished: whatever finishes later is due
/// later).
///
/// A workflow's task is kept while its workflow has tasks left, and a TTL past the
/// workflow's end; a task whose output a step or callback still has to read is kept until
/// that one has ended (as on the file engine). The workflow's row goes with its first task.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn prune_due(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<u64, Error> {
    let q = schema.quoted();
    let finished = "t.state IN (4, 5, 6, 7)";
    // Whether nothing keeps task `t` past its own TTL (its workflow ended `$1` or earlier).
    let free = format!(
        "(t.workflow IS NULL OR NOT EXISTS (
              SELECT 1 FROM {q}.workflows w
              WHERE w.base = t.workflow AND (w.left_count > 0 OR w.ended_at_ms > $1)))
         AND (t.children IS NULL OR NOT EXISTS (
              SELECT 1 FROM {q}.tasks c
              WHERE c.id = ANY(t.children) AND c.state NOT IN (4, 5, 6, 7)))"
    );
    let before = i64::try_from(now_ms.saturating_sub(ttl_ms)).unwrap_or(i64::MAX);
    let pruned: i64 = db
        .query_one(
            &format!(
                "WITH gone AS (
                     DELETE FROM {q}.tasks WHERE id IN (
                         SELECT t.id FROM {q}.tasks t
                         WHERE {finished} AND t.finished_at_ms <= $1 AND {free}
                         ORDER BY t.finished_at_ms LIMIT $2)
                     RETURNING id),
                 rows AS (DELETE FROM {q}.workflows WHERE base IN (SELECT id FROM gone))
                 SELECT count(*) FROM gone"
            ),
            &[&before, &PRUNE_BATCH],
        )
        .map_err(pg("delete finished tasks past the results TTL"))?
        .get(0);
    if pruned >= PRUNE_BATCH {
        return Ok(now_ms);
    }
    // The oldest finish of a task nothing keeps now (one a workflow keeps is due no earlier
    // than its workflow's end, which comes later than now).
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let oldest: Option<i64> = db
        .query_opt(
            &format!(
                "SELECT t.finished_at_ms FROM {q}.tasks t
                 WHERE {finished} AND {free}
                 ORDER BY t.finished_at_ms LIMIT 1"
            ),
            &[&now],
        )
        .map_err(pg("read the oldest finish"))?
        .map(|r| r.get(0));
    let oldest = oldest.map_or(now_ms, |ms| u64::try_from(ms).unwrap_or(0));
    Ok(oldest.saturating_add(ttl_ms).max(now_ms.saturating_add(1)))
}
