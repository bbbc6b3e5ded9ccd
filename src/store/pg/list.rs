//! Listings and bulk requests on PostgreSQL: a [`TaskFilter`] as a `WHERE` clause over the
//! task's columns (only the conditions given, so the planner picks the index that serves
//! them: `tasks_state (state, id)` for a state, the primary key otherwise), pages in id
//! order by keyset (`id > cursor`), and `revoke_where` / `retry_where` as the single verbs
//! over every matching task, all or none.

use crate::store::pg::sql::Sql;
use postgres::types::ToSql;

use crate::error::Error;
use crate::model::{Revoke, Revoked, TaskState};
use crate::query::{Paging, TaskFilter};
use crate::store::pg::control;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::read::{columns, from_row};
use crate::views::TaskPage;

type Param = Box<dyn ToSql + Sync>;

/// A filter's conditions on the task `t`, and their parameters.
struct Where {
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl Where {
    /// The tasks `filter` matches among those in `applies` states.
    fn new(filter: &TaskFilter, applies: impl Fn(TaskState) -> bool) -> Where {
        let mut w = Where {
            conditions: Vec::new(),
            params: Vec::new(),
        };
        let states: Vec<i16> = TaskState::ALL
            .iter()
            .filter(|s| (filter.states.is_empty() || filter.states.contains(s)) && applies(**s))
            .map(|s| i16::from(s.code()))
            .collect();
        if states.len() < TaskState::ALL.len() {
            w.push("t.state = ANY({})", Box::new(states));
        }
        if let Some(queue) = &filter.queue {
            w.push("t.queue = {}", Box::new(queue.clone()));
        }
        if let Some(name) = &filter.name {
            w.push("t.name = {}", Box::new(name.clone()));
        }
        if let Some(schedule) = &filter.schedule {
            w.push("t.schedule = {}", Box::new(schedule.clone()));
        }
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        if let Some(from) = filter.enqueued_from {
            w.push("t.enqueued_at_ms >= {}", Box::new(ms(from)));
        }
        if let Some(until) = filter.enqueued_until {
            w.push("t.enqueued_at_ms < {}", Box::new(ms(until)));
        }
        w
    }

    /// Adds `condition`, its `{}` the next parameter.
    fn push(&mut self, condition: &str, param: Param) {
        self.params.push(param);
        let placeholder = format!("${}", self.params.len());
        self.conditions.push(condition.replace("{}", &placeholder));
    }

    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            "true".into()
        } else {
            self.conditions.join(" AND ")
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref()).collect()
    }
}

/// A page of the tasks `filter` matches, in `paging`'s order.
///
/// # Errors
/// `InvalidOption` for a page size out of range; `Storage` on a failure of the server or a
/// row this build cannot read.
pub(crate) fn tasks(
    db: &mut impl Sql,
    schema: &SchemaName,
    filter: &TaskFilter,
    paging: &Paging,
) -> Result<TaskPage, Error> {
    let limit = paging.checked_limit()?;
    let q = schema.quoted();
    let mut w = Where::new(filter, |_| true);
    let (order, after) = if paging.newest_first {
        ("DESC", "t.id < {}")
    } else {
        ("ASC", "t.id > {}")
    };
    if let Some(cursor) = paging.after {
        w.push(after, Box::new(cursor.0 as i64));
    }
    // One more than the page: whether a next page exists.
    let rows = db
        .query(
            &format!(
                "SELECT {} FROM {q}.tasks t WHERE {} ORDER BY t.id {order} LIMIT {}",
                columns(&q),
                w.sql(),
                limit + 1
            ),
            &w.params(),
        )
        .map_err(pg("list tasks"))?;
    let tasks = rows
        .iter()
        .take(limit)
        .map(from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next = (rows.len() > limit)
        .then(|| tasks.last().map(|t| t.id))
        .flatten();
    Ok(TaskPage { tasks, next })
}

/// The ids of the tasks `filter` matches among those in `applies` states, locked until the
/// transaction ends (in id order, as every locker here takes them, so two bulk requests
/// cannot deadlock).
fn lock_matching(
    db: &mut impl Sql,
    schema: &SchemaName,
    filter: &TaskFilter,
    applies: impl Fn(TaskState) -> bool,
) -> Result<Vec<u64>, Error> {
    let q = schema.quoted();
    let w = Where::new(filter, applies);
    let rows = db
        .query(
            &format!(
                "SELECT t.id FROM {q}.tasks t WHERE {} ORDER BY t.id FOR UPDATE",
                w.sql()
            ),
            &w.params(),
        )
        .map_err(pg("lock the matching tasks"))?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}

/// Revokes every unfinished task `filter` matches at `now_ms`, each as [`control::revoke`]
/// does, in one transaction.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed then).
pub(crate) fn revoke_where(
    db: &mut impl Sql,
    schema: &SchemaName,
    filter: &TaskFilter,
    now_ms: u64,
) -> Result<Revoked, Error> {
    let mut tx = db.transaction().map_err(pg("begin a revoke"))?;
    let mut done = Revoked::default();
    for id in lock_matching(&mut tx, schema, filter, |s| !s.is_final())? {
        match control::revoke(&mut tx, schema, id, now_ms)? {
            Some(Revoke::Revoked) => done.revoked += 1,
            Some(Revoke::Cancelling) => done.cancelling += 1,
            _ => {}
        }
    }
    tx.commit().map_err(pg("commit a revoke"))?;
    Ok(done)
}

/// Retries every failed, expired or revoked task `filter` matches at `now_ms`, each as
/// [`control::retry`] does, in one transaction; returns how many.
///
/// # Errors
/// `Storage` on a failure of the server (nothing is changed then).
pub(crate) fn retry_where(
    db: &mut impl Sql,
    schema: &SchemaName,
    filter: &TaskFilter,
    now_ms: u64,
) -> Result<u64, Error> {
    let retryable = |s| {
        matches!(
            s,
            TaskState::Failed | TaskState::Expired | TaskState::Revoked
        )
    };
    let mut tx = db.transaction().map_err(pg("begin a retry"))?;
    let mut retried = 0;
    for id in lock_matching(&mut tx, schema, filter, retryable)? {
        match control::retry(&mut tx, schema, id, now_ms) {
            Ok(()) => retried += 1,
            Err(Error::NotFound(_) | Error::WrongState { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    tx.commit().map_err(pg("commit a retry"))?;
    Ok(retried)
}
