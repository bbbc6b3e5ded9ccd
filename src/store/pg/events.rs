//! Lifecycle events on PostgreSQL, across processes: while any process has subscribers (a
//! row each in `event_listeners`), every change notifies its events on the schema's events
//! channel, as JSON, in the statement that makes it — so they are heard when it commits, in
//! commit order, by every process; while none has, the statements notify nothing (the
//! check is one look at that table, in the same statement). Each process's events thread
//! turns what it hears into [`Event`]s for its own subscribers.
//!
//! A call that changes something returns once this process's subscribers have its events
//! (as on the file engine): it then notifies a fence of its own on the channel, which
//! arrives after them, and waits for the events thread to hear it.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::events::{Event, TaskEvent};
use crate::model::TaskId;
use crate::store::pg::claim::Listener;
use crate::store::pg::migrate::pg;
use crate::store::pg::sql::Sql;
use crate::store::pg::state::Inner;

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

/// Notifies, if anyone listens, the event `kind` (`retried`: with its last error) of each
/// task of `ids`, in id order, at `now_ms`.
///
/// # Errors
/// `Storage` on a failure of the server.
pub(crate) fn tell(
    db: &mut impl Sql,
    schema: &crate::store::pg::migrate::SchemaName,
    kind: &str,
    ids: &[i64],
    now_ms: u64,
) -> Result<(), crate::error::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let q = schema.quoted();
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let event = task_event(&q, "t", "$3::text", "$4::int8", kind == "retried");
    db.execute(
        &format!(
            "SELECT pg_notify($1, {event}) FROM (
                 SELECT * FROM {q}.tasks WHERE id = ANY($2) ORDER BY id) AS t
             WHERE {listening}",
            listening = listening(&q)
        ),
        &[&schema.events_channel(), &ids, &kind, &now],
    )
    .map_err(pg("notify events"))?;
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

/// An event as a statement notified it.
#[derive(Debug, Deserialize)]
struct Told {
    k: String,
    id: Option<u64>,
    name: Option<String>,
    queue: Option<String>,
    attempt: Option<u32>,
    at: Option<u64>,
    error: Option<String>,
    due: Option<u64>,
    schedule: Option<String>,
    fire: Option<u64>,
    task: Option<u64>,
}

fn time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl Told {
    /// The public event; `None` for a kind this build does not know (a newer one's).
    fn into_event(self) -> Option<Event> {
        let at = time(self.at.unwrap_or(0));
        if self.k == "fired" {
            return Some(Event::ScheduleFired {
                schedule: self.schedule.unwrap_or_default(),
                fire_time: time(self.fire.unwrap_or(0)),
                task: TaskId(self.task?),
            });
        }
        let task = TaskEvent {
            id: TaskId(self.id?),
            name: self.name.unwrap_or_default().into(),
            queue: self.queue.unwrap_or_default().into(),
            attempt: self.attempt.unwrap_or(0),
            at,
        };
        let error = self.error.unwrap_or_default();
        Some(match self.k.as_str() {
            "enqueued" => Event::Enqueued(task),
            "started" => Event::Started(task),
            "succeeded" => Event::Succeeded(task),
            "failed" => Event::Failed { task, error },
            "retried" => Event::Retried {
                task,
                error,
                due_at: time(self.due.unwrap_or(0)),
            },
            "expired" => Event::Expired(task),
            "revoked" => Event::Revoked(task),
            _ => return None,
        })
    }
}

/// Fences this process's subscribers wait behind: the last asked and the last heard.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    numbers: Mutex<(u64, u64)>,
    heard: Condvar,
}

/// How long a call waits for its fence before it returns all the same (the events thread
/// reconnecting, say): its events come later.
const FENCE_WAIT: Duration = Duration::from_secs(2);

impl Inner {
    /// The fence notifications of this engine begin so (its process's first lease).
    fn fence_tag(&self) -> String {
        format!("fence:{}:", self.fence_owner)
    }

    /// A new subscription: this process listens from now on (its row in `event_listeners`,
    /// written before the subscription is returned, so every change after it is told).
    pub(crate) fn subscribe_events(&self, buffer: usize) -> crate::events::Events {
        let mut listening = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let events = self.hub.subscribe(buffer);
        if !*listening {
            let q = self.schema.quoted();
            let registered = self.db().execute(
                &format!(
                    "INSERT INTO {q}.event_listeners (process) VALUES ($1) ON CONFLICT DO NOTHING"
                ),
                &[&(self.process() as i64)],
            );
            match registered {
                Ok(_) => *listening = true,
                Err(e) => tracing::warn!(error = %pg("subscribe to events")(e),
                    "the events of changes will not be heard"),
            }
        }
        events
    }

    /// Returns once this process's subscribers have the events of every change committed
    /// before the call (at once when it has none).
    pub(crate) fn settle_events(&self) {
        if !self.hub.active() {
            return;
        }
        let n = {
            let mut numbers = self
                .fences
                .numbers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            numbers.0 += 1;
            numbers.0
        };
        let fence = format!("{}{n}", self.fence_tag());
        let told = self.db().execute(
            "SELECT pg_notify($1, $2)",
            &[&self.schema.events_channel(), &fence],
        );
        if told.is_err() {
            return;
        }
        let numbers = self
            .fences
            .numbers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .fences
            .heard
            .wait_timeout_while(numbers, FENCE_WAIT, |numbers| numbers.1 < n);
    }

    /// The events thread's work: what `listener` hears goes to this process's subscribers,
    /// a batch at a time, until the engine closes; a fence of this engine's is marked heard.
    /// Once no subscriber is left, the process stops listening (its row goes).
    pub(crate) fn tell_events(&self, listener: &mut Listener) {
        let tag = self.fence_tag();
        while !self.closed.load(Ordering::SeqCst) {
            let mut batch = Vec::new();
            let mut heard = None;
            let mut wait = Duration::from_secs(3600);
            loop {
                match listener.next(wait) {
                    Ok(Some(payload)) => {
                        if let Some(n) = payload.strip_prefix(&tag) {
                            heard = n.parse::<u64>().ok().or(heard);
                        } else if !payload.starts_with("fence:") && !payload.is_empty() {
                            match serde_json::from_str::<Told>(&payload) {
                                Ok(told) => batch.extend(told.into_event()),
                                Err(e) => tracing::debug!(error = %e, "an event not understood"),
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "the events listener lost its connection");
                        if !self.relisten(listener) {
                            return;
                        }
                        break;
                    }
                }
                // Take what has arrived with it, then deliver.
                wait = Duration::ZERO;
            }
            self.hub.publish(batch);
            if let Some(n) = heard {
                let mut numbers = self
                    .fences
                    .numbers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                numbers.1 = numbers.1.max(n);
                self.fences.heard.notify_all();
            }
            let mut listening = self
                .listening
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *listening && !self.hub.active() {
                let q = self.schema.quoted();
                let _ = self.db().execute(
                    &format!("DELETE FROM {q}.event_listeners WHERE process = $1"),
                    &[&(self.process() as i64)],
                );
                *listening = false;
            }
        }
    }

    /// Connects the events listener again, every 250 ms until it works (true) or the engine
    /// closes (false). Events notified meanwhile are lost.
    fn relisten(&self, listener: &mut Listener) -> bool {
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
            if listener.reconnect().is_ok() {
                return true;
            }
        }
    }
}
