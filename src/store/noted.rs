//! The events a transaction notes (see `crate::events`; `Tx::note` in `transitions`):
//! collected only while someone subscribes, and turned into [`Event`]s, with their queue and
//! task names, once the group is durable.

use crate::clock::to_system_time;
use crate::events::{Event, TaskEvent};
use crate::model::TaskId;
use crate::store::catalog::Catalog;
use crate::store::record::TaskRecord;

/// What happened to a task.
#[derive(Debug)]
pub(crate) enum What {
    Enqueued,
    Started,
    Succeeded,
    Failed(String),
    Retried { error: String, due_ms: u64 },
    Expired,
    Revoked,
    Fired { schedule: String, fire_ms: u64 },
}

/// One noted event: what, of which task (its queue and name by id), when.
#[derive(Debug)]
pub(crate) struct Noted {
    pub what: What,
    pub id: u64,
    pub attempt: u32,
    pub queue: u32,
    pub name: u32,
    pub at_ms: u64,
}

impl Noted {
    /// What `what` of `rec` (task `id`) at `at_ms` is.
    pub(crate) fn of(what: What, id: u64, rec: &TaskRecord, at_ms: u64) -> Noted {
        Noted {
            what,
            id,
            attempt: rec.attempts,
            queue: rec.queue,
            name: rec.name_id,
            at_ms,
        }
    }

    /// The public event, with the queue's name from `catalog`.
    pub(crate) fn into_event(self, catalog: &Catalog) -> Event {
        let task = TaskEvent {
            id: TaskId(self.id),
            name: catalog.names.name(self.name),
            queue: catalog.queues.name(self.queue),
            attempt: self.attempt,
            at: to_system_time(self.at_ms),
        };
        match self.what {
            What::Enqueued => Event::Enqueued(task),
            What::Started => Event::Started(task),
            What::Succeeded => Event::Succeeded(task),
            What::Failed(error) => Event::Failed { task, error },
            What::Retried { error, due_ms } => Event::Retried {
                task,
                error,
                due_at: to_system_time(due_ms),
            },
            What::Expired => Event::Expired(task),
            What::Revoked => Event::Revoked(task),
            What::Fired { schedule, fire_ms } => Event::ScheduleFired {
                schedule,
                fire_time: to_system_time(fire_ms),
                task: task.id,
            },
        }
    }
}
