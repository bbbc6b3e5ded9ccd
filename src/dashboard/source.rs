//! What a dashboard shows and acts on: the spool in this process, a live owner through its
//! control socket ([`Client`]), or a closed file read without writing ([`Inspection`]).

use serde::Serialize;
use serde_json::Value;

use crate::client::Client;
use crate::error::Error;
use crate::flow::Limit;
use crate::inspect::Inspection;
use crate::model::TaskId;
use crate::protocol::to_json;
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// A change the dashboard can ask for (each a POST that needs the token).
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Retry(TaskId),
    Revoke(TaskId),
    PauseQueue(String),
    ResumeQueue(String),
    PauseSchedule(String),
    ResumeSchedule(String),
    RunSchedule(String),
    /// Revoke every waiting task of a queue and/or task name (`taskspool purge`).
    Purge {
        queue: Option<String>,
        name: Option<String>,
    },
}

/// How the dashboard reaches the queue, as its overview says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reach {
    /// The spool of the process serving the dashboard.
    Owner,
    /// The owner, through its control socket.
    Socket,
    /// A closed file, read-only: nothing runs, nothing can be changed.
    ClosedFile,
}

/// The reads and changes of a queue, whichever way it is reached. Each call may block (a
/// read can wait for the writer's current group): the server runs them off its runtime.
pub(crate) trait Source: Send + Sync + 'static {
    fn reach(&self) -> Reach;
    fn stats(&self) -> Result<Stats, Error>;
    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error>;
    fn status(&self, id: TaskId) -> Result<TaskStatus, Error>;
    fn workflow(&self, id: TaskId) -> Result<WorkflowStatus, Error>;
    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error>;
    fn limits(&self) -> Result<Vec<Limit>, Error>;
    /// Carries out `action`; what it did, as JSON.
    fn act(&self, action: Action) -> Result<Value, Error>;
}

/// The filter of a purge: every waiting state, of a queue and/or name.
pub(crate) fn purge_filter(queue: Option<String>, name: Option<String>) -> TaskFilter {
    let mut filter = TaskFilter::new();
    if let Some(q) = queue {
        filter = filter.queue(q);
    }
    if let Some(n) = name {
        filter = filter.name(n);
    }
    filter
}

impl Source for Client {
    fn reach(&self) -> Reach {
        Reach::Socket
    }
    fn stats(&self) -> Result<Stats, Error> {
        Client::stats(self)
    }
    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        Client::tasks(self, filter, paging)
    }
    fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        Client::status(self, id)
    }
    fn workflow(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        Client::workflow_status(self, id)
    }
    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        Client::schedules(self)
    }
    fn limits(&self) -> Result<Vec<Limit>, Error> {
        Client::limits(self)
    }
    fn act(&self, action: Action) -> Result<Value, Error> {
        match action {
            Action::Retry(id) => to_json(self.retry(id)?),
            Action::Revoke(id) => to_json(self.revoke(id)?),
            Action::PauseQueue(q) => to_json(self.pause_queue(&q)?),
            Action::ResumeQueue(q) => to_json(self.resume_queue(&q)?),
            Action::PauseSchedule(s) => to_json(self.pause_schedule(&s)?),
            Action::ResumeSchedule(s) => to_json(self.resume_schedule(&s)?),
            Action::RunSchedule(s) => to_json(self.run_schedule_now(&s)?),
            Action::Purge { queue, name } => {
                to_json(self.revoke_where(&purge_filter(queue, name))?)
            }
        }
    }
}

impl Source for Inspection {
    fn reach(&self) -> Reach {
        Reach::ClosedFile
    }
    fn stats(&self) -> Result<Stats, Error> {
        Inspection::stats(self)
    }
    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        Inspection::tasks(self, filter, paging)
    }
    fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        Inspection::status(self, id)
    }
    fn workflow(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        Inspection::workflow_status(self, id)
    }
    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        Inspection::schedules(self)
    }
    fn limits(&self) -> Result<Vec<Limit>, Error> {
        Inspection::limits(self)
    }
    fn act(&self, _: Action) -> Result<Value, Error> {
        Err(Error::InvalidOption(format!(
            "{} is closed and read without writing: start its owner (or open it with \
             `taskspool`) to change it",
            self.path().display()
        )))
    }
}
