//! Flow control on a spool: rate and concurrency limits on task types and queues, and paused
//! queues — stored in the file and held by the writer across every pool (see
//! [`Limit`](crate::Limit)).

use crate::error::Error;
use crate::flow::{Limit, LimitTarget};
use crate::options::check_queue_name;
use crate::shared::Spool;
use crate::store::FlowOp;

impl Spool {
    /// Declares the limits on a task type or a queue, replacing any declared before on the
    /// same target (an upsert, like schedules); returns whether anything changed. Stored in
    /// the file: the limits hold after a restart, and from the next claim on for every pool
    /// of the spool (Celery's `rate_limit` control command, but global and lasting).
    ///
    /// A task a limit holds back stays `Ready` and takes no worker slot; tasks of other types
    /// and queues keep flowing, and the writer wakes when the next one may go. A limit on a
    /// queue or a task type nothing uses yet is accepted (queues exist once named) and holds
    /// when tasks arrive.
    ///
    /// ```
    /// use taskspool::{Limit, Rate, Spool};
    ///
    /// let spool = Spool::temporary()?;
    /// assert!(spool.limit(Limit::queue("mail").rate("10/s".parse::<Rate>()?))?);
    /// assert!(spool.limit(Limit::task_named("export").concurrency(4)?.per_key(2)?)?);
    /// assert_eq!(spool.limits()?.len(), 2);
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidOption` for a limit that sets nothing, a `per_key` limit on a queue, or a bad
    /// queue name (nothing is written); `DiskFull`/`Storage` if the change could not be made
    /// durable.
    pub fn limit(&self, limit: Limit) -> Result<bool, Error> {
        if let LimitTarget::Queue(queue) = &limit.target {
            check_queue_name(queue)?;
        }
        limit.validate()?;
        self.shared.engine.flow(FlowOp::Limit(limit))
    }

    /// Removes the limits on a task type or a queue (a queue's pause stays); returns whether
    /// it had any. Tasks it held back go from the next claim on.
    ///
    /// # Errors
    /// `DiskFull`/`Storage` if the change could not be made durable.
    pub fn remove_limit(&self, target: LimitTarget) -> Result<bool, Error> {
        self.shared.engine.flow(FlowOp::Unlimit(target))
    }

    /// The declared limits: task types first, then queues, each by name.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    pub fn limits(&self) -> Result<Vec<Limit>, Error> {
        // The engine lists them in this order (the `flow` table's key order).
        self.shared.engine.limits()
    }

    /// Pauses a queue: nothing is claimed from it until [`resume_queue`](Self::resume_queue),
    /// by any pool, also after a restart (the pause is stored in the file). Its tasks still
    /// arrive, and still expire at their expiry; running ones finish. [`Spool::stats`] shows
    /// the pause. Returns whether the queue was running.
    ///
    /// # Errors
    /// `InvalidOption` for a bad queue name; `DiskFull`/`Storage` if the change could not be
    /// made durable.
    pub fn pause_queue(&self, queue: &str) -> Result<bool, Error> {
        self.set_paused(queue, true)
    }

    /// Resumes a paused queue; returns whether it was paused.
    ///
    /// # Errors
    /// As [`pause_queue`](Self::pause_queue).
    pub fn resume_queue(&self, queue: &str) -> Result<bool, Error> {
        self.set_paused(queue, false)
    }

    fn set_paused(&self, queue: &str, paused: bool) -> Result<bool, Error> {
        check_queue_name(queue)?;
        self.shared.engine.flow(FlowOp::Pause {
            queue: queue.to_string(),
            paused,
        })
    }
}
