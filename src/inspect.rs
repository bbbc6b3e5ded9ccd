//! Reading a queue file that no process owns ([`Spool::inspect`](crate::Spool::inspect)),
//! without writing to it.

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::flow::Limit;
use crate::model::TaskId;
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::store::Snapshot;
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// A read-only look at a closed queue file ([`Spool::inspect`](crate::Spool::inspect)): the
/// same reads as a [`Spool`](crate::Spool) — status, listings, counts, schedules — of the file
/// as its last owner left it, every acknowledged change included. Nothing runs: a task that
/// was running when its owner died reads as running, a due schedule has not fired, and
/// finished tasks past their TTL are still there. The file and its log are not written.
pub struct Inspection {
    snapshot: Snapshot,
    path: PathBuf,
}

impl std::fmt::Debug for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspection")
            .field("path", &self.path)
            .field("in_memory", &self.snapshot.in_memory())
            .finish()
    }
}

impl Inspection {
    pub(crate) fn open(path: &Path) -> Result<Inspection, Error> {
        Ok(Inspection {
            snapshot: Snapshot::open(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The file inspected.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was read through a copy in memory: its owner died without closing
    /// it (its log holds changes not yet in the file, and redb would repair it), or it is of
    /// an older format. Otherwise it is read in place.
    pub fn in_memory(&self) -> bool {
        self.snapshot.in_memory()
    }

    /// As [`Spool::status`](crate::Spool::status).
    ///
    /// # Errors
    /// `NotFound` for an id not in the file; `Storage` on a read failure.
    pub fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        self.snapshot.status(id)
    }

    /// As [`Spool::tasks`](crate::Spool::tasks).
    ///
    /// # Errors
    /// `InvalidOption` for a page size out of range; `Storage` on a read failure.
    pub fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        self.snapshot.tasks(filter, paging)
    }

    /// As [`Spool::stats`](crate::Spool::stats), without pools (none runs) and without
    /// metrics (they count what a live spool did).
    ///
    /// # Errors
    /// `Storage` on a read failure.
    pub fn stats(&self) -> Result<Stats, Error> {
        self.snapshot.stats()
    }

    /// As [`Spool::schedules`](crate::Spool::schedules).
    ///
    /// # Errors
    /// `Storage` on a read failure.
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        self.snapshot.schedules()
    }

    /// As [`Spool::limits`](crate::Spool::limits): the limits declared in the file.
    ///
    /// # Errors
    /// `Storage` on a read failure.
    pub fn limits(&self) -> Result<Vec<Limit>, Error> {
        self.snapshot.limits()
    }

    /// As [`Spool::workflow_status`](crate::Spool::workflow_status).
    ///
    /// # Errors
    /// `NotFound` if `id` is not the first task of a workflow; `Storage` on a read failure.
    pub fn workflow_status(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        self.snapshot.workflow(id)
    }
}
