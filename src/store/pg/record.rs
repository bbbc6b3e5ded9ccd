//! A task's record on PostgreSQL: what a task keeps in the `record` column — everything the
//! engine reads back but never indexes, filters or changes in SQL (those are columns:
//! name, queue, priority, state, due time, attempts, retries, owner, times, arguments,
//! output, errors). Stored as every record the library stores: postcard parts in a version
//! envelope (`store::codec`), so a later need appends a part and older records still read.

use serde::{Deserialize, Serialize};

use crate::clock::duration_ms;
use crate::error::Error;
use crate::model::Origin;
use crate::options::Unique;
use crate::retry::RetryPolicy;
use crate::store::codec;
use crate::store::pg::claim::{Hold, NewRow};
use crate::store::pg::migrate::not_yet;
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
/// `Storage` if the record cannot be encoded; `Unsupported` for what the PostgreSQL engine
/// does not store yet (a workflow step).
pub(crate) fn new_row(task: &NewTask, now_ms: u64) -> Result<NewRow, Error> {
    let opts = &task.opts;
    if task.step.is_some() {
        return Err(not_yet("a workflow (chain, group or chord)"));
    }
    let record = PgRecord {
        retry: opts.retry,
        enqueued_at_ms: task.enqueued_at_ms,
        expires_at_ms: opts.expires_ms,
        origin: task.origin.clone(),
        time_limit_ms: opts.limits.time_limit_ms,
        soft_time_limit_ms: opts.limits.soft_time_limit_ms,
        limit_key: opts.keys.limit_key.clone(),
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
