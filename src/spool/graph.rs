//! Any workflow, as a graph of steps ([`Workflow`]): each step waits for the steps it names,
//! which were added before it — so a chain of groups, a group of chains and a chord inside a
//! chain are all a few lines. [`Chain`](crate::Chain), [`Spool::group`] and
//! [`Spool::chord`] are the common shapes of it.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::model::TaskId;
use crate::options::Options;
use crate::result::TaskHandle;
use crate::shared::Spool;
use crate::spool::workflow::{Build, step};
use crate::task::Task;

/// A step added to a [`Workflow`], whose task's output is an `O`: name it among the parents
/// of later steps, and get its handle once the workflow is stored.
#[derive(Debug)]
pub struct Step<O> {
    workflow: u64,
    index: usize,
    name: &'static str,
    _output: PhantomData<fn() -> O>,
}

impl<O> Clone for Step<O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for Step<O> {}

impl<O> Step<O> {
    /// The step, whatever its output type (for [`Workflow::after`]).
    pub fn id(&self) -> StepId {
        StepId {
            workflow: self.workflow,
            index: self.index,
        }
    }
}

/// A step of a [`Workflow`], whatever its output type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepId {
    workflow: u64,
    index: usize,
}

/// Tells the workflows of this process apart, so a step of one cannot be named in another.
static WORKFLOWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A workflow of any shape, built step by step and stored in one transaction
/// ([`Spool::workflow`]). A step waits for the steps it names (every one must succeed; if one
/// does not, it and every step after it end `Failed`, naming it) and reads their outputs in
/// the order named ([`Context::input`](crate::Context::input) for one,
/// [`Context::inputs`](crate::Context::inputs) for several: as a `Vec` of one type, or
/// `serde_json::Value` for mixed ones).
///
/// ```
/// # use std::time::Duration;
/// # use serde::{Deserialize, Serialize};
/// # use taskspool::{Context, Spool, Task, TaskError};
/// # #[derive(Serialize, Deserialize)] struct Add { a: i64, b: i64 }
/// # impl Task for Add {
/// #     const NAME: &'static str = "add";
/// #     type Output = i64;
/// #     fn run(self, _: &Context) -> Result<i64, TaskError> { Ok(self.a + self.b) }
/// # }
/// # #[derive(Serialize, Deserialize)] struct Sum;
/// # impl Task for Sum {
/// #     const NAME: &'static str = "sum";
/// #     type Output = i64;
/// #     fn run(self, ctx: &Context) -> Result<i64, TaskError> { Ok(ctx.inputs::<i64>()?.iter().sum()) }
/// # }
/// let spool = Spool::temporary()?;
/// // Three adds, their sum (6), then the sum of that and one more add: 16.
/// let mut wf = spool.workflow();
/// let first: Vec<_> = (1..=3).map(|i| wf.add(Add { a: i, b: 0 }).id()).collect();
/// let sum = wf.after(&first, Sum);
/// let more = wf.add(Add { a: 10, b: 0 });
/// let total = wf.after(&[sum.id(), more.id()], Sum);
/// let stored = wf.enqueue()?;
/// spool.worker().register::<Add>().register::<Sum>().drain()?;
/// assert_eq!(stored.handle(total).wait(Duration::from_secs(5))?, 16);
/// # Ok::<(), taskspool::Error>(())
/// ```
#[must_use = "a workflow is stored only by `enqueue`"]
pub struct Workflow<'s> {
    spool: &'s Spool,
    /// This builder's number (see `WORKFLOWS`).
    number: u64,
    steps: Vec<(Build, Vec<usize>)>,
    /// Whether each step runs however its parents ended.
    settled: Vec<bool>,
    /// A step named a parent of another workflow: `enqueue` refuses it.
    foreign: bool,
}

impl<'s> Workflow<'s> {
    /// Adds a step that waits for nothing: it is ready when the workflow is stored.
    pub fn add<T: Task>(&mut self, task: T) -> Step<T::Output> {
        self.after_with(&[], task, Options::new())
    }

    /// Adds a step that waits for `parents` (steps added before), reading their outputs in
    /// this order.
    pub fn after<T: Task>(&mut self, parents: &[StepId], task: T) -> Step<T::Output> {
        self.after_with(parents, task, Options::new())
    }

    /// Adds a step that runs once every one of `parents` has ended, however it ended (the
    /// opt-in "run anyway"), reading each one's output or failure with
    /// [`Context::results`](crate::Context::results).
    pub fn after_settled<T: Task>(&mut self, parents: &[StepId], task: T) -> Step<T::Output> {
        let step = self.after_with(parents, task, Options::new());
        if let Some(last) = self.settled.last_mut() {
            *last = true;
        }
        step
    }

    /// As [`after`](Self::after), with options (queue, priority, retries, time limits; not a
    /// unique key).
    pub fn after_with<T: Task>(
        &mut self,
        parents: &[StepId],
        task: T,
        options: Options,
    ) -> Step<T::Output> {
        let index = self.steps.len();
        self.foreign |= parents.iter().any(|p| p.workflow != self.number);
        self.steps.push((
            step(task, options),
            parents.iter().map(|p| p.index).collect(),
        ));
        self.settled.push(false);
        Step {
            workflow: self.number,
            index,
            name: T::NAME,
            _output: PhantomData,
        }
    }

    /// Stores every step in one transaction, durable when it returns: those that wait for
    /// nothing ready (or scheduled), the others waiting.
    ///
    /// # Errors
    /// `InvalidOption` for an empty workflow, a parent from another workflow, or a step's
    /// options (a unique key included); `Json` for a step's arguments (nothing is stored); as
    /// [`Spool::enqueue`](crate::Spool::enqueue).
    pub fn enqueue(self) -> Result<StoredWorkflow<'s>, Error> {
        if self.steps.is_empty() {
            return Err(Error::InvalidOption(
                "a workflow needs at least one step".into(),
            ));
        }
        if self.foreign {
            return Err(Error::InvalidOption(
                "a step names a parent from another workflow; a step can wait only for steps \
                 of its own workflow"
                    .into(),
            ));
        }
        let spool = self.spool;
        let now = spool.shared.clock.now_ms();
        let mut tasks = Vec::with_capacity(self.steps.len());
        for ((build, after), settled) in self.steps.into_iter().zip(self.settled) {
            let mut task = build(now)?;
            let spec = task.step_mut();
            spec.after = after;
            spec.settled = settled;
            tasks.push(task);
        }
        let stored = spool.shared.engine.insert(tasks)?;
        Ok(StoredWorkflow {
            spool,
            ids: stored.into_iter().map(|e| e.id).collect(),
        })
    }
}

/// A stored [`Workflow`]: its id and each step's handle.
#[derive(Debug)]
pub struct StoredWorkflow<'s> {
    spool: &'s Spool,
    ids: Vec<TaskId>,
}

impl StoredWorkflow<'_> {
    /// The workflow's id (its first step's), for
    /// [`Spool::workflow_status`](crate::Spool::workflow_status) and
    /// [`Spool::revoke_workflow`](crate::Spool::revoke_workflow).
    pub fn id(&self) -> TaskId {
        self.ids[0]
    }

    /// The handle of one of its steps.
    pub fn handle<O: DeserializeOwned>(&self, step: Step<O>) -> TaskHandle<O> {
        TaskHandle::new(self.ids[step.index], step.name, &self.spool.shared)
    }
}

impl Spool {
    /// Starts a [`Workflow`] of any shape.
    pub fn workflow(&self) -> Workflow<'_> {
        Workflow {
            spool: self,
            number: WORKFLOWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            steps: Vec::new(),
            settled: Vec::new(),
            foreign: false,
        }
    }
}
