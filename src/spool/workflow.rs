//! Workflows, as a user builds them: a [`Chain`] of steps that run one after another, each
//! able to read the output of the one before ([`Context::input`](crate::Context::input)); a
//! group of tasks that run in parallel ([`GroupHandle`]); a chord, a group and a body that
//! runs once after every member succeeded and receives their outputs in order (`chord.rs`). A
//! workflow is stored in one transaction (a large chord in parts) — when the call returns,
//! every step exists, waiting for its parents or ready — and advances in the transactions of
//! the completions that trigger it (`store::workflow`): no polling, no expiring counter.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::model::{Revoked, TaskId, id_runs};
use crate::options::Options;
use crate::result::TaskHandle;
use crate::shared::Spool;
use crate::spool::new_task;
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
pub(crate) fn refuse_unique(task: &NewTask, what: &str) -> Result<(), Error> {
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

/// The tasks of a group (or a chord's members), in the order they were given. It holds
/// their ids as runs of consecutive ids, so a group of a million members costs a few bytes;
/// [`member`](Self::member) and [`members`](Self::members) make each one's handle.
#[derive(Debug, Clone)]
pub struct GroupHandle<O> {
    /// The first member's handle (the others are made from it), if there is one.
    first: Option<TaskHandle<O>>,
    /// The members' ids, as runs (first id, how many), in order.
    runs: Vec<(u64, u32)>,
    /// The indexes of the members whose enqueue found a task holding their unique key.
    duplicates: Vec<usize>,
}

impl<O: DeserializeOwned> GroupHandle<O> {
    /// The group of these handles, in order.
    pub(crate) fn of(handles: Vec<TaskHandle<O>>) -> Self {
        GroupHandle {
            runs: id_runs(handles.iter().map(|h| h.id().0)),
            duplicates: (0..handles.len())
                .filter(|&i| handles[i].is_duplicate())
                .collect(),
            first: handles.into_iter().next(),
        }
    }

    /// The group of `first` and the `n - 1` tasks after it, `n` ≥ 1 and ≤ `u32::MAX`.
    pub(crate) fn run(first: TaskHandle<O>, n: u32) -> Self {
        GroupHandle {
            runs: vec![(first.id().0, n)],
            first: Some(first),
            duplicates: Vec::new(),
        }
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|&(_, n)| n as usize).sum()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Member `index`'s handle (in the order given), if there is one.
    pub fn member(&self, index: usize) -> Option<TaskHandle<O>> {
        let first = self.first.as_ref()?;
        let mut skip = index;
        for &(id, n) in &self.runs {
            if skip < n as usize {
                let duplicate = self.duplicates.binary_search(&index).is_ok();
                return Some(first.sibling(TaskId(id + skip as u64), duplicate));
            }
            skip -= n as usize;
        }
        None
    }

    /// Each member's handle, in order (for its status, or to wait for it alone).
    pub fn members(&self) -> impl Iterator<Item = TaskHandle<O>> + '_ {
        let mut index = 0;
        self.runs
            .iter()
            .flat_map(|&(id, n)| (0..u64::from(n)).map(move |k| id + k))
            .filter_map(move |id| {
                let duplicate = self.duplicates.binary_search(&index).is_ok();
                index += 1;
                Some(self.first.as_ref()?.sibling(TaskId(id), duplicate))
            })
    }

    /// Waits until every member has finished, at most `timeout` in all; returns their
    /// outputs in member order.
    ///
    /// # Errors
    /// The first member's (in order) that did not succeed, as [`TaskHandle::wait`] reports
    /// it; `Timeout` if the time ran out first.
    pub fn wait(&self, timeout: Duration) -> Result<Vec<O>, Error> {
        let deadline = Instant::now() + timeout;
        self.members()
            .map(|m| m.wait(deadline.saturating_duration_since(Instant::now())))
            .collect()
    }
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
        Ok(GroupHandle::of(self.enqueue_many(tasks)?))
    }
}
