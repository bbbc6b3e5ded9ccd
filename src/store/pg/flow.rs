//! Flow control on PostgreSQL, as it is declared: paused queues, a row each in
//! `paused_queues`, which every process's claims pass over (`claim`) until the queue is
//! resumed; and rate and concurrency limits, a row each in `limits`, which claims hold to
//! (`admit`). A change that may let tasks go — a resume, a limit changed or removed —
//! notifies the wake channel, so every dispatcher claims again at once.

use crate::error::Error;
use crate::flow::{Limit, LimitTarget};
use crate::store::pg::admit::row_limit;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::notify_wake;
use crate::store::pg::sql::Sql;

/// The `limits` key of a target.
fn key(target: &LimitTarget) -> (i16, &str) {
    match target {
        LimitTarget::Task(name) => (0, name.as_str()),
        LimitTarget::Queue(queue) => (1, queue.as_str()),
    }
}

/// Declares (`Some`) or removes (`None`) the limits on `target`; returns whether that
/// changed anything. A changed rate starts over; an unchanged one keeps its state. A
/// changed per-key limit sends every task parked behind the old one back to `ready` (the
/// next claims park again those still over the new one).
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn set_limit(
    db: &mut impl Sql,
    schema: &SchemaName,
    target: &LimitTarget,
    limit: Option<&Limit>,
) -> Result<bool, Error> {
    let q = schema.quoted();
    let (kind, name) = key(target);
    let mut tx = db.transaction().map_err(pg("begin a limit's change"))?;
    let old = tx
        .query_opt(
            &format!(
                "SELECT kind, name, rate_count, rate_per_ms, rate_burst, concurrency, per_key
                 FROM {q}.limits WHERE kind = $1 AND name = $2 FOR UPDATE"
            ),
            &[&kind, &name],
        )
        .map_err(pg("read a limit"))?;
    // A row that no declaration could have written is replaced (or removed) all the same.
    let old = old.as_ref().map(row_limit).and_then(Result::ok);
    let (old_rate, old_concurrency, old_per_key) = old
        .map(|(_, r)| (r.rate, r.concurrency, r.per_key))
        .unwrap_or_default();
    let new = limit.map(|l| (l.rate, l.concurrency, l.per_key));
    let per_key_changed = new.and_then(|n| n.2) != old_per_key;
    match new {
        Some(new) if Some(new) == Some((old_rate, old_concurrency, old_per_key)) => {
            return Ok(false);
        }
        Some((rate, concurrency, per_key)) => {
            let count = rate.map(|r| i64::from(r.count()));
            let per_ms = rate.map(|r| i64::try_from(r.period().as_millis()).unwrap_or(i64::MAX));
            let burst = rate.map(|r| i64::from(r.burst_size()));
            let concurrency = concurrency.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
            let per_key = per_key.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
            tx.execute(
                &format!(
                    "INSERT INTO {q}.limits AS l
                         (kind, name, rate_count, rate_per_ms, rate_burst, concurrency, per_key)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (kind, name) DO UPDATE
                     SET rate_count = $3, rate_per_ms = $4, rate_burst = $5,
                         concurrency = $6, per_key = $7,
                         tat = CASE WHEN (l.rate_count, l.rate_per_ms, l.rate_burst)
                                         IS NOT DISTINCT FROM ($3, $4, $5)
                                    THEN l.tat ELSE 0 END"
                ),
                &[
                    &kind,
                    &name,
                    &count,
                    &per_ms,
                    &burst,
                    &concurrency,
                    &per_key,
                ],
            )
            .map_err(pg("declare a limit"))?;
        }
        None => {
            let removed = tx
                .execute(
                    &format!("DELETE FROM {q}.limits WHERE kind = $1 AND name = $2"),
                    &[&kind, &name],
                )
                .map_err(pg("remove a limit"))?;
            if removed == 0 {
                return Ok(false);
            }
        }
    }
    if per_key_changed && kind == 0 {
        tx.execute(
            &format!("UPDATE {q}.tasks SET parked = false WHERE parked AND name = $1"),
            &[&name],
        )
        .map_err(pg("move parked tasks back"))?;
    }
    notify_wake(&mut tx, schema)?;
    tx.commit().map_err(pg("commit a limit's change"))?;
    Ok(true)
}

/// Every declared limit, task types first, each by name (in byte order, as the file engine
/// lists them).
///
/// # Errors
/// `Storage` on a failure of the server, or for a row no declaration could have written.
pub(crate) fn limits(db: &mut impl Sql, schema: &SchemaName) -> Result<Vec<Limit>, Error> {
    let q = schema.quoted();
    let rows = db
        .query(
            &format!(
                "SELECT kind, name, rate_count, rate_per_ms, rate_burst, concurrency, per_key
                 FROM {q}.limits ORDER BY kind, name COLLATE \"C\""
            ),
            &[],
        )
        .map_err(pg("read the limits"))?;
    rows.iter()
        .map(|r| {
            let (target, rules) = row_limit(r)?;
            let mut limit = match target {
                LimitTarget::Task(name) => Limit::task_named(name),
                LimitTarget::Queue(queue) => Limit::queue(queue),
            };
            limit.rate = rules.rate;
            limit.concurrency = rules.concurrency;
            limit.per_key = rules.per_key;
            Ok(limit)
        })
        .collect()
}

/// Pauses (`paused`) or resumes `queue`; returns whether that changed anything.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn set_paused(
    db: &mut impl Sql,
    schema: &SchemaName,
    queue: &str,
    paused: bool,
) -> Result<bool, Error> {
    let q = schema.quoted();
    let mut tx = db.transaction().map_err(pg("begin a queue's pause"))?;
    let changed = if paused {
        tx.execute(
            &format!("INSERT INTO {q}.paused_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING"),
            &[&queue],
        )
        .map_err(pg("pause a queue"))?
    } else {
        let resumed = tx
            .execute(
                &format!("DELETE FROM {q}.paused_queues WHERE queue = $1"),
                &[&queue],
            )
            .map_err(pg("resume a queue"))?;
        if resumed > 0 {
            notify_wake(&mut tx, schema)?;
        }
        resumed
    };
    tx.commit().map_err(pg("commit a queue's pause"))?;
    Ok(changed > 0)
}

/// The paused queues, by name.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn paused(db: &mut impl Sql, schema: &SchemaName) -> Result<Vec<String>, Error> {
    let q = schema.quoted();
    Ok(db
        .query(
            &format!("SELECT queue FROM {q}.paused_queues ORDER BY queue COLLATE \"C\""),
            &[],
        )
        .map_err(pg("read the paused queues"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
