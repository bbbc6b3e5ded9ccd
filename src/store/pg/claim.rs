//! Tasks in and out on PostgreSQL: inserting ready or due tasks (one statement for a batch,
//! ids in the batch's order, a wake-up notified with the commit), claiming the next ready
//! ones for a process with `FOR UPDATE SKIP LOCKED` — across the (queue, task name) pairs a
//! pool serves, higher priority first, then older, as the file engine claims — and the
//! wake-ups a waiting process listens for instead of polling. Leases are in `lease`; claims
//! under flow limits in `admit`.

use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use crate::error::Error;
use crate::model::TaskState;
use crate::store::pg::inputs::inputs_of;
use crate::store::pg::migrate::{SchemaName, connect_for, pg};
use crate::store::pg::notify::notify_wake;
use crate::store::pg::notify::{listening, task_event};
use crate::store::pg::sql::Sql;
use crate::store::pg::tally::{Counted, Did};

/// A task to insert: its indexed columns and the rest of its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewRow {
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) priority: u8,
    /// Ready now, or scheduled until `due_at_ms`.
    pub(crate) ready: bool,
    pub(crate) due_at_ms: u64,
    pub(crate) max_retries: u32,
    /// When it expires if it has not started by then.
    pub(crate) expires_at_ms: Option<u64>,
    /// When it was enqueued, and the schedule that enqueued it (for listings).
    pub(crate) enqueued_at_ms: u64,
    pub(crate) schedule: Option<String>,
    /// The JSON arguments.
    pub(crate) payload: Vec<u8>,
    pub(crate) record: Vec<u8>,
    /// Its unique key and how long it holds it (`Options::unique`), for
    /// [`insert_new`](crate::store::pg::unique::insert_new).
    pub(crate) unique: Option<(String, Hold)>,
    /// The key its type's per-key concurrency limit counts it under (`Options::limit_key`).
    pub(crate) limit_key: Option<String>,
}

/// How long a task holds its unique key (`Unique`, with a period resolved to its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Until it is final.
    Final,
    /// Until its first attempt starts (or it is final).
    Started,
    /// Until this time (ms since the epoch), whatever its state.
    Until(u64),
}

/// A claimed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) priority: u8,
    /// The attempt's number (attempts so far, this one included).
    pub(crate) attempt: u32,
    pub(crate) max_retries: u32,
    pub(crate) payload: Vec<u8>,
    pub(crate) record: Vec<u8>,
    /// A workflow step's or callback's inputs: its parents' outputs, as one JSON array, and
    /// how many.
    pub(crate) inputs: Option<(Vec<u8>, usize)>,
}

/// `TaskState::code` of the states these statements set.
const SCHEDULED: i16 = 0;
pub(crate) const READY: i16 = 1;
pub(crate) const RUNNING: i16 = 2;

/// Inserts `rows` in one statement; returns their ids, ascending in the order of `rows` (so
/// a batch keeps its FIFO order), and notifies the schema's wake-up channel, which listeners
/// hear when the caller's transaction commits. Unique keys are not looked at here:
/// [`insert_new`](crate::store::pg::unique::insert_new) honours them.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn insert(
    db: &mut impl Sql,
    schema: &SchemaName,
    rows: &[NewRow],
) -> Result<Vec<u64>, Error> {
    let ids = allocate_ids(db, schema, rows.len())?;
    insert_with_ids(db, schema, rows, &ids)?;
    Ok(ids)
}

/// `count` new task ids, ascending (so that a batch keeps its FIFO order whatever order the
/// rows go in).
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn allocate_ids(
    db: &mut impl Sql,
    schema: &SchemaName,
    count: usize,
) -> Result<Vec<u64>, Error> {
    let q = schema.quoted();
    let count = i64::try_from(count).unwrap_or(i64::MAX);
    let mut ids: Vec<i64> = db
        .query(
            &format!(
                "SELECT nextval(pg_get_serial_sequence('{q}.tasks', 'id')) \
                 FROM generate_series(1, $1::int8)"
            ),
            &[&count],
        )
        .map_err(pg("allocate task ids"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort_unstable();
    Ok(ids.into_iter().map(|id| id as u64).collect())
}

/// Inserts `rows` under `ids` (one each, in order) in one statement, and notifies the
/// schema's wake-up channel.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn insert_with_ids(
    db: &mut impl Sql,
    schema: &SchemaName,
    rows: &[NewRow],
    ids: &[u64],
) -> Result<(), Error> {
    let q = schema.quoted();
    let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let queues: Vec<&str> = rows.iter().map(|r| r.queue.as_str()).collect();
    let priorities: Vec<i16> = rows.iter().map(|r| i16::from(r.priority)).collect();
    let states: Vec<i16> = rows
        .iter()
        .map(|r| if r.ready { READY } else { SCHEDULED })
        .collect();
    let due: Vec<i64> = rows
        .iter()
        .map(|r| i64::try_from(r.due_at_ms).unwrap_or(i64::MAX))
        .collect();
    let retries: Vec<i32> = rows
        .iter()
        .map(|r| i32::try_from(r.max_retries).unwrap_or(i32::MAX))
        .collect();
    let expiries: Vec<Option<i64>> = rows
        .iter()
        .map(|r| {
            r.expires_at_ms
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
        })
        .collect();
    let enqueued: Vec<i64> = rows
        .iter()
        .map(|r| i64::try_from(r.enqueued_at_ms).unwrap_or(i64::MAX))
        .collect();
    let schedules: Vec<Option<&str>> = rows.iter().map(|r| r.schedule.as_deref()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|r| r.payload.as_slice()).collect();
    let records: Vec<&[u8]> = rows.iter().map(|r| r.record.as_slice()).collect();
    let keys: Vec<Option<&str>> = rows.iter().map(|r| r.limit_key.as_deref()).collect();
    // The insert, and its events if anyone listens.
    let event = task_event(&q, "t", "'enqueued'", "t.enqueued_at_ms", false);
    db.execute(
        &format!(
            "WITH ins AS (
                 INSERT INTO {q}.tasks
                     (id, name, queue, priority, state, due_at_ms, max_retries, payload, record,
                      expires_at_ms, enqueued_at_ms, schedule, limit_key, base_retries)
                 SELECT *, r FROM unnest($1::int8[], $2::text[], $3::text[], $4::int2[],
                                         $5::int2[], $6::int8[], $7::int4[], $8::bytea[],
                                         $9::bytea[], $10::int8[], $11::int8[], $12::text[],
                                         $13::text[])
                     AS u(i, n, q, p, s, d, r, pl, rc, e, en, sc, lk)
                 RETURNING id, name, queue, attempts, enqueued_at_ms, due_at_ms
             )
             SELECT pg_notify($14, {event}) FROM (SELECT * FROM ins ORDER BY id) AS t
             WHERE {listening}",
            listening = listening(&q)
        ),
        &[
            &ids,
            &names,
            &queues,
            &priorities,
            &states,
            &due,
            &retries,
            &payloads,
            &records,
            &expiries,
            &enqueued,
            &schedules,
            &keys,
            &schema.events_channel(),
        ],
    )
    .map_err(pg("insert tasks"))?;
    if db.counts() {
        let mut counted = Counted::default();
        for r in rows {
            counted.add(&r.queue, &r.name, Did::Entered(TaskState::Ready, 1));
        }
        db.count(counted);
    }
    notify_wake(db, schema)
}

/// How a claim treats a ready row another transaction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Skipped, never waited for, so concurrent claimers never get the same task: for the
    /// dispatchers.
    Skip,
    /// Waited for (and claimed if it is still ready then): for a drain, which ends when a
    /// claim finds nothing, and so must not miss a task that a promoter elsewhere (this
    /// process's dispatcher, say) holds for an instant.
    Wait,
}

impl Lock {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Lock::Skip => "FOR UPDATE SKIP LOCKED",
            Lock::Wait => "FOR UPDATE",
        }
    }
}

/// The columns a claim returns, as [`claimed_from`] reads them.
pub(crate) const CLAIMED: &str = "task.id, task.name, task.queue, task.priority, \
     task.attempts, task.payload, task.record, task.max_retries, task.inputs, task.settled, \
     task.due_at_ms";

/// Claims at most `max` ready tasks of the (queue, name) pairs in `serves` — of the queues
/// not paused, none parked — for process `owner` at `now_ms`: each becomes running, its
/// attempt counted; one whose expiry has passed is left for
/// [`expire_due`](crate::store::pg::complete::expire_due) to end. Higher priority first,
/// then older, across all the pairs. Claims nothing and returns `None` if a flow limit
/// applies to any of the pairs' task names or queues: those claims are
/// [`admit`](crate::store::pg::admit)'s, under the limits' row locks.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn claim_unlimited(
    db: &mut impl Sql,
    schema: &SchemaName,
    serves: &[(String, String)],
    max: usize,
    (owner, now_ms): (u64, u64),
    lock: Lock,
) -> Result<Option<Vec<Claimed>>, Error> {
    if serves.is_empty() || max == 0 {
        return Ok(Some(Vec::new()));
    }
    let q = schema.quoted();
    let queues: Vec<&str> = serves.iter().map(|(queue, _)| queue.as_str()).collect();
    let names: Vec<&str> = serves.iter().map(|(_, name)| name.as_str()).collect();
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let owner = i64::try_from(owner).unwrap_or(i64::MAX);
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let lock = lock.sql();
    // Whether a limit applies (then nothing is claimed here); else the head of each pair's
    // run of the ready index, locked, then the best `max` of them. One row at least: the
    // flag, with the claimed task's columns if any.
    let rows = db
        .query(
            &format!(
                "WITH limited AS (
                     SELECT EXISTS (SELECT 1 FROM {q}.limits l
                                    WHERE (l.kind = 0 AND l.name = ANY($2))
                                       OR (l.kind = 1 AND l.name = ANY($1))) AS found
                 ), heads AS (
                     SELECT t.id
                     FROM (SELECT * FROM unnest($1::text[], $2::text[]) AS u(queue, name)
                           WHERE NOT EXISTS (SELECT 1 FROM {q}.paused_queues z
                                             WHERE z.queue = u.queue)) AS p
                     CROSS JOIN LATERAL (
                         SELECT id, priority FROM {q}.tasks
                         WHERE state = {READY} AND NOT parked
                             AND queue = p.queue AND name = p.name
                             AND (expires_at_ms IS NULL OR expires_at_ms > $5)
                         ORDER BY priority DESC, id
                         LIMIT $3
                         {lock}
                     ) AS t
                     WHERE NOT (SELECT found FROM limited)
                     ORDER BY t.priority DESC, t.id
                     LIMIT $3
                 ), claimed AS (
                     UPDATE {q}.tasks AS task
                     SET state = {RUNNING}, attempts = task.attempts + 1, owner = $4,
                         started_at_ms = NULL, limited = false
                     FROM heads WHERE task.id = heads.id
                     RETURNING {CLAIMED}
                 ), told AS (
                     SELECT count(pg_notify($6, {event}))
                     FROM (SELECT * FROM claimed ORDER BY priority DESC, id) AS t
                     WHERE {listening}
                 )
                 SELECT claimed.*, limited.found
                 FROM limited LEFT JOIN claimed ON true CROSS JOIN told",
                event = task_event(&q, "t", "'started'", "$5::int8", false),
                listening = listening(&q)
            ),
            &[
                &queues,
                &names,
                &max,
                &owner,
                &now,
                &schema.events_channel(),
            ],
        )
        .map_err(pg("claim tasks"))?;
    if rows.first().is_some_and(|r| r.get::<_, bool>(11)) {
        return Ok(None);
    }
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| r.get::<_, Option<i64>>(0).is_some())
        .collect();
    claimed_from(db, schema, &rows).map(Some)
}

/// The attempts claimed, from rows of [`CLAIMED`], in the claim's order (higher priority
/// first, then older), each with its inputs if it is a workflow step.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn claimed_from(
    db: &mut impl Sql,
    schema: &SchemaName,
    rows: &[postgres::Row],
) -> Result<Vec<Claimed>, Error> {
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        // A step's parents are final and stay so while it runs: read after the claim.
        let inputs = match r.get::<_, Option<Vec<i64>>>(8) {
            Some(runs) => {
                let inputs = inputs_of(db, schema, &runs, r.get(9))?;
                Some((inputs.json, inputs.count))
            }
            None => None,
        };
        claimed.push(Claimed {
            id: r.get::<_, i64>(0) as u64,
            name: r.get(1),
            queue: r.get(2),
            priority: u8::try_from(r.get::<_, i16>(3)).unwrap_or(0),
            attempt: u32::try_from(r.get::<_, i32>(4)).unwrap_or(0),
            payload: r.get::<_, Option<Vec<u8>>>(5).unwrap_or_default(),
            record: r.get(6),
            max_retries: u32::try_from(r.get::<_, i32>(7)).unwrap_or(0),
            inputs,
        });
    }
    // RETURNING keeps no order: the claim's order is the index's.
    claimed.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.id.cmp(&b.id)));
    Ok(claimed)
}

/// A connection that listens on a schema's wake-up channel.
pub(crate) struct Listener {
    client: Client,
    url: String,
    schema: SchemaName,
    channel: String,
}

impl Listener {
    /// # Errors
    /// `Storage` if the server cannot be reached or refuses the `LISTEN`.
    pub(crate) fn new(url: &str, schema: &SchemaName) -> Result<Listener, Error> {
        Listener::on(url, schema, schema.wake_channel())
    }

    /// A listener on the schema's `done` channel: the ids of tasks that reached a final
    /// state, for waiters ([`next`](Self::next)).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub(crate) fn for_results(url: &str, schema: &SchemaName) -> Result<Listener, Error> {
        Listener::on(url, schema, schema.done_channel())
    }

    /// A listener on the schema's `stop` channel: the ids of running tasks revoked, for the
    /// processes running them.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub(crate) fn on_stop(url: &str, schema: &SchemaName) -> Result<Listener, Error> {
        Listener::on(url, schema, schema.stop_channel())
    }

    /// A listener on the schema's events channel (see `store::pg::events`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub(crate) fn on_events(url: &str, schema: &SchemaName) -> Result<Listener, Error> {
        Listener::on(url, schema, schema.events_channel())
    }

    fn on(url: &str, schema: &SchemaName, channel: String) -> Result<Listener, Error> {
        let client = Listener::listen(url, schema, &channel)?;
        Ok(Listener {
            client,
            url: url.to_string(),
            schema: schema.clone(),
            channel,
        })
    }

    fn listen(url: &str, schema: &SchemaName, channel: &str) -> Result<Client, Error> {
        connect_for(url, schema, &format!("LISTEN \"{channel}\""))
    }

    /// Connects and listens again after the connection failed. What was notified while it
    /// was down is lost: the caller makes up for it (a wake-up, every waiter reading
    /// again).
    ///
    /// # Errors
    /// As [`new`](Self::new); the listener stays as it was.
    pub(crate) fn reconnect(&mut self) -> Result<(), Error> {
        self.client = Listener::listen(&self.url, &self.schema, &self.channel)?;
        Ok(())
    }

    /// The next notification's payload, or `None` once `timeout` passes without one.
    ///
    /// # Errors
    /// `Storage` if the connection failed.
    pub(crate) fn next(&mut self, timeout: Duration) -> Result<Option<String>, Error> {
        let mut notifications = self.client.notifications();
        let next = notifications
            .timeout_iter(timeout)
            .next()
            .map_err(pg("wait for a notification"))?;
        Ok(next.map(|n| n.payload().to_string()))
    }

    /// Waits until a wake-up is notified or `timeout` passes (the next due time, when there
    /// is one); returns whether one was. Wake-ups that arrived while nobody waited are taken
    /// together with the first.
    ///
    /// # Errors
    /// `Storage` if the connection failed.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<bool, Error> {
        let mut notifications = self.client.notifications();
        let woke = notifications
            .timeout_iter(timeout)
            .next()
            .map_err(pg("wait for a wake-up"))?
            .is_some();
        // Take the ones already arrived behind it (without waiting for more): one wake-up
        // serves them all.
        let mut queued = notifications.iter();
        while queued.next().map_err(pg("wait for a wake-up"))?.is_some() {}
        Ok(woke)
    }
}
