//! Where a command reads and writes: the live owner through its control socket, or — with no
//! owner — the closed file, read without writing to it, or opened as its owner for a command
//! that changes it (said on stderr).

use std::path::Path;

use serde_json::Value;
use taskspool::{
    Client, Error, Inspection, Options, Paging, Revoke, Revoked, ScheduleInfo, Spool, Stats,
    TaskFilter, TaskId, TaskPage, TaskStatus,
};

/// The queue a read goes to.
pub enum Source {
    Live(Client),
    Closed(Inspection),
}

impl Source {
    /// The live owner if there is one, else the closed file, read-only.
    pub fn read(file: &Path) -> Result<Source, Error> {
        match Client::connect(file) {
            Ok(client) => Ok(Source::Live(client)),
            Err(Error::NotRunning { .. }) => Spool::inspect(file).map(Source::Closed),
            Err(e) => Err(e),
        }
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        match self {
            Source::Live(c) => c.stats(),
            Source::Closed(i) => i.stats(),
        }
    }

    pub fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        match self {
            Source::Live(c) => c.tasks(filter, paging),
            Source::Closed(i) => i.tasks(filter, paging),
        }
    }

    pub fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        match self {
            Source::Live(c) => c.status(id),
            Source::Closed(i) => i.status(id),
        }
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        match self {
            Source::Live(c) => c.schedules(),
            Source::Closed(i) => i.schedules(),
        }
    }
}

/// What a change is made through.
pub enum Owner {
    Live(Client),
    /// No process owns the file: this command opened it as its owner.
    Opened(Spool),
}

impl Owner {
    /// The live owner, or the file opened as its owner (which recovers, prunes and fires
    /// what is due, as any open does), said on stderr.
    pub fn get(file: &Path) -> Result<Owner, Error> {
        match Client::connect(file) {
            Ok(client) => Ok(Owner::Live(client)),
            Err(Error::NotRunning { .. }) => {
                eprintln!(
                    "taskspool: no process owns {}: opening it as its owner for this command \
                     (recovery, pruning and due schedule fires run, as at any open)",
                    file.display()
                );
                Spool::open(file).map(Owner::Opened)
            }
            Err(e) => Err(e),
        }
    }

    pub fn retry(&self, id: TaskId) -> Result<(), Error> {
        match self {
            Owner::Live(c) => c.retry(id),
            Owner::Opened(s) => s.retry(id),
        }
    }

    pub fn revoke(&self, id: TaskId) -> Result<Revoke, Error> {
        match self {
            Owner::Live(c) => c.revoke(id),
            Owner::Opened(s) => s.revoke(id),
        }
    }

    pub fn revoke_where(&self, filter: TaskFilter) -> Result<Revoked, Error> {
        match self {
            Owner::Live(c) => c.revoke_where(&filter),
            Owner::Opened(s) => s.revoke_where(filter),
        }
    }

    pub fn forget(&self, id: TaskId) -> Result<(), Error> {
        match self {
            Owner::Live(c) => c.forget(id),
            Owner::Opened(s) => s.forget(id),
        }
    }

    pub fn pause(&self, queue: &str, pause: bool) -> Result<bool, Error> {
        match (self, pause) {
            (Owner::Live(c), true) => c.pause_queue(queue),
            (Owner::Live(c), false) => c.resume_queue(queue),
            (Owner::Opened(s), true) => s.pause_queue(queue),
            (Owner::Opened(s), false) => s.resume_queue(queue),
        }
    }

    pub fn enqueue(&self, name: &str, arguments: Value, options: Options) -> Result<TaskId, Error> {
        match self {
            Owner::Live(c) => c.enqueue_json(name, arguments, options),
            Owner::Opened(s) => s.enqueue_json(name, arguments, options),
        }
    }

    pub fn checkpoint(&self) -> Result<(), Error> {
        match self {
            Owner::Live(c) => c.checkpoint(),
            Owner::Opened(s) => s.checkpoint(),
        }
    }
}
