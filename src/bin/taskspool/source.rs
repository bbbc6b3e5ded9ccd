//! Where a command reads and writes: the live owner through its control socket, or — with no
//! owner — the closed file, read without writing to it, or opened as its owner for a command
//! that changes it (said on stderr). A PostgreSQL URL (feature `postgres`) is connected to as
//! one more process of the queue: every process there is a peer, with no owner to go
//! through.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use taskspool::{
    Client, Error, Event, Inspection, Options, Paging, RemoteEvents, Revoke, Revoked, ScheduleInfo,
    Spool, Stats, TaskFilter, TaskId, TaskPage, TaskStatus,
};

/// A queue the command line names: a file, or a PostgreSQL URL and schema.
pub struct Target<'a> {
    file: &'a Path,
    /// The schema of a PostgreSQL queue (`--postgres-schema`).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    schema: &'a str,
}

impl<'a> Target<'a> {
    pub fn new(file: &'a Path, schema: &'a str) -> Target<'a> {
        Target { file, schema }
    }

    /// The connection string, if the target is a PostgreSQL database: a URL
    /// (`postgres://…`, `postgresql://…`) or key-value settings (`host=… dbname=…`).
    pub fn postgres_url(&self) -> Option<&str> {
        let text = self.file.to_str()?;
        let url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        let settings = ["host=", "hostaddr=", "dbname=", "user=", "port="]
            .iter()
            .any(|key| text.trim_start().starts_with(key));
        (url || settings).then_some(text)
    }

    /// Connects to the PostgreSQL queue at `url`.
    #[cfg(feature = "postgres")]
    fn connect(&self, url: &str) -> Result<Spool, Error> {
        Spool::builder()
            .postgres_schema(self.schema)
            .connect_postgres(url)
    }

    /// A PostgreSQL URL without the engine built in is refused, saying how to get it.
    #[cfg(not(feature = "postgres"))]
    fn connect(&self, _url: &str) -> Result<Spool, Error> {
        Err(Error::InvalidOption(
            "this taskspool command line was built without PostgreSQL: build it with \
             `--features postgres`"
                .into(),
        ))
    }

    /// Where the events go from: the spool of a PostgreSQL queue, else the file's owner.
    pub fn events(&self) -> Result<Events, Error> {
        match self.postgres_url() {
            Some(url) => {
                let spool = self.connect(url)?;
                let events = spool.events_with_buffer(4_096);
                Ok(Events::Spool {
                    events,
                    _connected: spool,
                })
            }
            None => Ok(Events::Live(Client::connect(self.file)?.events(4_096)?)),
        }
    }
}

/// The events a `tail` prints.
pub enum Events {
    Live(RemoteEvents),
    /// A PostgreSQL queue's, heard while the spool is connected.
    Spool {
        events: taskspool::Events,
        _connected: Spool,
    },
}

impl Events {
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        match self {
            Events::Live(e) => e.recv_timeout(timeout),
            Events::Spool { events, .. } => events.recv_timeout(timeout),
        }
    }
}

/// The queue a read goes to.
pub enum Source {
    Live(Client),
    Closed(Inspection),
    /// A PostgreSQL queue, connected to as one more process.
    Peer(Spool),
}

impl Source {
    /// The live owner if there is one, else the closed file, read-only; a PostgreSQL queue
    /// connected to.
    pub fn read(target: &Target<'_>) -> Result<Source, Error> {
        if let Some(url) = target.postgres_url() {
            return target.connect(url).map(Source::Peer);
        }
        let file = target.file;
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
            Source::Peer(s) => s.stats(),
        }
    }

    pub fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        match self {
            Source::Live(c) => c.tasks(filter, paging),
            Source::Closed(i) => i.tasks(filter, paging),
            Source::Peer(s) => s.tasks(filter, paging),
        }
    }

    pub fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        match self {
            Source::Live(c) => c.status(id),
            Source::Closed(i) => i.status(id),
            Source::Peer(s) => s.status(id),
        }
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        match self {
            Source::Live(c) => c.schedules(),
            Source::Closed(i) => i.schedules(),
            Source::Peer(s) => s.schedules(),
        }
    }
}

/// What a change is made through.
pub enum Owner {
    Live(Client),
    /// No process owns the file: this command opened it as its owner (or connected to a
    /// PostgreSQL queue).
    Opened(Spool),
}

impl Owner {
    /// The live owner, or the file opened as its owner (which recovers, prunes and fires
    /// what is due, as any open does), said on stderr; a PostgreSQL queue connected to.
    pub fn get(target: &Target<'_>) -> Result<Owner, Error> {
        if let Some(url) = target.postgres_url() {
            return target.connect(url).map(Owner::Opened);
        }
        let file = target.file;
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
