//! Lifecycle events ([`Spool::events`](crate::Spool::events)): what happened to tasks and
//! schedules, each sent once the change is durable, to every subscriber through a bounded
//! buffer of its own.
//!
//! The writer never waits for a subscriber: an event that finds a subscriber's buffer full is
//! dropped for that subscriber, and the next event that fits is preceded by
//! [`Event::Lagged`] with how many it missed. With no subscriber, the writer does nothing
//! more than look at a counter once per group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
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
    pub name: Arc<str>,
    /// Its queue.
    pub queue: Arc<str>,
    /// The attempt this is about (0 before the first one has started).
    pub attempt: u32,
    /// When it happened.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
}

/// Something that happened, sent after the change that made it true is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A task was stored (enqueued, fired by a schedule, or a callback or workflow step).
    Enqueued(TaskEvent),
    /// An attempt starts: it is claimed for a pool and the task is `Running` (sent before
    /// the pool gets the job; a job claimed ahead of a free thread runs a little later).
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
    /// A durable group's events arrive as one batch: one wake-up of the reader per group.
    rx: Receiver<Vec<Event>>,
    /// The batch being read, reversed (the next event last).
    batch: Vec<Event>,
    /// Events sent and not yet read (the batch's included), shared with the publisher.
    buffered: Arc<AtomicUsize>,
}

impl Events {
    /// The next event, waiting up to `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    /// `Closed` once the spool is closed and every event sent before is read.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        if self.batch.is_empty() {
            match self.rx.recv_timeout(timeout) {
                Ok(batch) => self.take(batch),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(Error::Closed),
            }
        }
        Ok(self.pop())
    }

    /// The next event if one is buffered.
    pub fn try_recv(&mut self) -> Option<Event> {
        if self.batch.is_empty() {
            let batch = self.rx.try_recv().ok()?;
            self.take(batch);
        }
        self.pop()
    }

    /// Every event as it comes, until the spool closes.
    pub fn iter(&mut self) -> impl Iterator<Item = Event> + '_ {
        std::iter::from_fn(move || {
            if self.batch.is_empty() {
                let batch = self.rx.recv().ok()?;
                self.take(batch);
            }
            self.pop()
        })
    }

    fn take(&mut self, mut batch: Vec<Event>) {
        batch.reverse();
        self.batch = batch;
    }

    fn pop(&mut self) -> Option<Event> {
        let event = self.batch.pop()?;
        self.buffered.fetch_sub(1, Ordering::Relaxed);
        Some(event)
    }
}

/// One subscriber: where its batches go, how many events it holds unread, and how many it
/// missed since its last delivered one.
struct Subscriber {
    tx: Sender<Vec<Event>>,
    capacity: usize,
    buffered: Arc<AtomicUsize>,
    missed: u64,
}

impl Subscriber {
    /// Delivers what fits of `events`, after the `Lagged` it is owed, as one batch; returns
    /// false once the subscriber is gone.
    fn send(&mut self, mut events: Vec<Event>) -> bool {
        // The receiver holds the other reference to the count.
        if Arc::strong_count(&self.buffered) < 2 {
            return false;
        }
        let room = self
            .capacity
            .saturating_sub(self.buffered.load(Ordering::Relaxed));
        if room == 0 {
            self.missed += events.len() as u64;
            return true;
        }
        if self.missed > 0 {
            events.insert(
                0,
                Event::Lagged {
                    missed: self.missed,
                },
            );
            self.missed = 0;
        }
        if events.len() > room {
            self.missed += (events.len() - room) as u64;
            events.truncate(room);
        }
        self.buffered.fetch_add(events.len(), Ordering::Relaxed);
        self.tx.send(events).is_ok()
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
        let (tx, rx) = crossbeam_channel::unbounded();
        let buffered = Arc::new(AtomicUsize::new(0));
        let mut subscriber = Subscriber {
            tx,
            capacity: buffer.max(1),
            buffered: buffered.clone(),
            missed: 0,
        };
        if let Some(event) = &*lock(&self.recovered) {
            subscriber.send(vec![event.clone()]);
        }
        let mut subscribers = lock(&self.subscribers);
        subscribers.push(subscriber);
        self.count.store(subscribers.len(), Ordering::Relaxed);
        Events {
            rx,
            batch: Vec::new(),
            buffered,
        }
    }

    /// Remembers what the open recovered, for every subscriber to hear first.
    pub(crate) fn set_recovered(&self, started: u64, unstarted: u64) {
        if started + unstarted > 0 {
            *lock(&self.recovered) = Some(Event::Recovered { started, unstarted });
        }
    }

    /// Sends `events` (a group's, in order) to every subscriber as one batch; forgets the
    /// subscribers that are gone. Never waits for one.
    pub(crate) fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut subscribers = lock(&self.subscribers);
        let last = subscribers.len().saturating_sub(1);
        let mut events = Some(events);
        let mut i = 0;
        subscribers.retain_mut(|s| {
            let batch = match i == last {
                true => events.take().unwrap_or_default(),
                false => events.clone().unwrap_or_default(),
            };
            i += 1;
            s.send(batch)
        });
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
        let mut slow = hub.subscribe(2);
        let mut fast = hub.subscribe(100);
        hub.publish((1..=5).map(enqueued).collect());
        assert_eq!(fast.iter().take(5).count(), 5);
        assert_eq!(slow.try_recv(), Some(enqueued(1)));
        assert_eq!(slow.try_recv(), Some(enqueued(2)));
        assert_eq!(slow.try_recv(), None);
        hub.publish(vec![enqueued(6)]);
        assert_eq!(slow.try_recv(), Some(Event::Lagged { missed: 3 }));
        assert_eq!(slow.try_recv(), Some(enqueued(6)));
        // With one free slot, the owed Lagged takes it and the event is missed in turn (9,
        // then 10).
        hub.publish(vec![enqueued(7), enqueued(8), enqueued(9)]);
        assert_eq!(slow.try_recv(), Some(enqueued(7)));
        hub.publish(vec![enqueued(10)]);
        assert_eq!(slow.try_recv(), Some(enqueued(8)));
        assert_eq!(slow.try_recv(), Some(Event::Lagged { missed: 1 }));
        assert_eq!(slow.try_recv(), None);
        hub.publish(vec![enqueued(11)]);
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
        hub.publish(vec![enqueued(1)]);
        assert!(!hub.active());
    }
}
