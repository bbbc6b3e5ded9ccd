//! A task's record on PostgreSQL: what a task keeps in the `record` column — everything the
//! engine reads back but never indexes, filters or changes in SQL (those are columns:
//! name, queue, priority, state, due time, attempts, retries, owner, times, arguments,
//! output, errors). Stored as every record the library stores: postcard parts in a version
//! envelope (`store::codec`), so a later need appends a part and older records still read.

use serde::{Deserialize, Serialize};

use crate::clock::duration_ms;
use crate::error::Error;
use crate::model::Origin;
use crate::options::{Limits, Unique};
use crate::retry::RetryPolicy;
use crate::store::codec;
use crate::store::pg::claim::{Hold, NewRow};
use crate::store::verbs::NewTask;

/// The record's first part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PgRecord {
    pub(crate) retry: RetryPolicy,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) expires_at_ms: Option<u64>,
    /// The periodic schedule and fire time that enqueued it.
    pub(crate) origin: Option<Origin>,
    pub(crate) time_limit_ms: Option<u64>,
    pub(crate) soft_time_limit_ms: Option<u64>,
    /// The key its type's per-key concurrency limit counts it under.
    pub(crate) limit_key: Option<String>,
    /// Its callbacks, enqueued when it ends (see `store::pg::workflow`).
    pub(crate) links: Vec<PgLink>,
}

/// A callback stored with its task: enqueued, ready at once, in the transaction that ends
/// the task — if it succeeded (`on_failure: false`), or if it ended any other way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PgLink {
    pub(crate) on_failure: bool,
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) priority: u8,
    pub(crate) max_retries: u32,
    pub(crate) retry: RetryPolicy,
    pub(crate) limits: Limits,
}

impl PgLink {
    /// The row the callback is stored as when its task ends at `now_ms`.
    ///
    /// # Errors
    /// `Storage` if its record cannot be encoded.
    pub(crate) fn row(&self, now_ms: u64) -> Result<NewRow, Error> {
        let record = PgRecord {
            retry: self.retry,
            enqueued_at_ms: now_ms,
            expires_at_ms: None,
            origin: None,
            time_limit_ms: self.limits.time_limit_ms,
            soft_time_limit_ms: self.limits.soft_time_limit_ms,
            limit_key: None,
            links: Vec::new(),
        };
        Ok(NewRow {
            name: self.name.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            ready: true,
            due_at_ms: now_ms,
            max_retries: self.max_retries,
            expires_at_ms: None,
            enqueued_at_ms: now_ms,
            schedule: None,
            payload: self.payload.clone(),
            record: record.encode()?,
            unique: None,
            limit_key: None,
        })
    }
}

impl PgRecord {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        Ok(codec::Encoder::new().part(self)?.finish())
    }

    /// # Errors
    /// `Storage` for bytes that are not such a record (or one of a newer build).
    pub(crate) fn decode(bytes: &[u8]) -> Result<PgRecord, Error> {
        let mut decoder = codec::Decoder::new(bytes)?;
        let record = decoder.part()?;
        decoder.finish()?;
        Ok(record)
    }
}

/// The row a new task is stored as, ready when it is due at `now_ms`.
///
/// # Errors
/// `Storage` if the record cannot be encoded. Its place in a workflow (`NewTask::step`) is
/// stored by `store::pg::workflow`; its callbacks are in the record.
pub(crate) fn new_row(task: &NewTask, now_ms: u64) -> Result<NewRow, Error> {
    let opts = &task.opts;
    let links = task.step.as_ref().map_or_else(Vec::new, |step| {
        step.links
            .iter()
            .map(|link| PgLink {
                on_failure: link.on_failure,
                name: link.task.name.to_string(),
                queue: link.task.opts.queue.clone(),
                payload: link.task.payload.clone(),
                priority: link.task.opts.priority,
                max_retries: link.task.opts.max_retries,
                retry: link.task.opts.retry,
                limits: link.task.opts.limits,
            })
            .collect()
    });
    let record = PgRecord {
        retry: opts.retry,
        enqueued_at_ms: task.enqueued_at_ms,
        expires_at_ms: opts.expires_ms,
        origin: task.origin.clone(),
        time_limit_ms: opts.limits.time_limit_ms,
        soft_time_limit_ms: opts.limits.soft_time_limit_ms,
        limit_key: opts.keys.limit_key.clone(),
        links,
    };
    Ok(NewRow {
        name: task.name.to_string(),
        queue: opts.queue.clone(),
        priority: opts.priority,
        ready: opts.due_ms <= now_ms,
        due_at_ms: opts.due_ms,
        max_retries: opts.max_retries,
        expires_at_ms: opts.expires_ms,
        enqueued_at_ms: task.enqueued_at_ms,
        schedule: task.origin.as_ref().map(|o| o.schedule.clone()),
        payload: task.payload.clone(),
        limit_key: opts.keys.limit_key.clone(),
        record: record.encode()?,
        // A period runs from the enqueue.
        unique: opts.keys.unique.as_ref().map(|(key, until)| {
            let hold = match until {
                Unique::UntilFinal => Hold::Final,
                Unique::UntilStarted => Hold::Started,
                Unique::For(period) => {
                    Hold::Until(task.enqueued_at_ms.saturating_add(duration_ms(*period)))
                }
            };
            (key.clone(), hold)
        }),
    })
}
