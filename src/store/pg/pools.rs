//! The pools of every process on PostgreSQL: each process records the pools it starts (and
//! removes them when they stop; a rescued lease takes its process's with it), so that any
//! process can list them in `stats` and tell which ready tasks no live pool can run
//! (`unregistered`: a pool serves the task's queue, none knows its name).

use crate::error::Error;
use crate::store::pg::migrate::{SchemaName, pg};
use crate::store::pg::sql::Sql;
use crate::store::verbs::Serves;
use crate::views::PoolStats;

/// Pool `pool` of process `process` serves what `serves` says (its names recorded in order)
/// with `concurrency` threads.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn add(
    db: &mut impl Sql,
    schema: &SchemaName,
    (process, pool): (u64, u64),
    serves: &Serves,
    concurrency: usize,
) -> Result<(), Error> {
    let q = schema.quoted();
    let queues = &serves.queues;
    let mut names: Vec<&str> = serves.names.iter().map(String::as_str).collect();
    names.sort_unstable();
    let concurrency = i32::try_from(concurrency).unwrap_or(i32::MAX);
    db.execute(
        &format!(
            "INSERT INTO {q}.pools (process, pool, queues, names, concurrency)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (process, pool) DO UPDATE
                 SET queues = excluded.queues, names = excluded.names,
                     concurrency = excluded.concurrency"
        ),
        &[
            &(process as i64),
            &(pool as i64),
            &queues,
            &names,
            &concurrency,
        ],
    )
    .map_err(pg("record a pool"))?;
    Ok(())
}

/// Pool `pool` of process `process` stopped (`None`: every pool of the process).
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn remove(
    db: &mut impl Sql,
    schema: &SchemaName,
    process: u64,
    pool: Option<u64>,
) -> Result<(), Error> {
    let q = schema.quoted();
    let pool = pool.map(|p| p as i64);
    db.execute(
        &format!("DELETE FROM {q}.pools WHERE process = $1 AND ($2::int8 IS NULL OR pool = $2)"),
        &[&(process as i64), &pool],
    )
    .map_err(pg("remove a pool"))?;
    Ok(())
}

/// The pools of the processes other than `process`, in the order they started: their
/// threads are their concurrency (another process's hung threads are not seen from here),
/// and busy is how many of their tasks run now.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn of_others(
    db: &mut impl Sql,
    schema: &SchemaName,
    process: u64,
) -> Result<Vec<PoolStats>, Error> {
    let q = schema.quoted();
    let rows = db
        .query(
            &format!(
                "SELECT p.queues, p.names, p.concurrency,
                     (SELECT count(*) FROM {q}.tasks t
                      WHERE t.state = 2 AND t.owner = p.process
                          AND t.queue = ANY(p.queues) AND t.name = ANY(p.names))
                 FROM {q}.pools p WHERE p.process <> $1 ORDER BY p.process, p.pool"
            ),
            &[&(process as i64)],
        )
        .map_err(pg("list the pools of other processes"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let concurrency = usize::try_from(r.get::<_, i32>(2)).unwrap_or(0);
            PoolStats {
                queues: r.get(0),
                // Recorded in order by `add`.
                tasks: r.get(1),
                concurrency,
                threads: concurrency,
                abandoned: 0,
                busy: usize::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            }
        })
        .collect())
}

/// Whether the ready task `t` of a query is one no live pool can run although one serves
/// its queue (an SQL condition on the alias `t`).
pub(super) fn unregistered(q: &str) -> String {
    format!("(t.state = 1 AND {})", stranded(q, "t"))
}

/// Whether the (queue, name) of alias `t` is served by no live pool although one serves the
/// queue.
fn stranded(q: &str, t: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM {q}.pools p WHERE {t}.queue = ANY(p.queues)) \
         AND NOT EXISTS (SELECT 1 FROM {q}.pools p \
                         WHERE {t}.queue = ANY(p.queues) AND {t}.name = ANY(p.names))"
    )
}

/// The names of the ready tasks no live pool can run, with how many wait, by name. The
/// ready tasks are counted per (queue, name) first (on the index claims use), so the pools
/// are looked at once per pair, not once per task.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn unregistered_counts(
    db: &mut impl Sql,
    schema: &SchemaName,
) -> Result<Vec<(String, u64)>, Error> {
    let q = schema.quoted();
    let rows = db
        .query(
            &format!(
                "SELECT r.name, sum(r.n)::int8 FROM (
                     SELECT queue, name, count(*) AS n FROM {q}.tasks
                     WHERE state = 1 GROUP BY queue, name
                 ) AS r
                 WHERE {}
                 GROUP BY r.name ORDER BY r.name",
                stranded(&q, "r")
            ),
            &[],
        )
        .map_err(pg("count the tasks no pool can run"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
        .collect())
}
