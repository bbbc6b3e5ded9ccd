//! The schema's notification channels, as a transaction notifies them (heard when it
//! commits): `wake` (work may be ready), `done` (a task reached its final state, with its
//! events), and the SQL with which a statement notifies lifecycle events on the `events`
//! channel if any process listens (`events` delivers what is heard). The `stop` channel is
//! notified by a revoke (`control`).

use postgres::types::ToSql;

use crate::error::Error;
use crate::model::TaskState;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::Sql;
use crate::store::pg::tally::{Counted, Did};

/// Notifies the wake-up channel (heard when the transaction commits): work may be ready.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn notify_wake(db: &mut impl Sql, schema: &SchemaName) -> Result<(), Error> {
    db.execute("SELECT pg_notify($1, '')", &[&schema.wake_channel()])
        .map_err(pg("notify the wake-up channel"))?;
    Ok(())
}

/// Whose tasks a notification is about, for the metrics' counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Whose<'a> {
    /// Read from the rows, in the notifying statement (a batch of several tasks).
    Rows,
    /// All of this queue and task name (one task whose row the caller has read): counted
    /// here, so the statement stays as small as it can be (a completion's).
    Of(&'a str, &'a str),
}

/// Notifies the `done` channel of each of `ids` (heard when the transaction commits), and
/// their final states' events if anyone listens (`store::pg::events`): call it once they
/// are final (`state`, when the caller knows it: with [`Whose::Of`]).
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn notify_done(
    db: &mut impl Sql,
    schema: &SchemaName,
    ids: &[i64],
    whose: (Whose<'_>, Option<TaskState>),
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let event = task_event(&q, "t", &final_kind("t"), "t.finished_at_ms", true);
    let notify = format!(
        "WITH done AS (
             SELECT pg_notify($1, id::text) FROM unnest($2::int8[]) AS id
         ), told AS (
             SELECT pg_notify($3, {event})
             FROM (SELECT * FROM {q}.tasks WHERE id = ANY($2) ORDER BY id) AS t
             WHERE {listening}
         )",
        listening = listening(&q)
    );
    let params: [&(dyn ToSql + Sync); 3] = [&schema.done_channel(), &ids, &schema.events_channel()];
    let mut counted = Counted::default();
    match whose {
        (Whose::Of(queue, name), Some(state)) => {
            db.execute(
                &format!(
                    "{notify} SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM told)"
                ),
                &params,
            )
            .map_err(pg("notify final states"))?;
            let times = ids.len() as u64;
            counted.add(queue, name, Did::Entered(state, times));
        }
        _ if !db.counts() => {
            db.execute(
                &format!(
                    "{notify} SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM told)"
                ),
                &params,
            )
            .map_err(pg("notify final states"))?;
        }
        _ => {
            // Then the final states per queue and task name, for the metrics.
            let rows = db
                .query(
                    &format!(
                        "{notify}
                         SELECT NULL::text, NULL::text, NULL::int2,
                                (SELECT count(*) FROM done) + (SELECT count(*) FROM told)
                         UNION ALL
                         SELECT queue, name, state, count(*) FROM {q}.tasks
                         WHERE id = ANY($2) GROUP BY queue, name, state"
                    ),
                    &params,
                )
                .map_err(pg("notify final states"))?;
            for row in rows {
                let (queue, name, state): (Option<&str>, Option<&str>, Option<i16>) =
                    (row.get(0), row.get(1), row.get(2));
                if let (Some(queue), Some(name), Some(state)) = (queue, name, state)
                    && let Some(state) = u8::try_from(state).ok().and_then(TaskState::from_code)
                {
                    let times = u64::try_from(row.get::<_, i64>(3)).unwrap_or(0);
                    counted.add(queue, name, Did::Entered(state, times));
                }
            }
        }
    }
    db.count(counted);
    Ok(())
}

/// SQL: whether any process listens for events (one look, evaluated once per statement).
pub(crate) fn listening(q: &str) -> String {
    format!("(SELECT EXISTS (SELECT 1 FROM {q}.event_listeners))")
}

/// SQL: the JSON of the event `kind` about the task row `t` (with columns id, name, queue,
/// attempts) at the time `at` (ms), with its last error if `error`, and its due time.
pub(crate) fn task_event(q: &str, t: &str, kind: &str, at: &str, error: bool) -> String {
    let error = if error {
        format!(
            "(SELECT left(e.message, 4000) FROM {q}.attempt_errors e WHERE e.task = {t}.id
              ORDER BY e.id DESC LIMIT 1)"
        )
    } else {
        "NULL".to_string()
    };
    format!(
        "json_build_object('k', {kind}, 'id', {t}.id, 'name', {t}.name, 'queue', {t}.queue,
                           'attempt', {t}.attempts, 'at', {at}, 'error', {error},
                           'due', {t}.due_at_ms)::text"
    )
}

/// SQL: the kind of a final state's event, from the row `t`'s state.
pub(crate) fn final_kind(t: &str) -> String {
    format!(
        "CASE {t}.state WHEN 4 THEN 'succeeded' WHEN 5 THEN 'failed' WHEN 6 THEN 'revoked'
                        ELSE 'expired' END"
    )
}

/// Notifies, if anyone listens, the event `kind` (`retried`: with its last error, and
/// counted for the metrics as `whose` says) of each task of `ids`, in id order, at
/// `now_ms`.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn tell(
    db: &mut impl Sql,
    schema: &crate::store::pg::migrate::SchemaName,
    (kind, whose): (&str, Whose<'_>),
    ids: &[i64],
    now_ms: u64,
) -> Result<(), crate::error::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let retried = kind == "retried";
    let event = task_event(&q, "t", "$3::text", "$4::int8", retried);
    let told = format!(
        "SELECT pg_notify($1, {event}) FROM (
             SELECT * FROM {q}.tasks WHERE id = ANY($2) ORDER BY id) AS t
         WHERE {listening}",
        listening = listening(&q)
    );
    let params: [&(dyn ToSql + Sync); 4] = [&schema.events_channel(), &ids, &kind, &now];
    let mut counted = Counted::default();
    match whose {
        Whose::Rows if retried && db.counts() => {
            // Then the tasks per queue and name, for the metrics.
            let rows = db
                .query(
                    &format!(
                        "WITH told AS ({told})
                         SELECT NULL::text, NULL::text, (SELECT count(*) FROM told)
                         UNION ALL
                         SELECT queue, name, count(*) FROM {q}.tasks
                         WHERE id = ANY($2) GROUP BY queue, name"
                    ),
                    &params,
                )
                .map_err(pg("notify events"))?;
            for row in rows {
                if let (Some(queue), Some(name)) = (row.get::<_, Option<&str>>(0), row.get(1)) {
                    let times = u64::try_from(row.get::<_, i64>(2)).unwrap_or(0);
                    counted.add(queue, name, Did::Entered(TaskState::Retrying, times));
                }
            }
        }
        _ => {
            db.execute(&told, &params).map_err(pg("notify events"))?;
            if let (Whose::Of(queue, name), true) = (whose, retried) {
                let times = ids.len() as u64;
                counted.add(queue, name, Did::Entered(TaskState::Retrying, times));
            }
        }
    }
    db.count(counted);
    Ok(())
}

/// Notifies, if anyone listens, that schedule `name` fired for `fire_ms` at `now_ms`,
/// enqueueing task `task`.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn tell_fired(
    db: &mut impl Sql,
    schema: &crate::store::pg::migrate::SchemaName,
    name: &str,
    (fire_ms, now_ms): (u64, u64),
    task: u64,
) -> Result<(), crate::error::Error> {
    let q = schema.quoted();
    let as_i64 = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    db.execute(
        &format!(
            "SELECT pg_notify($1, json_build_object('k', 'fired', 'schedule', $2::text,
                                                    'fire', $3::int8, 'at', $4::int8,
                                                    'task', $5::int8)::text)
             WHERE {listening}",
            listening = listening(&q)
        ),
        &[
            &schema.events_channel(),
            &name,
            &as_i64(fire_ms),
            &as_i64(now_ms),
            &(task as i64),
        ],
    )
    .map_err(pg("notify a fire"))?;
    Ok(())
}
