//! Unique tasks on PostgreSQL (`Options::unique`): a new task with a key another task of
//! its name still holds is not inserted; its caller gets the holder, marked as a duplicate.
//! Exact across processes without a lock table or a TTL: the key is taken by inserting its
//! row (`ON CONFLICT DO NOTHING`, which waits for a concurrent insert of the same key to
//! commit or abort), or, when its row exists, under that row's lock, after checking that
//! its task no longer holds it — final, started, or past its period, as it was enqueued.

use std::collections::BTreeMap;

use crate::error::Error;
use crate::model::TaskState;
use crate::store::pg::claim::{Hold, NewRow, allocate_ids, insert, insert_with_ids};
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::Sql;

/// Inserts `rows` at `now_ms`, honouring their unique keys; returns for each row its task's
/// id and whether it is a duplicate (the id then is the holder's: of an earlier task, or of
/// an earlier row of the same batch). Ids ascend in the order of the rows inserted.
///
/// Keys are taken in their (name, key) order, whatever the rows' order, so that two
/// transactions taking the same keys wait for each other in one order and never deadlock.
///
/// # Errors
/// `Storage` on a failure of the server (the caller's transaction is then to be dropped).
pub(crate) fn insert_new(
    db: &mut impl Sql,
    schema: &SchemaName,
    rows: &[NewRow],
    now_ms: u64,
) -> Result<Vec<(u64, bool)>, Error> {
    if rows.iter().all(|r| r.unique.is_none()) {
        let ids = insert(db, schema, rows)?;
        return Ok(ids.into_iter().map(|id| (id, false)).collect());
    }
    let ids = allocate_ids(db, schema, rows.len())?;
    // Each key's first row in the batch is the one that may take it.
    let mut first: BTreeMap<(&str, &str), (usize, Hold)> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        if let Some((key, hold)) = &row.unique {
            first
                .entry((row.name.as_str(), key.as_str()))
                .or_insert((i, *hold));
        }
    }
    // The task each key belongs to after this batch: an earlier holder, or the first row.
    let mut owner: BTreeMap<(&str, &str), (u64, bool)> = BTreeMap::new();
    for (&(name, key), &(i, hold)) in &first {
        let answer = match take(db, schema, (name, key), (ids[i], hold), now_ms)? {
            Some(holder) => (holder, true),
            None => (ids[i], false),
        };
        owner.insert((name, key), answer);
    }
    let mut answers = Vec::with_capacity(rows.len());
    let mut new_rows = Vec::with_capacity(rows.len());
    let mut new_ids = Vec::with_capacity(rows.len());
    for (row, &id) in rows.iter().zip(&ids) {
        let keyed = row
            .unique
            .as_ref()
            .and_then(|(key, _)| owner.get(&(row.name.as_str(), key.as_str())));
        match keyed {
            // Held before the batch, or by an earlier row of it.
            Some(&(holder, before)) if before || holder != id => answers.push((holder, true)),
            _ => {
                answers.push((id, false));
                new_rows.push(row.clone());
                new_ids.push(id);
            }
        }
    }
    if !new_rows.is_empty() {
        insert_with_ids(db, schema, &new_rows, &new_ids)?;
    }
    Ok(answers)
}

/// Takes unique key `key` of task name `name` for the new task `id`, or returns the task
/// that holds it at `now_ms`.
fn take(
    db: &mut impl Sql,
    schema: &SchemaName,
    (name, key): (&str, &str),
    (id, hold): (u64, Hold),
    now_ms: u64,
) -> Result<Option<u64>, Error> {
    let q = schema.quoted();
    let (until_ms, until_started) = match hold {
        Hold::Final => (None, false),
        Hold::Started => (None, true),
        Hold::Until(ms) => (Some(i64::try_from(ms).unwrap_or(i64::MAX)), false),
    };
    let task = id as i64;
    let taken = db
        .execute(
            &format!(
                "INSERT INTO {q}.unique_keys (name, key, task, until_ms, until_started)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, key) DO NOTHING"
            ),
            &[&name, &key, &task, &until_ms, &until_started],
        )
        .map_err(pg("take a unique key"))?;
    if taken == 1 {
        return Ok(None);
    }
    let row = db
        .query_one(
            &format!(
                "SELECT u.task, u.until_ms, u.until_started, t.state, t.attempts
                 FROM {q}.unique_keys u LEFT JOIN {q}.tasks t ON t.id = u.task
                 WHERE u.name = $1 AND u.key = $2
                 FOR UPDATE OF u"
            ),
            &[&name, &key],
        )
        .map_err(pg("read a unique key"))?;
    let holder = row.get::<_, i64>(0) as u64;
    let held_until: Option<i64> = row.get(1);
    // `None`: no such task; `Some(None)`: a state this build does not know (held, to be safe).
    let state: Option<Option<TaskState>> = row
        .get::<_, Option<i16>>(3)
        .map(|code| u8::try_from(code).ok().and_then(TaskState::from_code));
    let held = match (held_until, state) {
        (Some(until), _) => until > i64::try_from(now_ms).unwrap_or(i64::MAX),
        // No such task: a key outlives its task only until the task's deletion cascades.
        (None, None) => false,
        (None, Some(None)) => true,
        (None, Some(Some(state))) => {
            let started = state == TaskState::Running || row.get::<_, i32>(4) > 0;
            let until_started: bool = row.get(2);
            let released = state.is_final() || (until_started && started);
            !released
        }
    };
    if held {
        return Ok(Some(holder));
    }
    db.execute(
        &format!(
            "UPDATE {q}.unique_keys SET task = $3, until_ms = $4, until_started = $5
             WHERE name = $1 AND key = $2"
        ),
        &[&name, &key, &task, &until_ms, &until_started],
    )
    .map_err(pg("take a unique key"))?;
    Ok(None)
}
