//! Follow-ups from a handler: tasks a running attempt enqueues through its [`Context`],
//! stored in the same transaction as the attempt's success — so they exist exactly when the
//! success does (the embedded answer to "enqueue after commit" races).

use crate::context::Context;
use crate::error::Error;
use crate::options::Options;
use crate::spool::new_task;
use crate::task::Task;

impl Context {
    /// Enqueues `task` as a follow-up of this attempt: it is stored in the same transaction
    /// as the attempt's success, and only then. If the attempt fails, is retried, is
    /// revoked, or its process dies first, nothing was enqueued — so a retried handler never
    /// enqueues a follow-up twice. (For a task that must exist at once, whatever the attempt
    /// does, use [`Context::spool`] and enqueue there.)
    ///
    /// The task is validated and encoded now, so a bad option or argument is this call's
    /// error; its id is known once the success is stored (a unique key makes it a duplicate
    /// as any enqueue).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use serde::{Deserialize, Serialize};
    /// # use taskspool::{Context, Spool, Task, TaskError};
    /// #[derive(Serialize, Deserialize)]
    /// struct Invoice { customer: u64 }
    /// #[derive(Serialize, Deserialize)]
    /// struct SendEmail { customer: u64 }
    ///
    /// impl Task for Invoice {
    ///     const NAME: &'static str = "billing.invoice";
    ///     type Output = ();
    ///     fn run(self, ctx: &Context) -> Result<(), TaskError> {
    ///         // ... create the invoice ...
    ///         ctx.enqueue(SendEmail { customer: self.customer })?;  // only if this succeeds
    ///         Ok(())
    ///     }
    /// }
    /// # impl Task for SendEmail {
    /// #     const NAME: &'static str = "billing.email";
    /// #     type Output = ();
    /// #     fn run(self, _: &Context) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// # let spool = Spool::temporary()?;
    /// # spool.enqueue(Invoice { customer: 7 })?;
    /// # spool.worker().register::<Invoice>().drain()?;
    /// # assert_eq!(spool.worker().register::<SendEmail>().drain()?.succeeded, 1);
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidOption` or `Json` for the task, as [`Spool::enqueue`](crate::Spool::enqueue);
    /// [`Error::AttemptEnded`] on a clone of the context kept past the handler's return;
    /// [`Error::Closed`] if the spool was closed while the task ran.
    pub fn enqueue<T: Task>(&self, task: T) -> Result<(), Error> {
        self.enqueue_with(task, Options::new())
    }

    /// As [`enqueue`](Self::enqueue), with options.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_with<T: Task>(&self, task: T, options: Options) -> Result<(), Error> {
        let shared = self.env.spool.upgrade().ok_or(Error::Closed)?;
        self.push_follow_ups([new_task(task, options, shared.clock.now_ms())?])
    }
}
