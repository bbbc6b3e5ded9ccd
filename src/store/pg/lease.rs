//! Who owns an attempt on PostgreSQL, where no file lock says that the last owner is gone: a
//! process holds a lease (a `processes` row) that its heartbeat keeps alive; any process may
//! rescue the attempts of a process whose lease expired. Leases are timed on the server's
//! clock (`now()`), the one clock every machine sharing the database reads alike; a long
//! task is never rescued while its process heartbeats.
//!
//! A rescued attempt that had started counts as lost (a `WorkerLost` error; the task runs
//! again at once, or ends `Failed` when it was its last allowed attempt), as after a crash of
//! the file engine's owner; one only claimed (its start never noted) is given back uncounted.

use std::time::Duration;

use crate::error::Error;
use crate::model::{AttemptErrorKind, TaskState};
use crate::store::pg::follow::ended;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::tell;
use crate::store::pg::notify::{Whose, notify_done, notify_wake};
use crate::store::pg::sql::Sql;

/// Registers this process with a lease of `lease`; returns its id.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn register_process(
    db: &mut impl Sql,
    schema: &SchemaName,
    lease: Duration,
) -> Result<u64, Error> {
    let q = schema.quoted();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let pid = i32::try_from(std::process::id()).unwrap_or(0);
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let row = db
        .query_one(
            &format!(
                "INSERT INTO {q}.processes (host, pid, lease_ms) VALUES ($1, $2, $3) \
                 RETURNING id"
            ),
            &[&host, &pid, &lease_ms],
        )
        .map_err(pg("register the process"))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Renews `process`'s lease; `false` if it is gone — rescued as dead by another process,
/// whose rescue then owns its attempts: this process must stop reporting them.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn heartbeat(
    db: &mut impl Sql,
    schema: &SchemaName,
    process: u64,
) -> Result<bool, Error> {
    let q = schema.quoted();
    let id = i64::try_from(process).unwrap_or(i64::MAX);
    let renewed = db
        .execute(
            &format!("UPDATE {q}.processes SET heartbeat_at = now() WHERE id = $1"),
            &[&id],
        )
        .map_err(pg("renew the lease"))?;
    Ok(renewed == 1)
}

/// Notes that these claimed attempts (task id, attempt) are starting, at `now_ms`.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn note_started(
    db: &mut impl Sql,
    schema: &SchemaName,
    attempts: &[(u64, u32)],
    now_ms: u64,
) -> Result<(), Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let list = |values: Vec<String>| values.join(",");
    let ids = list(attempts.iter().map(|&(id, _)| id.to_string()).collect());
    let numbers = list(attempts.iter().map(|&(_, a)| a.to_string()).collect());
    // One round trip, and no wait for the server's sync: the values are numbers, written
    // into the statement. A note lost to a crash of the server (not of this process) only
    // gives the attempt back uncounted; the completion's synchronous commit makes it
    // durable with everything before it.
    db.batch_execute(&format!(
        "BEGIN; SET LOCAL synchronous_commit TO OFF;
         UPDATE {q}.tasks AS t SET started_at_ms = {now_ms}
         FROM unnest('{{{ids}}}'::int8[], '{{{numbers}}}'::int4[]) AS a(id, attempt)
         WHERE t.id = a.id AND t.attempts = a.attempt AND t.state = {running};
         COMMIT",
        running = TaskState::Running.code()
    ))
    .map_err(pg("note attempt starts"))?;
    Ok(())
}

/// What a rescue did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Rescued {
    /// Processes whose lease had expired, now removed.
    pub(crate) processes: Vec<u64>,
    /// Tasks whose started attempt was lost, ready again.
    pub(crate) retried: Vec<u64>,
    /// Tasks whose lost attempt was their last allowed one, now failed.
    pub(crate) failed: Vec<u64>,
    /// Tasks revoked while their lost attempt ran, now revoked.
    pub(crate) revoked: Vec<u64>,
    /// Tasks only claimed, given back uncounted.
    pub(crate) given_back: Vec<u64>,
}

/// Rescues the attempts of every process whose lease has expired, in one transaction: the
/// expired processes are locked (`SKIP LOCKED`: two rescuers never rescue one process twice)
/// and removed, and their running tasks requeued, failed or given back.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn rescue_expired(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
) -> Result<Rescued, Error> {
    rescue(db, schema, now_ms, None)
}

/// Rescues the attempts of process `process` itself, which is closing: what it still runs
/// can never be reported by it (its handlers may go on, as after a crash), so its tasks run
/// again now, each lost attempt counted, rather than a lease later; then its row goes.
///
/// # Errors
/// As [`rescue_expired`].
pub(crate) fn rescue_own(
    db: &mut impl Sql,
    schema: &SchemaName,
    process: u64,
    now_ms: u64,
) -> Result<Rescued, Error> {
    rescue(db, schema, now_ms, Some(process))
}

/// The rescue of the expired processes (`None`) or of one process.
fn rescue(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
    process: Option<u64>,
) -> Result<Rescued, Error> {
    let q = schema.quoted();
    let running = i16::from(TaskState::Running.code());
    let ready = i16::from(TaskState::Ready.code());
    let failed = i16::from(TaskState::Failed.code());
    let revoked = i16::from(TaskState::Revoked.code());
    let lost = i16::from(AttemptErrorKind::WorkerLost.code());
    let revoked_kind = i16::from(AttemptErrorKind::Revoked.code());
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = db.transaction().map_err(pg("begin a rescue"))?;
    let processes: Vec<i64> = tx
        .query(
            &format!(
                "SELECT id FROM {q}.processes
                 WHERE CASE WHEN $1::int8 IS NULL
                            THEN heartbeat_at < now() - lease_ms * interval '1 millisecond'
                            ELSE id = $1 END
                 FOR UPDATE SKIP LOCKED"
            ),
            &[&process.map(|p| p as i64)],
        )
        .map_err(pg("find expired leases"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rescued = Rescued {
        processes: processes.iter().map(|&id| id as u64).collect(),
        ..Rescued::default()
    };
    if processes.is_empty() {
        return Ok(rescued);
    }
    // Claimed, never started: the attempt goes back uncounted (unless a revoke waits for it
    // to end).
    rescued.given_back = ids(tx
        .query(
            &format!(
                "UPDATE {q}.tasks SET state = {ready}, owner = NULL, attempts = attempts - 1
                 WHERE owner = ANY($1) AND state = {running} AND started_at_ms IS NULL
                     AND NOT revoke_requested
                 RETURNING id"
            ),
            &[&processes],
        )
        .map_err(pg("give back unstarted attempts"))?);
    // Started: a lost attempt, recorded; the task runs again or has failed for good — or,
    // revoked while it ran, ends revoked.
    let lost_message = "worker lost: the process running the attempt stopped renewing its lease";
    let revoked_message = "revoked while the attempt ran; the process running it stopped \
                           renewing its lease before it returned";
    tx.execute(
        &format!(
            "INSERT INTO {q}.attempt_errors (task, attempt, at_ms, kind, message)
             SELECT id, attempts, $2,
                    CASE WHEN revoke_requested THEN {revoked_kind} ELSE {lost} END,
                    CASE WHEN revoke_requested THEN $4 ELSE $3 END
             FROM {q}.tasks
             WHERE owner = ANY($1) AND state = {running}
             ORDER BY id"
        ),
        &[&processes, &now, &lost_message, &revoked_message],
    )
    .map_err(pg("record lost attempts"))?;
    let requeued = tx
        .query(
            &format!(
                "UPDATE {q}.tasks
                 SET owner = NULL, revoke_requested = false,
                     state = CASE WHEN revoke_requested THEN {revoked}
                                  WHEN attempts <= max_retries THEN {ready}
                                  ELSE {failed} END,
                     finished_at_ms = CASE WHEN attempts <= max_retries
                                               AND NOT revoke_requested THEN NULL
                                           ELSE $2::int8 END
                 WHERE owner = ANY($1) AND state = {running}
                 RETURNING id, state"
            ),
            &[&processes, &now],
        )
        .map_err(pg("requeue lost attempts"))?;
    for row in &requeued {
        let id = row.get::<_, i64>(0) as u64;
        match row.get::<_, i16>(1) {
            s if s == ready => rescued.retried.push(id),
            s if s == revoked => rescued.revoked.push(id),
            _ => rescued.failed.push(id),
        }
    }
    let finals: Vec<i64> = rescued
        .failed
        .iter()
        .chain(&rescued.revoked)
        .map(|&id| id as i64)
        .collect();
    notify_done(&mut tx, schema, &finals, (Whose::Rows, None))?;
    let retried: Vec<i64> = rescued.retried.iter().map(|&id| id as i64).collect();
    tell(&mut tx, schema, ("retried", Whose::Rows), &retried, now_ms)?;
    ended(&mut tx, schema, &finals, now_ms)?;
    if !requeued.is_empty() || !rescued.given_back.is_empty() {
        // Ready again, or slots of a concurrency limit freed: every process's dispatcher
        // may claim.
        notify_wake(&mut tx, schema)?;
    }
    // The chords they were storing in parts, not sealed: nothing of them is left.
    tx.execute(
        &format!(
            "DELETE FROM {q}.tasks WHERE workflow IN (
                 SELECT base FROM {q}.open_chords WHERE process = ANY($1))"
        ),
        &[&processes],
    )
    .map_err(pg("delete the unsealed chords of expired processes"))?;
    tx.execute(
        &format!("DELETE FROM {q}.processes WHERE id = ANY($1)"),
        &[&processes],
    )
    .map_err(pg("remove expired processes"))?;
    tx.commit().map_err(pg("commit a rescue"))?;
    for list in [
        &mut rescued.retried,
        &mut rescued.failed,
        &mut rescued.revoked,
        &mut rescued.given_back,
    ] {
        list.sort_unstable();
    }
    Ok(rescued)
}

fn ids(rows: Vec<postgres::Row>) -> Vec<u64> {
    rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect()
}
