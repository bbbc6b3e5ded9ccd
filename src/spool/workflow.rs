//! Workflows, as a user builds them: a [`Chain`] of steps that run one after another, each
//! able to read the output of the one before ([`Context::input`](crate::Context::input)); a
//! group of tasks that run in parallel ([`GroupHandle`]); a chord, a group and a body that
//! runs once after every member succeeded and receives their outputs in order. A workflow is
//! stored in one transaction — when the call returns, every step exists, waiting for its
//! parents or ready — and advances in the transactions of the completions that trigger it
//! (`store::workflow`): no polling, no expiring counter.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::model::{Revoked, TaskId};
use crate::options::Options;
use crate::result::TaskHandle;
use crate::shared::Spool;
use crate::spool::{new_task, new_tasks};
use crate::store::{NewLink, NewTask};
use crate::task::Task;
use crate::views::WorkflowStatus;

/// A step, built (validated and encoded) when its workflow is enqueued, at that time.
pub(crate) type Build = Box<dyn FnOnce(u64) -> Result<NewTask, Error> + Send>;

pub(crate) fn step<T: Task>(task: T, options: Options) -> Build {
    Box::new(move |now| {
        let task = new_task(task, options, now)?;
        refuse_unique(&task, "a workflow step")?;
        Ok(task)
    })
}

/// Refuses a unique key on a workflow's task: a duplicate would store nothing, and leave
/// the workflow without that task.
fn refuse_unique(task: &NewTask, what: &str) -> Result<(), Error> {
    if task.opts.keys.unique.is_some() {
        return Err(Error::InvalidOption(format!(
            "{what} (`{}`) cannot have a unique key: a duplicate would leave the workflow \
             without it",
            task.name
        )));
    }
    Ok(())
}

/// Steps that run one after another (Celery's `chain`), built with [`Spool::chain`] and
/// [`then`](Self::then); `O` is the last step's output. Each step can read the output of the
/// one before with [`Context::input`](crate::Context::input) (Celery's `.s()`), or ignore it
/// (`.si()`). If a step does not succeed, every step after it ends `Failed`, naming it, and
/// never runs.
///
/// ```
/// # use std::time::Duration;
/// # use serde::{Deserialize, Serialize};
/// # use taskspool::{Context, Spool, Task, TaskError};
/// #[derive(Serialize, Deserialize)]
/// struct Add { a: i64, b: i64 }
/// #[derive(Serialize, Deserialize)]
/// struct AddTo { b: i64 }           // adds `b` to the step before's output
///
/// impl Task for Add {
///     const NAME: &'static str = "add";
///     type Output = i64;
///     fn run(self, _: &Context) -> Result<i64, TaskError> { Ok(self.a + self.b) }
/// }
/// impl Task for AddTo {
///     const NAME: &'static str = "add_to";
///     type Output = i64;
///     fn run(self, ctx: &Context) -> Result<i64, TaskError> {
///         Ok(ctx.input::<i64>()? + self.b)
///     }
/// }
///
/// let spool = Spool::temporary()?;
/// let total = spool.chain(Add { a: 2, b: 2 }).then(AddTo { b: 4 }).then(AddTo { b: 8 }).enqueue()?;
/// spool.worker().register::<Add>().register::<AddTo>().drain()?;
/// assert_eq!(total.wait(Duration::from_secs(5))?, 16);
/// # Ok::<(), taskspool::Error>(())
/// ```
#[must_use = "a chain is stored only by `enqueue`"]
pub struct Chain<'s, O> {
    spool: &'s Spool,
    steps: Vec<(Build, &'static str)>,
    _output: PhantomData<fn() -> O>,
}

impl<'s, O: DeserializeOwned> Chain<'s, O> {
    /// Adds a step after the last one.
    pub fn then<T: Task>(self, task: T) -> Chain<'s, T::Output> {
        self.then_with(task, Options::new())
    }

    /// Adds a step after the last one, with options (queue, priority, retries, time limits;
    /// not a unique key).
    pub fn then_with<T: Task>(mut self, task: T, options: Options) -> Chain<'s, T::Output> {
        self.steps.push((step(task, options), T::NAME));
        Chain {
            spool: self.spool,
            steps: self.steps,
            _output: PhantomData,
        }
    }

    /// Stores every step in one transaction, durable when it returns: the first ready (or
    /// scheduled), the others waiting. Returns the last step's handle: its `wait` gives the
    /// chain's result, or the failure that stopped it.
    ///
    /// # Errors
    /// `InvalidOption` or `Json` for a step (nothing is stored); as
    /// [`Spool::enqueue`](crate::Spool::enqueue).
    pub fn enqueue(self) -> Result<TaskHandle<O>, Error> {
        let spool = self.spool;
        let now = spool.shared.clock.now_ms();
        let mut tasks = Vec::with_capacity(self.steps.len());
        let mut last = "";
        for (i, (build, name)) in self.steps.into_iter().enumerate() {
            let mut task = build(now)?;
            if i > 0 {
                task.step_mut().after = vec![i - 1];
            }
            tasks.push(task);
            last = name;
        }
        let stored = spool.shared.engine.insert(tasks)?;
        let id = stored.last().map(|e| e.id).ok_or(Error::Closed)?;
        Ok(TaskHandle::new(id, last, &spool.shared))
    }
}

/// A callback of a task (Celery's `link` and `link_error`), given to
/// [`Spool::enqueue_linked`]: enqueued in the same transaction that ends the task — on
/// success, or on any other end (failed, revoked, expired) — and never otherwise. Its
/// handler reads the task's output, or the [`Failure`](crate::Failure) that ended it, with
/// [`Context::input`](crate::Context::input).
#[must_use = "a link does nothing until it is given to `Spool::enqueue_linked`"]
pub struct Link {
    on_failure: bool,
    build: Build,
}

impl Link {
    /// `task` runs after the linked task succeeds, reading its output.
    pub fn on_success<T: Task>(task: T) -> Link {
        Link::on_success_with(task, Options::new())
    }

    /// As [`on_success`](Self::on_success), with options (not a unique key).
    pub fn on_success_with<T: Task>(task: T, options: Options) -> Link {
        Link {
            on_failure: false,
            build: step(task, options),
        }
    }

    /// `task` runs after the linked task ends any way but success (failed for good,
    /// revoked, expired), reading the [`Failure`](crate::Failure): its id, name, attempts,
    /// message and every attempt's error.
    pub fn on_failure<T: Task>(task: T) -> Link {
        Link::on_failure_with(task, Options::new())
    }

    /// As [`on_failure`](Self::on_failure), with options (not a unique key).
    pub fn on_failure_with<T: Task>(task: T, options: Options) -> Link {
        Link {
            on_failure: true,
            build: step(task, options),
        }
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("on_failure", &self.on_failure)
            .finish_non_exhaustive()
    }
}

/// The tasks of a group (or a chord's members), in the order they were given.
#[derive(Debug, Clone)]
pub struct GroupHandle<O> {
    members: Vec<TaskHandle<O>>,
}

impl<O: DeserializeOwned> GroupHandle<O> {
    /// Each member's handle, in order (for its status, or to wait for it alone).
    pub fn members(&self) -> &[TaskHandle<O>] {
        &self.members
    }

    /// Waits until every member has finished, at most `timeout` in all; returns their
    /// outputs in member order.
    ///
    /// # Errors
    /// The first member's (in order) that did not succeed, as [`TaskHandle::wait`] reports
    /// it; `Timeout` if the time ran out first.
    pub fn wait(&self, timeout: Duration) -> Result<Vec<O>, Error> {
        let deadline = Instant::now() + timeout;
        self.members
            .iter()
            .map(|m| m.wait(deadline.saturating_duration_since(Instant::now())))
            .collect()
    }
}

/// A chord: its members, and its body.
#[derive(Debug, Clone)]
pub struct ChordHandle<M, B> {
    /// The members, in order.
    pub members: GroupHandle<M>,
    /// The body: its `wait` gives the chord's result.
    pub body: TaskHandle<B>,
}

impl Spool {
    /// A workflow's tasks by state (its id is its first task's: a chain's first step, a
    /// chord's first member; [`TaskStatus::workflow`](crate::TaskStatus::workflow) of any of
    /// them).
    ///
    /// # Errors
    /// `NotFound` if `id` is not a workflow's first task; `Storage` on a read failure.
    pub fn workflow_status(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        self.shared.engine.workflow_status(id)
    }

    /// Revokes every task of a workflow that has not finished, durably, each as
    /// [`Spool::revoke`] does (waiting and ready steps end `Revoked` at once, running ones
    /// are asked to stop and end `Revoked` with their attempt); says how many of each.
    ///
    /// # Errors
    /// `NotFound` if `id` is not a workflow's first task (nothing is written);
    /// `DiskFull`/`Storage` if the change could not be made durable.
    pub fn revoke_workflow(&self, id: TaskId) -> Result<Revoked, Error> {
        self.shared.engine.revoke_workflow(id)
    }

    /// Enqueues `task` with callbacks ([`Link`]), stored with it in one transaction: each
    /// is enqueued in the transaction that ends the task, if its condition holds, so a
    /// callback runs at most once per end of the task and never for a retry.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use serde::{Deserialize, Serialize};
    /// # use taskspool::{Context, Failure, Link, Options, Spool, Task, TaskError};
    /// #[derive(Serialize, Deserialize)]
    /// struct Charge { cents: u64 }
    /// #[derive(Serialize, Deserialize)]
    /// struct Receipt;
    /// #[derive(Serialize, Deserialize)]
    /// struct Alert;
    ///
    /// impl Task for Charge {
    ///     const NAME: &'static str = "charge";
    ///     type Output = u64;
    ///     fn run(self, _: &Context) -> Result<u64, TaskError> { Ok(self.cents) }
    /// }
    /// impl Task for Receipt {
    ///     const NAME: &'static str = "receipt";
    ///     type Output = String;
    ///     fn run(self, ctx: &Context) -> Result<String, TaskError> {
    ///         Ok(format!("charged {} cents", ctx.input::<u64>()?))
    ///     }
    /// }
    /// impl Task for Alert {
    ///     const NAME: &'static str = "alert";
    ///     type Output = String;
    ///     fn run(self, ctx: &Context) -> Result<String, TaskError> {
    ///         Ok(ctx.input::<Failure>()?.message)
    ///     }
    /// }
    ///
    /// let spool = Spool::temporary()?;
    /// let links = [Link::on_success(Receipt), Link::on_failure(Alert)];
    /// spool.enqueue_linked(Charge { cents: 250 }, Options::new(), links)?;
    /// let ran = spool.worker().register::<Charge>().register::<Receipt>().register::<Alert>().drain()?;
    /// assert_eq!(ran.succeeded, 2); // the charge and its receipt; no alert
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Spool::enqueue_with`], for the task and for each callback (nothing is stored).
    pub fn enqueue_linked<T: Task>(
        &self,
        task: T,
        options: Options,
        links: impl IntoIterator<Item = Link>,
    ) -> Result<TaskHandle<T::Output>, Error> {
        let now = self.shared.clock.now_ms();
        let mut new = new_task(task, options, now)?;
        let links = links
            .into_iter()
            .map(|l| {
                Ok(NewLink {
                    on_failure: l.on_failure,
                    task: (l.build)(now)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if !links.is_empty() {
            new.step_mut().links = links;
        }
        let stored = self.shared.engine.insert(vec![new])?;
        let e = stored.first().ok_or(Error::Closed)?;
        Ok(TaskHandle::enqueued(
            e.id,
            e.duplicate,
            T::NAME,
            &self.shared,
        ))
    }

    /// Starts a [`Chain`] with `first`; add steps with [`Chain::then`] and store it with
    /// [`Chain::enqueue`].
    pub fn chain<T: Task>(&self, first: T) -> Chain<'_, T::Output> {
        self.chain_with(first, Options::new())
    }

    /// As [`chain`](Self::chain), with options for the first step.
    pub fn chain_with<T: Task>(&self, first: T, options: Options) -> Chain<'_, T::Output> {
        Chain {
            spool: self,
            steps: vec![(step(first, options), T::NAME)],
            _output: PhantomData,
        }
    }

    /// Enqueues a group: tasks that run in parallel, stored in one transaction, with a
    /// handle whose `wait` returns every output in member order.
    ///
    /// # Errors
    /// As [`Spool::enqueue_many`].
    pub fn group<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<GroupHandle<T::Output>, Error> {
        Ok(GroupHandle {
            members: self.enqueue_many(tasks)?,
        })
    }

    /// Enqueues a chord (Celery's `chord(group)(body)`): `members` run in parallel, and
    /// `body` runs once after every one of them succeeded, reading their outputs in member
    /// order with [`Context::inputs`](crate::Context::inputs). Its counter lives in the
    /// body's record and each member's success counts it down in its own transaction, so
    /// nothing polls and a restart loses nothing; a member retried counts once. If a member
    /// does not succeed, the body ends `Failed`, naming it, and never runs. Stored in one
    /// transaction.
    ///
    /// # Errors
    /// `InvalidOption` for a chord without members, or for a member or body with a unique
    /// key; `Json` for bad arguments (nothing is stored); as
    /// [`Spool::enqueue`](crate::Spool::enqueue).
    pub fn chord<T: Task, B: Task>(
        &self,
        members: impl IntoIterator<Item = T>,
        body: B,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        self.chord_of(members, body, false)
    }

    /// A chord whose body runs once every member has ended, however it ended (the opt-in
    /// "run anyway"), reading each member's output or failure in member order with
    /// [`Context::results`](crate::Context::results).
    ///
    /// # Errors
    /// As [`chord`](Self::chord).
    pub fn chord_settled<T: Task, B: Task>(
        &self,
        members: impl IntoIterator<Item = T>,
        body: B,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        self.chord_of(members, body, true)
    }

    fn chord_of<T: Task, B: Task>(
        &self,
        members: impl IntoIterator<Item = T>,
        body: B,
        settled: bool,
    ) -> Result<ChordHandle<T::Output, B::Output>, Error> {
        let now = self.shared.clock.now_ms();
        // Every member shares one name and one set of resolved options.
        let mut tasks = new_tasks(members, Options::new(), now)?;
        if let Some(first) = tasks.first() {
            refuse_unique(first, "a chord's member")?;
        }
        if tasks.is_empty() {
            return Err(Error::InvalidOption(format!(
                "a chord needs at least one member before its body `{}`",
                B::NAME
            )));
        }
        let n = tasks.len();
        let mut body = step(body, Options::new())(now)?;
        let spec = body.step_mut();
        spec.after = (0..n).collect();
        spec.settled = settled;
        tasks.push(body);
        let mut stored = self.shared.engine.insert(tasks)?;
        let body = stored.pop().ok_or(Error::Closed)?;
        Ok(ChordHandle {
            members: GroupHandle {
                members: stored
                    .into_iter()
                    .map(|e| TaskHandle::new(e.id, T::NAME, &self.shared))
                    .collect(),
            },
            body: TaskHandle::new(body.id, B::NAME, &self.shared),
        })
    }
}
