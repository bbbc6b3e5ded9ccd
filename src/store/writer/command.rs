//! The commands callers and workers send to the writer: one variant per request, each with
//! the reply its caller waits on.

use crossbeam_channel::Sender;

use crate::error::Error;
use crate::model::{PoolId, Revoke, Revoked, TaskId};
use crate::query::TaskFilter;
use crate::store::verbs::{
    Completion, Enqueued, FlowOp, Job, NewTask, PartOp, PoolSpec, ScheduleOp, Serves,
};
use crate::sync::Promise;

/// Where the writer sends the answer to one request.
pub(crate) type Reply<T> = Promise<Result<T, Error>>;

/// A request to the writer. Adding one means: its variant here, its apply
/// (`Writer::apply`), and the value its caller hears — nothing else.
pub(crate) enum Command {
    /// Store new tasks; reply with their ids once durable.
    Enqueue {
        tasks: Vec<NewTask>,
        reply: Reply<Vec<Enqueued>>,
    },
    /// An attempt finished; `pool` has a thread free again.
    Complete {
        pool: Option<PoolId>,
        completion: Completion,
    },
    /// A claimed attempt that never started goes back to the ready index.
    Release {
        pool: PoolId,
        id: TaskId,
        attempt: u32,
    },
    /// A pool starts serving.
    Register {
        pool: PoolSpec,
        jobs: Sender<Job>,
        reply: Reply<()>,
    },
    /// A pool stops: no more claims for it.
    Unregister { pool: PoolId, reply: Reply<()> },
    /// Claim due tasks once, for a synchronous drain on the caller's thread.
    Claim {
        serves: Serves,
        max: usize,
        reply: Reply<Vec<Job>>,
    },
    /// Declare, remove, pause or resume a periodic schedule; replies whether it changed.
    Schedule { op: ScheduleOp, reply: Reply<bool> },
    /// Declare or remove a limit, pause or resume a queue; replies whether it changed.
    Flow { op: FlowOp, reply: Reply<bool> },
    /// One step of storing a chord in parts.
    Parts { op: PartOp, reply: Reply<u64> },
    /// Revoke a task; reply with what was done.
    Revoke { id: TaskId, reply: Reply<Revoke> },
    /// Revoke every unfinished task a filter matches.
    RevokeWhere {
        filter: TaskFilter,
        reply: Reply<Revoked>,
    },
    /// Revoke every unfinished task of a workflow.
    RevokeWorkflow { id: TaskId, reply: Reply<Revoked> },
    /// Run again every failed, expired or revoked task a filter matches.
    RetryWhere {
        filter: TaskFilter,
        reply: Reply<u64>,
    },
    /// Run a finished task again.
    Retry { id: TaskId, reply: Reply<()> },
    /// Delete a finished task.
    Forget { id: TaskId, reply: Reply<()> },
    /// Reply once everything sent before is committed (and synced, in buffered mode).
    Sync { reply: Reply<()> },
    /// Reply once everything sent before is in the queue file itself, the log started over.
    Checkpoint { reply: Reply<()> },
    /// The manual clock moved, or a caller's own group changed the next wake-up.
    Tick,
    /// Commit what is pending and exit.
    Shutdown,
}

impl Command {
    pub(crate) fn is_enqueue(&self) -> bool {
        matches!(self, Command::Enqueue { .. })
    }

    /// Whether a caller that finds the writer idle may run this command's group itself
    /// (see `Writer::lead`): a request whose caller waits for its answer, and whose order
    /// against commands other threads sent just before does not matter.
    pub(crate) fn may_lead(&self) -> bool {
        matches!(
            self,
            Command::Enqueue { .. }
                | Command::Revoke { .. }
                | Command::RevokeWhere { .. }
                | Command::RevokeWorkflow { .. }
                | Command::Retry { .. }
                | Command::RetryWhere { .. }
                | Command::Forget { .. }
                | Command::Flow { .. }
                | Command::Parts { .. }
        )
    }

    /// How much work the command brings to a group: its tasks for an enqueue, else 1.
    pub(crate) fn size(&self) -> usize {
        match self {
            Command::Enqueue { tasks, .. } => tasks.len(),
            Command::Parts {
                op: PartOp::Part { tasks, .. },
                ..
            } => tasks.len(),
            _ => 1,
        }
    }
}
