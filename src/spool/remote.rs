//! The spool's side of its control socket (see `crate::serve`): each call a client sends is
//! the spool's own verb, on a weak handle, so the socket never keeps the spool open.

use std::sync::Weak;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::Error;
use crate::events::Events;
use crate::model::TaskId;
use crate::protocol::{Call, MAX_WAIT_MS, to_json};
use crate::result::{decode_output, wait_output};
use crate::serve::{Done, Owner};
use crate::shared::{Shared, Spool};

/// The spool, as its control socket reaches it.
pub(crate) struct Remote(pub(crate) Weak<Shared>);

impl Remote {
    fn spool(&self) -> Option<Spool> {
        self.0.upgrade().map(|shared| Spool { shared })
    }
}

/// The most tasks of one `enqueue_many` answered from the writer's thread: the reply (their
/// ids) is then small enough to go out at once (see `serve`). A larger one is answered by
/// the connection's thread, which waits for the commit.
const MAX_DEFERRED_TASKS: usize = 1_000;

impl Owner for Remote {
    fn answer(&self, call: Call, done: Done) {
        match call {
            Call::Wait {
                task,
                name,
                timeout_ms,
            } => {
                // Waits on the weak handle, as a `TaskHandle` does: a waiting client never
                // keeps the spool open.
                let Some(waiters) = self.0.upgrade().map(|shared| shared.waiters.clone()) else {
                    return done(None);
                };
                let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
                let output = wait_output(&self.0, &waiters, task, name.as_deref(), deadline);
                done(Some(output.and_then(|bytes| decode_output(&bytes))));
            }
            Call::Enqueue {
                name,
                arguments,
                options,
            } => {
                let Some(spool) = self.spool() else {
                    return done(None);
                };
                let then = move |ids: Result<Vec<TaskId>, Error>| {
                    done(Some(
                        ids.and_then(|ids| to_json(ids.first().ok_or(Error::Closed)?)),
                    ));
                };
                spool.enqueue_many_json_then(
                    &name,
                    std::slice::from_ref(&arguments),
                    options,
                    Box::new(then),
                );
            }
            Call::EnqueueMany {
                name,
                arguments,
                options,
            } if arguments.len() <= MAX_DEFERRED_TASKS => {
                let Some(spool) = self.spool() else {
                    return done(None);
                };
                let then = move |ids: Result<Vec<TaskId>, Error>| done(Some(ids.and_then(to_json)));
                spool.enqueue_many_json_then(&name, &arguments, options, Box::new(then));
            }
            call => match self.spool() {
                Some(spool) => done(Some(answer(&spool, call))),
                None => done(None),
            },
        }
    }

    fn subscribe(&self, buffer: usize) -> Option<Events> {
        Some(self.spool()?.events_with_buffer(buffer))
    }

    fn closed(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// Runs one call on the spool; its value as JSON.
fn answer(spool: &Spool, call: Call) -> Result<Value, Error> {
    match call {
        Call::Stats => to_json(spool.stats()?),
        Call::Status { task } => to_json(spool.status(task)?),
        Call::Tasks { filter, paging } => to_json(spool.tasks(&filter, &paging)?),
        Call::Schedules => to_json(spool.schedules()?),
        Call::Enqueue {
            name,
            arguments,
            options,
        } => to_json(spool.enqueue_json(&name, arguments, options)?),
        Call::EnqueueMany {
            name,
            arguments,
            options,
        } => to_json(spool.enqueue_many_json(&name, arguments, options)?),
        Call::Revoke { task } => to_json(spool.revoke(task)?),
        Call::RevokeWhere { filter } => to_json(spool.revoke_where(filter)?),
        Call::Retry { task } => to_json(spool.retry(task)?),
        Call::Forget { task } => to_json(spool.forget(task)?),
        Call::WorkflowStatus { task } => to_json(spool.workflow_status(task)?),
        Call::PauseSchedule { schedule } => to_json(spool.pause_schedule(&schedule)?),
        Call::ResumeSchedule { schedule } => to_json(spool.resume_schedule(&schedule)?),
        Call::PauseQueue { queue } => to_json(spool.pause_queue(&queue)?),
        Call::ResumeQueue { queue } => to_json(spool.resume_queue(&queue)?),
        Call::RetryWhere { filter } => to_json(spool.retry_where(filter)?),
        Call::RevokeWorkflow { task } => to_json(spool.revoke_workflow(task)?),
        Call::Unschedule { schedule } => to_json(spool.unschedule(&schedule)?),
        Call::RunScheduleNow { schedule } => to_json(spool.run_schedule_now(&schedule)?),
        Call::Limit { limit } => to_json(spool.limit(limit)?),
        Call::RemoveLimit { target } => to_json(spool.remove_limit(target)?),
        Call::Limits => to_json(spool.limits()?),
        Call::Flush => to_json(spool.flush()?),
        Call::Checkpoint => to_json(spool.checkpoint()?),
        Call::Subscribe { .. } | Call::Wait { .. } => Err(Error::Protocol(
            "subscribe and wait are answered apart".into(),
        )),
    }
}
