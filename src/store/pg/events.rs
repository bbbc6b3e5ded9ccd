//! Lifecycle events on PostgreSQL, across processes: while any process has subscribers (a
//! row each in `event_listeners`), every change notifies its events on the schema's events
//! channel, as JSON, in the statement that makes it — so they are heard when it commits, in
//! commit order, by every process; while none has, the statements notify nothing (the
//! check is one look at that table, in the same statement; `notify` has that SQL). Each
//! process's events thread turns what it hears into [`Event`]s for its own subscribers.
//!
//! A call that changes something returns once this process's subscribers have its events
//! (as on the file engine): it then notifies a fence of its own on the channel, which
//! arrives after them, and waits for the events thread to hear it.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::events::{Event, TaskEvent};
use crate::model::TaskId;
use crate::store::pg::claim::Listener;
use crate::store::pg::migrate::pg;
use crate::store::pg::sql::Sql;
use crate::store::pg::state::Inner;

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
