//! Enqueueing from async code (feature `tokio`): the same enqueues, awaited instead of
//! blocking. The writer thread answers through a one-shot, and the caller never runs the
//! group (nor its sync) on its own thread, which is a runtime's.

use crate::error::Error;
use crate::options::Options;
use crate::result::TaskHandle;
use crate::shared::Spool;
use crate::spool::new_tasks;
use crate::store::Lead;
use crate::task::Task;

impl Spool {
    /// As [`enqueue`](Self::enqueue), awaited: resolves once the task is durable, without
    /// blocking the runtime's thread during the sync (the writer thread does it and answers
    /// through a one-shot). Dropping the future does not take the enqueue back: the task
    /// may be stored all the same.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # use taskspool::{Context, Spool, Task, TaskError};
    /// # #[derive(Serialize, Deserialize)] struct Mail { to: String }
    /// # impl Task for Mail {
    /// #     const NAME: &'static str = "mail.send";
    /// #     type Output = ();
    /// #     fn run(self, _: &Context) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # runtime.block_on(async {
    /// let spool = Spool::temporary()?;
    /// let handle = spool.enqueue_async(Mail { to: "a@b.c".into() }).await?;
    /// # let _ = handle;
    /// # Ok::<(), taskspool::Error>(())
    /// # }).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_async<T: Task>(&self, task: T) -> Result<TaskHandle<T::Output>, Error> {
        self.enqueue_with_async(task, Options::new()).await
    }

    /// As [`enqueue_with`](Self::enqueue_with), awaited (see
    /// [`enqueue_async`](Self::enqueue_async)).
    ///
    /// # Errors
    /// As [`enqueue_with`](Self::enqueue_with).
    pub async fn enqueue_with_async<T: Task>(
        &self,
        task: T,
        options: Options,
    ) -> Result<TaskHandle<T::Output>, Error> {
        let mut handles = self
            .enqueue_many_with_async(std::iter::once(task), options)
            .await?;
        handles.pop().ok_or(Error::Closed)
    }

    /// As [`enqueue_many`](Self::enqueue_many), awaited: one transaction, all or none.
    ///
    /// # Errors
    /// As [`enqueue_many`](Self::enqueue_many).
    pub async fn enqueue_many_async<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<TaskHandle<T::Output>>, Error> {
        self.enqueue_many_with_async(tasks, Options::new()).await
    }

    /// As [`enqueue_many_with`](Self::enqueue_many_with), awaited.
    ///
    /// # Errors
    /// As [`enqueue_many_with`](Self::enqueue_many_with).
    pub async fn enqueue_many_with_async<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
        options: Options,
    ) -> Result<Vec<TaskHandle<T::Output>>, Error> {
        let new = new_tasks(tasks, options, self.shared.clock.now_ms())?;
        if new.is_empty() {
            return Ok(Vec::new());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.shared.engine.insert_then(
            new,
            Lead::Never,
            Box::new(move |ids| {
                let _ = tx.send(ids);
            }),
        );
        let ids = rx.await.map_err(|_| Error::Closed)??;
        Ok(self.handles::<T>(ids))
    }
}
