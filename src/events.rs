//! Lifecycle events ([`Spool::events`](crate::Spool::events)): what happened to tasks and
//! schedules, each sent once the change is durable, to every subscriber through a bounded
//! buffer of its own.
//!
//! The writer never waits for a subscriber: an event that finds a subscriber's buffer full is
//! dropped for that subscriber, and the next event that fits is preceded by
//! [`Event::Lagged`] with how many it missed. With no subscriber, the writer does nothing
//! more than look at a counter once per group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::{TaskId, rfc3339};

/// How many events a subscriber's buffer holds by default ([`Spool::events`](crate::Spool::events)).
pub const DEFAULT_EVENT_BUFFER: usize = 8_192;

/// The task an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskEvent {
    /// The task's id.
    pub id: TaskId,
    /// Its task name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// The attempt this is about (0 before the first one has started).
    pub attempt: u32,
    /// When it happened.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
}

/// Something that happened, sent after the change that made it true is durable (a task's
/// start: once its attempt is noted as started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A task was stored (enqueued, fired by a schedule, or a callback or workflow step).
    Enqueued(TaskEvent),
    /// An attempt's handler starts.
    Started(TaskEvent),
    /// The task succeeded.
    Succeeded(TaskEvent),
    /// The task failed for good (its last attempt's error).
    Failed {
        /// The task.
        #[serde(flatten)]
        task: TaskEvent,
        /// The last attempt's error message.
        error: String,
    },
    /// An attempt failed and the task runs again later.
    Retried {
        /// The task.
        #[serde(flatten)]
        task: TaskEvent,
        /// The attempt's error message.
        error: String,
        /// When it is due again.
        #[serde(with = "rfc3339")]
        due_at: SystemTime,
    },
    /// The task expired before it started.
    Expired(TaskEvent),
    /// The task was revoked.
    Revoked(TaskEvent),
    /// A periodic schedule fired.
    ScheduleFired {
        /// The schedule's name.
        schedule: String,
        /// The fire time it stands for.
        #[serde(with = "rfc3339")]
        fire_time: SystemTime,
        /// The task it enqueued.
        task: TaskId,
    },
    /// The open found attempts a dead process left running and gave them back (sent first
    /// to every subscriber of a spool whose open did).
    Recovered {
        /// Attempts that had started: each counted as a lost attempt.
        started: u64,
        /// Attempts that were only claimed ahead: given back as they were.
        unstarted: u64,
    },
    /// This subscriber's buffer was full and it missed this many events, just before this
    /// one.
    Lagged {
        /// How many events it missed.
        missed: u64,
    },
}

/// A subscription to a spool's events ([`Spool::events`](crate::Spool::events)). Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Events {
    rx: Receiver<Event>,
}

impl Events {
    /// The next event, waiting up to `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    /// `Closed` once the spool is closed and every event sent before is read.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>, Error> {
        match self.rx.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// The next event if one is buffered.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Every event as it comes, until the spool closes.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.iter()
    }
}

/// One subscriber: its buffer, and how many events it missed since its last delivered one.
struct Subscriber {
    tx: Sender<Event>,
    missed: u64,
}

impl Subscriber {
    /// Delivers `event`, after the `Lagged` it is owed; returns false once the subscriber is
    /// gone.
    fn send(&mut self, event: &Event) -> bool {
        if self.missed > 0 {
            let lagged = Event::Lagged {
                missed: self.missed,
            };
            match self.tx.try_send(lagged) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Where events go: the subscribers of one spool.
#[derive(Default)]
pub(crate) struct EventHub {
    subscribers: Mutex<Vec<Subscriber>>,
    /// How many there are, read without the lock by every group.
    count: AtomicUsize,
    /// What the open recovered, told first to every subscriber.
    recovered: Mutex<Option<Event>>,
}

impl EventHub {
    /// Whether anyone listens (the writer collects events only then).
    pub(crate) fn active(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    /// A new subscriber with a buffer of `buffer` events (at least 1).
    pub(crate) fn subscribe(&self, buffer: usize) -> Events {
        let (tx, rx) = crossbeam_channel::bounded(buffer.max(1));
        let mut subscriber = Subscriber { tx, missed: 0 };
        if let Some(event) = &*lock(&self.recovered) {
            subscriber.send(event);
        }
        let mut subscribers = lock(&self.subscribers);
        subscribers.push(subscriber);
        self.count.store(subscribers.len(), Ordering::Relaxed);
        Events { rx }
    }

    /// Remembers what the open recovered, for every subscriber to hear first.
    pub(crate) fn set_recovered(&self, started: u64, unstarted: u64) {
        if started + unstarted > 0 {
            *lock(&self.recovered) = Some(Event::Recovered { started, unstarted });
        }
    }

    /// Sends `events` to every subscriber, in order; forgets the subscribers that are gone.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = Event>) {
        let mut subscribers = lock(&self.subscribers);
        for event in events {
            subscribers.retain_mut(|s| s.send(&event));
        }
        self.count.store(subscribers.len(), Ordering::Relaxed);
    }

    /// Closes every subscription: their receivers read what is buffered, then `Closed`.
    pub(crate) fn close(&self) {
        lock(&self.subscribers).clear();
        self.count.store(0, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueued(id: u64) -> Event {
        Event::Enqueued(TaskEvent {
            id: TaskId(id),
            name: "t".into(),
            queue: "default".into(),
            attempt: 0,
            at: SystemTime::UNIX_EPOCH,
        })
    }

    /// A full buffer drops events for that subscriber only, and the next event that fits
    /// comes after a `Lagged` that counts them; the publisher never waits.
    #[test]
    fn a_slow_subscriber_misses_events_and_hears_how_many() {
        let hub = EventHub::default();
        let slow = hub.subscribe(2);
        let fast = hub.subscribe(100);
        hub.publish((1..=5).map(enqueued));
        assert_eq!(fast.iter().take(5).count(), 5);
        assert_eq!(slow.try_recv(), Some(enqueued(1)));
        assert_eq!(slow.try_recv(), Some(enqueued(2)));
        assert_eq!(slow.try_recv(), None);
        hub.publish([enqueued(6)]);
        assert_eq!(slow.try_recv(), Some(Event::Lagged { missed: 3 }));
        assert_eq!(slow.try_recv(), Some(enqueued(6)));
        // With one free slot, the owed Lagged takes it and the event is missed in turn (9,
        // then 10).
        hub.publish([enqueued(7), enqueued(8), enqueued(9)]);
        assert_eq!(slow.try_recv(), Some(enqueued(7)));
        hub.publish([enqueued(10)]);
        assert_eq!(slow.try_recv(), Some(enqueued(8)));
        assert_eq!(slow.try_recv(), Some(Event::Lagged { missed: 1 }));
        assert_eq!(slow.try_recv(), None);
        hub.publish([enqueued(11)]);
        assert_eq!(slow.try_recv(), Some(Event::Lagged { missed: 1 }));
        assert_eq!(slow.try_recv(), Some(enqueued(11)));
    }

    /// A dropped subscription is forgotten at the next publish.
    #[test]
    fn a_dropped_subscriber_is_forgotten() {
        let hub = EventHub::default();
        let events = hub.subscribe(4);
        assert!(hub.active());
        drop(events);
        hub.publish([enqueued(1)]);
        assert!(!hub.active());
    }
}
