//! The spool's side of its control socket (see `crate::serve`): each call a client sends is
//! the spool's own verb, on a weak handle, so the socket never keeps the spool open.

use std::sync::Weak;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::Error;
use crate::events::Events;
use crate::protocol::{Call, MAX_WAIT_MS};
use crate::result::wait_output;
use crate::serve::Owner;
use crate::shared::{Shared, Spool};

/// The spool, as its control socket reaches it.
pub(crate) struct Remote(pub(crate) Weak<Shared>);

impl Remote {
    fn spool(&self) -> Option<Spool> {
        self.0.upgrade().map(|shared| Spool { shared })
    }
}

impl Owner for Remote {
    fn answer(&self, call: Call) -> Option<Result<Value, Error>> {
        if let Call::Wait {
            task,
            name,
            timeout_ms,
        } = call
        {
            // Waits on the weak handle, as a `TaskHandle` does: a waiting client never keeps
            // the spool open.
            let waiters = self.0.upgrade()?.waiters.clone();
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(MAX_WAIT_MS));
            let output = wait_output(&self.0, &waiters, task, name.as_deref(), deadline);
            return Some(output.and_then(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Json(format!("the stored result does not decode: {e}")))
            }));
        }
        Some(answer(&self.spool()?, call))
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
    fn json(value: impl serde::Serialize) -> Result<Value, Error> {
        serde_json::to_value(value).map_err(|e| Error::Json(format!("cannot encode a reply: {e}")))
    }
    match call {
        Call::Stats => json(spool.stats()?),
        Call::Status { task } => json(spool.status(task)?),
        Call::Tasks { filter, paging } => json(spool.tasks(&filter, &paging)?),
        Call::Schedules => json(spool.schedules()?),
        Call::Enqueue {
            name,
            arguments,
            options,
        } => json(spool.enqueue_json(&name, arguments, options)?),
        Call::EnqueueMany {
            name,
            arguments,
            options,
        } => json(spool.enqueue_many_json(&name, arguments, options)?),
        Call::Revoke { task } => json(spool.revoke(task)?),
        Call::RevokeWhere { filter } => json(spool.revoke_where(filter)?),
        Call::Retry { task } => json(spool.retry(task)?),
        Call::Forget { task } => json(spool.forget(task)?),
        Call::WorkflowStatus { task } => json(spool.workflow_status(task)?),
        Call::PauseSchedule { schedule } => json(spool.pause_schedule(&schedule)?),
        Call::ResumeSchedule { schedule } => json(spool.resume_schedule(&schedule)?),
        Call::PauseQueue { queue } => json(spool.pause_queue(&queue)?),
        Call::ResumeQueue { queue } => json(spool.resume_queue(&queue)?),
        Call::RetryWhere { filter } => json(spool.retry_where(filter)?),
        Call::RevokeWorkflow { task } => json(spool.revoke_workflow(task)?),
        Call::Unschedule { schedule } => json(spool.unschedule(&schedule)?),
        Call::Limit { limit } => json(spool.limit(limit)?),
        Call::RemoveLimit { target } => json(spool.remove_limit(target)?),
        Call::Limits => json(spool.limits()?),
        Call::Flush => json(spool.flush()?),
        Call::Checkpoint => json(spool.checkpoint()?),
        Call::Subscribe { .. } | Call::Wait { .. } => Err(Error::Protocol(
            "subscribe and wait are answered apart".into(),
        )),
    }
}
