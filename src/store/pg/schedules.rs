//! Periodic schedules on PostgreSQL, fired exactly once across processes. A schedule is the
//! file engine's `ScheduleRecord` (definition, next and last fire, pause) in `record`, its
//! next fire also a column to find what is due. Any number of processes may declare the
//! same schedule (an identical declaration changes nothing; the rules for a changed one
//! are the file engine's) and fire what is due: a firing process locks the due schedules
//! (`SKIP LOCKED`: another process fires the others meanwhile), and in one transaction
//! enqueues each fire its misfire policy runs, records it in `schedule_fires` (primary key
//! (schedule, fire time): a fire made once is never made again) and advances the schedule.

use std::sync::Arc;

use crate::error::Error;
use crate::model::Origin;
use crate::schedule::{ScheduleDef, due_fires};
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::notify::tell_fired;
use crate::store::pg::record::new_row;
use crate::store::pg::sql::Sql;
use crate::store::pg::unique::insert_new;
use crate::store::schedules::ScheduleRecord;
use crate::store::verbs::NewTask;

fn ms(v: Option<u64>) -> Option<i64> {
    v.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Stores `record` as schedule `name`'s.
fn put(
    db: &mut impl Sql,
    schema: &SchemaName,
    name: &str,
    record: &ScheduleRecord,
) -> Result<(), Error> {
    let q = schema.quoted();
    db.execute(
        &format!(
            "INSERT INTO {q}.schedules (name, next_fire_ms, record) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET next_fire_ms = EXCLUDED.next_fire_ms, record = EXCLUDED.record"
        ),
        &[&name, &ms(record.next_fire_ms), &record.encode()?],
    )
    .map_err(pg("store a schedule"))?;
    Ok(())
}

/// Schedule `name`, locked until the transaction ends.
fn locked(
    db: &mut impl Sql,
    schema: &SchemaName,
    name: &str,
) -> Result<Option<ScheduleRecord>, Error> {
    let q = schema.quoted();
    let row = db
        .query_opt(
            &format!("SELECT record FROM {q}.schedules WHERE name = $1 FOR UPDATE"),
            &[&name],
        )
        .map_err(pg("lock a schedule"))?;
    row.map(|r| ScheduleRecord::decode(r.get(0))).transpose()
}

/// Declares (or updates) schedule `name` at `now_ms`; whether anything changed. As in the
/// file engine: an identical definition changes nothing; one with the same timing keeps
/// the next fire and the pause; another timing starts from the next fire after now.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn declare(
    db: &mut impl Sql,
    schema: &SchemaName,
    name: &str,
    def: ScheduleDef,
    now_ms: u64,
) -> Result<bool, Error> {
    let mut tx = db.transaction().map_err(pg("begin a declaration"))?;
    // A first declaration has no row to lock: two processes inserting it at once would both
    // see none, so they take turns on the name first.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('taskspool schedule ' || $1))",
        &[&name],
    )
    .map_err(pg("lock a schedule's name"))?;
    let old = locked(&mut tx, schema, name)?;
    let new = match &old {
        Some(old) if old.def == def => return Ok(false),
        Some(old) if old.def.kind == def.kind => ScheduleRecord { def, ..old.clone() },
        Some(old) => ScheduleRecord {
            next_fire_ms: if old.paused {
                None
            } else {
                def.kind.next_after(now_ms)
            },
            def,
            last_fire_ms: old.last_fire_ms,
            paused: old.paused,
        },
        None => ScheduleRecord {
            next_fire_ms: def.kind.next_after(now_ms),
            def,
            last_fire_ms: None,
            paused: false,
        },
    };
    put(&mut tx, schema, name, &new)?;
    tx.commit().map_err(pg("commit a declaration"))?;
    Ok(true)
}

/// Fires every schedule due at `now_ms` that no other process is firing; returns the tasks
/// enqueued, in fire order, and the next fire time after them (for the wake-up's timeout).
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed).
pub(crate) fn fire_due(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
) -> Result<(Vec<u64>, Option<u64>), Error> {
    fire_due_locking(db, schema, now_ms, "FOR UPDATE SKIP LOCKED")
}

/// As [`fire_due`], but a due schedule another transaction is firing is waited for (and
/// fired if still due then), never skipped: for a drain, which must see the fires of
/// everything due when it claims.
///
/// # Errors
/// As [`fire_due`].
pub(crate) fn fire_due_waiting(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
) -> Result<(Vec<u64>, Option<u64>), Error> {
    fire_due_locking(db, schema, now_ms, "FOR UPDATE")
}

fn fire_due_locking(
    db: &mut impl Sql,
    schema: &SchemaName,
    now_ms: u64,
    lock: &str,
) -> Result<(Vec<u64>, Option<u64>), Error> {
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = db.transaction().map_err(pg("begin firing schedules"))?;
    let due = tx
        .query(
            &format!(
                "SELECT name, record FROM {q}.schedules WHERE next_fire_ms <= $1
                 ORDER BY next_fire_ms, name {lock}"
            ),
            &[&now],
        )
        .map_err(pg("lock due schedules"))?;
    let mut fired = Vec::new();
    for row in &due {
        let name: String = row.get(0);
        let old = ScheduleRecord::decode(row.get(1))?;
        let Some(at) = old.next_fire_ms.filter(|_| !old.paused) else {
            continue;
        };
        let fires = due_fires(&old.def.kind, old.def.misfire, at, now_ms);
        for &fire_ms in &fires.run {
            if let Some(id) = fire_one(&mut tx, schema, &name, &old.def, (fire_ms, now_ms), true)? {
                fired.push(id);
            }
        }
        let new = ScheduleRecord {
            next_fire_ms: fires.next,
            last_fire_ms: fires.run.last().copied().or(old.last_fire_ms),
            ..old
        };
        put(&mut tx, schema, &name, &new)?;
    }
    let next: Option<i64> = tx
        .query_one(&format!("SELECT min(next_fire_ms) FROM {q}.schedules"), &[])
        .map_err(pg("read the next fire"))?
        .get(0);
    tx.commit().map_err(pg("commit fired schedules"))?;
    Ok((fired, next.map(|ms| ms as u64)))
}

/// Enqueues schedule `name`'s task for `fire_ms` (at `now_ms`). A `timed` fire is made once
/// (recorded under its schedule and fire time, and skipped if it was already made); a run
/// asked for by hand (`run_schedule_now`) always enqueues, and is not recorded.
fn fire_one(
    tx: &mut impl Sql,
    schema: &SchemaName,
    name: &str,
    def: &ScheduleDef,
    (fire_ms, now_ms): (u64, u64),
    timed: bool,
) -> Result<Option<u64>, Error> {
    let q = schema.quoted();
    let at = i64::try_from(fire_ms).unwrap_or(i64::MAX);
    if timed {
        // Under the schedule's lock no other process fires it; the primary key is the
        // backstop.
        let made = tx
            .query_opt(
                &format!(
                    "SELECT task FROM {q}.schedule_fires WHERE schedule = $1 AND fire_ms = $2"
                ),
                &[&name, &at],
            )
            .map_err(pg("look for a fire"))?;
        if made.is_some() {
            return Ok(None);
        }
    }
    let task = NewTask {
        name: Arc::from(def.task_name.as_str()),
        payload: def.payload.clone(),
        opts: Arc::new(def.template.resolve_at(now_ms)),
        enqueued_at_ms: now_ms,
        origin: Some(Origin {
            schedule: name.to_string(),
            fire_at_ms: fire_ms,
        }),
        step: None,
    };
    // A fire whose unique key a task still holds is recorded with the holder: it made
    // nothing new.
    let (id, _duplicate) = insert_new(tx, schema, &[new_row(&task, now_ms)?], now_ms)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::storage("a fire's insert answered nothing"))?;
    tell_fired(tx, schema, name, (fire_ms, now_ms), id)?;
    if !timed {
        return Ok(Some(id));
    }
    tx.execute(
        &format!("INSERT INTO {q}.schedule_fires (schedule, fire_ms, task) VALUES ($1, $2, $3)"),
        &[&name, &at, &(id as i64)],
    )
    .map_err(pg("record a fire"))?;
    Ok(Some(id))
}

/// Every schedule with its next and last fire, by name.
///
/// # Errors
/// `Storage` on a failure of the server or a record this build cannot read.
pub(crate) fn list(
    db: &mut impl Sql,
    schema: &SchemaName,
) -> Result<Vec<crate::schedule::ScheduleInfo>, Error> {
    let q = schema.quoted();
    db.query(
        &format!("SELECT name, record FROM {q}.schedules ORDER BY name"),
        &[],
    )
    .map_err(pg("list schedules"))?
    .iter()
    .map(|r| Ok(ScheduleRecord::decode(r.get(1))?.info(r.get(0))))
    .collect()
}

/// Removes schedule `name`; whether it existed (its fires stay recorded).
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn remove(db: &mut impl Sql, schema: &SchemaName, name: &str) -> Result<bool, Error> {
    let q = schema.quoted();
    let removed = db
        .execute(
            &format!("DELETE FROM {q}.schedules WHERE name = $1"),
            &[&name],
        )
        .map_err(pg("remove a schedule"))?;
    Ok(removed == 1)
}

/// Pauses (no fires until resumed) or resumes (from the next fire after `now_ms`: fires
/// missed while paused are not run) schedule `name`; whether it changed.
///
/// # Errors
/// `ScheduleNotFound` for an unknown name; `Storage` on a failure of the server.
pub(crate) fn set_paused(
    db: &mut impl Sql,
    schema: &SchemaName,
    name: &str,
    paused: bool,
    now_ms: u64,
) -> Result<bool, Error> {
    let mut tx = db.transaction().map_err(pg("begin a pause"))?;
    let old =
        locked(&mut tx, schema, name)?.ok_or_else(|| Error::ScheduleNotFound(name.to_string()))?;
    if old.paused == paused {
        return Ok(false);
    }
    let new = ScheduleRecord {
        paused,
        next_fire_ms: if paused {
            None
        } else {
            old.def.kind.next_after(now_ms)
        },
        ..old
    };
    put(&mut tx, schema, name, &new)?;
    tx.commit().map_err(pg("commit a pause"))?;
    Ok(true)
}

/// Enqueues schedule `name`'s task now, as a fire at `now_ms`, leaving its timing as it is;
/// whether a task was enqueued (not when that fire time was already made).
///
/// # Errors
/// `ScheduleNotFound` for an unknown name; `Storage` on a failure of the server.
pub(crate) fn run_now(
    db: &mut impl Sql,
    schema: &SchemaName,
    name: &str,
    now_ms: u64,
) -> Result<bool, Error> {
    let mut tx = db.transaction().map_err(pg("begin a run now"))?;
    let record =
        locked(&mut tx, schema, name)?.ok_or_else(|| Error::ScheduleNotFound(name.to_string()))?;
    let made = fire_one(&mut tx, schema, name, &record.def, (now_ms, now_ms), false)?.is_some();
    tx.commit().map_err(pg("commit a run now"))?;
    Ok(made)
}
