//! The spool as a dashboard's source (feature `dashboard`), on a weak handle: a dashboard
//! never keeps the spool open (its reads then answer `Closed`).

use std::sync::{Arc, Weak};

use serde_json::Value;

use crate::client::Client;
use crate::dashboard::source::{Action, Reach, Source, purge_filter};
use crate::dashboard::{Dashboard, DashboardOptions};
use crate::error::Error;
use crate::flow::Limit;
use crate::inspect::Inspection;
use crate::model::TaskId;
use crate::protocol::to_json;
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::shared::{Shared, Spool};
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

struct Local(Weak<Shared>);

impl Local {
    fn spool(&self) -> Result<Spool, Error> {
        self.0
            .upgrade()
            .map(|shared| Spool { shared })
            .ok_or(Error::Closed)
    }
}

impl Source for Local {
    fn reach(&self) -> Reach {
        Reach::Owner
    }
    fn stats(&self) -> Result<Stats, Error> {
        self.spool()?.stats()
    }
    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        self.spool()?.tasks(filter, paging)
    }
    fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        self.spool()?.status(id)
    }
    fn workflow(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        self.spool()?.workflow_status(id)
    }
    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        self.spool()?.schedules()
    }
    fn limits(&self) -> Result<Vec<Limit>, Error> {
        self.spool()?.limits()
    }
    fn act(&self, action: Action) -> Result<Value, Error> {
        let spool = self.spool()?;
        match action {
            Action::Retry(id) => to_json(spool.retry(id)?),
            Action::Revoke(id) => to_json(spool.revoke(id)?),
            Action::PauseQueue(q) => to_json(spool.pause_queue(&q)?),
            Action::ResumeQueue(q) => to_json(spool.resume_queue(&q)?),
            Action::PauseSchedule(s) => to_json(spool.pause_schedule(&s)?),
            Action::ResumeSchedule(s) => to_json(spool.resume_schedule(&s)?),
            Action::RunSchedule(s) => to_json(spool.run_schedule_now(&s)?),
            Action::Purge { queue, name } => {
                to_json(spool.revoke_where(purge_filter(queue, name))?)
            }
        }
    }
}

impl Spool {
    /// Serves the web dashboard of this queue (feature `dashboard`): its overview, tasks,
    /// failures, schedules and pools, a JSON API under `/api` and Prometheus text at
    /// `/metrics`, at [`Dashboard::url`]. It serves until the returned [`Dashboard`] is
    /// dropped, and does not keep the spool open. See [`DashboardOptions`] for the address
    /// and the token that allows changes.
    ///
    /// ```no_run
    /// # use taskspool::{DashboardOptions, Spool};
    /// let spool = Spool::open("jobs.redb")?;
    /// let dashboard = spool.serve_dashboard(DashboardOptions::new())?; // 127.0.0.1:5555
    /// println!("{}", dashboard.url());
    /// # Ok::<(), taskspool::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidOption` for an address other than a loopback one without a token, or one
    /// that cannot be listened on (in use); `Storage` if its thread cannot start.
    pub fn serve_dashboard(&self, options: DashboardOptions) -> Result<Dashboard, Error> {
        Dashboard::start(Arc::new(Local(Arc::downgrade(&self.shared))), options)
    }
}

impl Client {
    /// Serves the web dashboard of the owner's queue, through this client (feature
    /// `dashboard`), as [`Spool::serve_dashboard`] does in the owner.
    ///
    /// # Errors
    /// As [`Spool::serve_dashboard`].
    pub fn serve_dashboard(self, options: DashboardOptions) -> Result<Dashboard, Error> {
        Dashboard::start(Arc::new(self), options)
    }
}

impl Inspection {
    /// Serves the web dashboard of this closed file, read-only (feature `dashboard`): the
    /// views as [`Spool::serve_dashboard`] shows them, and no changes.
    ///
    /// # Errors
    /// As [`Spool::serve_dashboard`].
    pub fn serve_dashboard(self, options: DashboardOptions) -> Result<Dashboard, Error> {
        Dashboard::start(Arc::new(self), options)
    }
}
