//! Periodic schedules on PostgreSQL, fired exactly once across processes: any number of
//! processes may declare the same schedule and try to fire it; a fire of (schedule, fire
//! time) is inserted in the transaction that enqueues its task and advances the schedule,
//! under the schedule row's lock and the primary key of `schedule_fires` — so of processes
//! racing for one fire, one enqueues it and the others change nothing.

use postgres::GenericClient;

use crate::error::Error;
use crate::store::pg::claim::{NewRow, insert};
use crate::store::pg::migrate::{SchemaName, pg};

/// Declares (or updates) schedule `name`: its stored definition and its next fire. A
/// declaration identical to the stored one changes nothing (so every process of a service
/// may declare its schedules at start); a changed one takes the new next fire.
/// Returns whether anything changed.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn declare(
    db: &mut impl GenericClient,
    schema: &SchemaName,
    name: &str,
    record: &[u8],
    next_fire_ms: Option<u64>,
) -> Result<bool, Error> {
    let q = schema.quoted();
    let next = next_fire_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let changed = db
        .execute(
            &format!(
                "INSERT INTO {q}.schedules (name, next_fire_ms, record) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE
                     SET record = EXCLUDED.record, next_fire_ms = EXCLUDED.next_fire_ms
                     WHERE {q}.schedules.record IS DISTINCT FROM EXCLUDED.record"
            ),
            &[&name, &next, &record],
        )
        .map_err(pg("declare a schedule"))?;
    Ok(changed == 1)
}

/// The schedules due at `now_ms`, soonest first, with their next fire and definition. Any
/// number of processes may read and fire them: [`fire`] makes each fire once.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn due(
    db: &mut impl GenericClient,
    schema: &SchemaName,
    now_ms: u64,
) -> Result<Vec<(String, u64, Vec<u8>)>, Error> {
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let rows = db
        .query(
            &format!(
                "SELECT name, next_fire_ms, record FROM {q}.schedules
                 WHERE next_fire_ms <= $1 ORDER BY next_fire_ms, name"
            ),
            &[&now],
        )
        .map_err(pg("read due schedules"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2)))
        .collect())
}

/// Fires `schedule` at `fire_ms`: enqueues `task`, records the fire and advances the
/// schedule to `next_fire_ms`, all in one transaction — unless this fire was already made
/// (by any process) or the schedule has moved on, when nothing changes. Returns the new
/// task's id when this call made the fire.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn fire(
    db: &mut impl GenericClient,
    schema: &SchemaName,
    (schedule, fire_ms): (&str, u64),
    next_fire_ms: Option<u64>,
    task: NewRow,
) -> Result<Option<u64>, Error> {
    let q = schema.quoted();
    let at = i64::try_from(fire_ms).unwrap_or(i64::MAX);
    let next = next_fire_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    let mut tx = db.transaction().map_err(pg("begin a fire"))?;
    // The schedule's lock: processes firing it take turns, and the one that comes second
    // finds the schedule advanced.
    let current = tx
        .query_opt(
            &format!("SELECT next_fire_ms FROM {q}.schedules WHERE name = $1 FOR UPDATE"),
            &[&schedule],
        )
        .map_err(pg("lock a schedule"))?;
    if current.and_then(|r| r.get::<_, Option<i64>>(0)) != Some(at) {
        return Ok(None);
    }
    let id = insert(&mut tx, schema, std::slice::from_ref(&task))?[0];
    let recorded = tx
        .execute(
            &format!(
                "INSERT INTO {q}.schedule_fires (schedule, fire_ms, task) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING"
            ),
            &[&schedule, &at, &(id as i64)],
        )
        .map_err(pg("record a fire"))?;
    if recorded == 0 {
        // Made before (the schedule was set back to a fire time already fired): the task
        // inserted above goes with the rolled-back transaction.
        return Ok(None);
    }
    tx.execute(
        &format!("UPDATE {q}.schedules SET next_fire_ms = $2 WHERE name = $1"),
        &[&schedule, &next],
    )
    .map_err(pg("advance a schedule"))?;
    tx.commit().map_err(pg("commit a fire"))?;
    Ok(Some(id))
}
