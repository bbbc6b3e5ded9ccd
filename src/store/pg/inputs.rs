//! A workflow step's inputs on PostgreSQL, read when it is claimed: its parents' outputs
//! (a callback's: its task's) as one JSON array, as the file engine builds them
//! (`Tx::inputs_of`) — a parent's failure where it did not succeed and the step reads it.

use std::collections::HashMap;

use crate::clock::to_system_time;
use crate::error::{Error, Failure};
use crate::model::{AttemptError, AttemptErrorKind, TaskId, TaskState};
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::Sql;
use crate::store::verbs::Inputs;

/// The inputs of a step (or callback): the outputs of the tasks in `runs` (first, count,
/// first, count, …), in order, as one JSON array — `null` for a task gone from the table;
/// for a failure callback, what ended its task; with `settled`, each task's result as
/// `{"ok": output}` or `{"err": failure}`.
///
/// # Errors
/// `Storage` on a failure of the server or a row this build cannot read.
pub(crate) fn inputs_of(
    db: &mut impl Sql,
    schema: &SchemaName,
    runs: &[i64],
    settled: bool,
) -> Result<Inputs, Error> {
    let q = schema.quoted();
    let mut inputs = Inputs::start();
    for run in runs.chunks_exact(2) {
        let (first, n) = (run[0], run[1]);
        let rows = db
            .query(
                &format!(
                    "SELECT id, state, name, attempts, output FROM {q}.tasks
                     WHERE id >= $1 AND id < $1 + $2 ORDER BY id"
                ),
                &[&first, &n],
            )
            .map_err(pg("read a step's inputs"))?;
        let unsucceeded: Vec<i64> = rows
            .iter()
            .filter(|r| r.get::<_, i16>(1) != i16::from(TaskState::Succeeded.code()))
            .map(|r| r.get(0))
            .collect();
        let mut errors = errors_of(db, schema, &unsucceeded)?;
        let mut expected = first;
        for row in &rows {
            let id: i64 = row.get(0);
            for _ in expected..id {
                inputs.push_missing();
            }
            expected = id + 1;
            let state = u8::try_from(row.get::<_, i16>(1))
                .ok()
                .and_then(TaskState::from_code)
                .unwrap_or(TaskState::Failed);
            if state == TaskState::Succeeded {
                inputs.push_parent(settled, Ok(row.get::<_, Option<&[u8]>>(4)))?;
            } else {
                let attempts = u32::try_from(row.get::<_, i32>(3)).unwrap_or(0);
                let failure = Failure::ended(
                    (TaskId(id as u64), row.get(2), attempts),
                    state,
                    errors.remove(&id).unwrap_or_default(),
                );
                inputs.push_parent(settled, Err(&failure))?;
            }
        }
        for _ in expected..first + n {
            inputs.push_missing();
        }
    }
    Ok(inputs.finish())
}

/// The errors of each of `ids`, in order.
fn errors_of(
    db: &mut impl Sql,
    schema: &SchemaName,
    ids: &[i64],
) -> Result<HashMap<i64, Vec<AttemptError>>, Error> {
    let mut errors: HashMap<i64, Vec<AttemptError>> = HashMap::new();
    if ids.is_empty() {
        return Ok(errors);
    }
    let q = schema.quoted();
    let rows = db
        .query(
            &format!(
                "SELECT task, attempt, at_ms, kind, message FROM {q}.attempt_errors
                 WHERE task = ANY($1) ORDER BY task, id"
            ),
            &[&ids],
        )
        .map_err(pg("read the errors of a step's inputs"))?;
    for row in &rows {
        let Some(kind) = u8::try_from(row.get::<_, i16>(3))
            .ok()
            .and_then(AttemptErrorKind::from_code)
        else {
            continue;
        };
        errors.entry(row.get(0)).or_default().push(AttemptError {
            attempt: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
            at: to_system_time(row.get::<_, i64>(2) as u64),
            kind,
            message: row.get(4),
        });
    }
    Ok(errors)
}
