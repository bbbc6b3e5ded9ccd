//! [`Client`]: a live queue reached from another process, through its owner's control socket
//! (see `protocol` for the frames).

use std::io::{BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::events::Event;
use crate::model::{Revoke, Revoked, TaskId};
use crate::options::Options;
use crate::protocol::{Call, Frame, FromOwner, PROTOCOL, ToOwner, decode, read_frame, write_frame};
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::store::socket_path;
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// How long a call waits for its reply (an enqueue's includes the owner's sync).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to the process that owns a queue file, offering the spool's calls — what a
/// second process (a CLI, a dashboard, another service) uses on a live queue, where
/// [`Spool::open`](crate::Spool::open) would be refused with `AlreadyOpen`. An enqueue is
/// acknowledged after the owner's sync, as in the owner: the durability promise holds across
/// processes. One call at a time per client (calls from several threads take turns).
///
/// ```no_run
/// use taskspool::{Client, Options, Paging, TaskFilter, TaskState};
///
/// let client = Client::connect("jobs.redb")?;
/// let id = client.enqueue_json("mail.send", serde_json::json!({ "to": "a@b.c" }), Options::new())?;
/// let failed = client.tasks(&TaskFilter::new().state(TaskState::Failed), &Paging::first(100))?;
/// # let _ = (id, failed);
/// # Ok::<(), taskspool::Error>(())
/// ```
pub struct Client {
    path: PathBuf,
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("path", &self.path).finish()
    }
}

struct Conn {
    stream: UnixStream,
    /// Reads through a buffer: a whole small frame in one read.
    input: BufReader<UnixStream>,
    next: u64,
}

/// Connects to the owner of `queue` and says hello; the stream, and its reading side.
fn connect(queue: &Path) -> Result<(UnixStream, BufReader<UnixStream>), Error> {
    let socket = socket_path(queue);
    let mut stream = UnixStream::connect(&socket).map_err(|_| Error::NotRunning {
        path: queue.to_path_buf(),
        socket: socket.clone(),
    })?;
    let io = |e: std::io::Error| Error::Protocol(format!("the connection failed: {e}"));
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    write_frame(&mut stream, &ToOwner::Hello { protocol: PROTOCOL }).map_err(io)?;
    let mut input = BufReader::new(stream.try_clone().map_err(io)?);
    match receive(&mut input)? {
        FromOwner::Welcome { .. } => Ok((stream, input)),
        FromOwner::Refused { error } | FromOwner::Closing { error } => Err(error.into_error()),
        other => Err(Error::Protocol(format!("a hello answered with {other:?}"))),
    }
}

/// The owner's next frame.
fn receive(input: &mut impl Read) -> Result<FromOwner, Error> {
    match read_frame(input)? {
        Frame::Bytes(body) => decode(&body),
        Frame::Closed => Err(Error::Protocol("the owner closed the connection".into())),
        Frame::Idle => Err(Error::Protocol(format!(
            "no answer from the owner within {} s",
            REPLY_TIMEOUT.as_secs()
        ))),
    }
}

impl Client {
    /// Connects to the process that owns the queue file at `queue`, through the control
    /// socket beside it (`<file>.sock`).
    ///
    /// # Errors
    /// `NotRunning` if no process serves it (the queue is closed: read it with
    /// [`Spool::inspect`](crate::Spool::inspect)); `Protocol` if the owner speaks another
    /// protocol version or breaks it.
    pub fn connect(queue: impl AsRef<Path>) -> Result<Client, Error> {
        let path = queue.as_ref().to_path_buf();
        let (stream, input) = connect(&path)?;
        Ok(Client {
            path,
            conn: Mutex::new(Conn {
                stream,
                input,
                next: 1,
            }),
        })
    }

    fn call<T: DeserializeOwned>(&self, call: Call) -> Result<T, Error> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = &mut *guard;
        let id = conn.next;
        conn.next += 1;
        write_frame(
            &mut conn.stream,
            &ToOwner::Call {
                id,
                call: Box::new(call),
            },
        )
        .map_err(|e| Error::Protocol(format!("the call was not sent: {e}")))?;
        match receive(&mut conn.input)? {
            FromOwner::Reply { id: got, ok, error } if got == id => match (ok, error) {
                (_, Some(error)) => Err(error.into_error()),
                (value, None) => serde_json::from_value(value.unwrap_or(Value::Null))
                    .map_err(|e| Error::Protocol(format!("a reply that does not fit: {e}"))),
            },
            FromOwner::Closing { error } => Err(error.into_error()),
            other => Err(Error::Protocol(format!(
                "call {id} answered with {other:?}"
            ))),
        }
    }

    /// As [`Spool::stats`](crate::Spool::stats), in the owner.
    ///
    /// # Errors
    /// As there; `Protocol`/`Timeout` if the connection fails.
    pub fn stats(&self) -> Result<Stats, Error> {
        self.call(Call::Stats)
    }

    /// As [`Spool::status`](crate::Spool::status).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Protocol`/`Timeout` if the connection fails.
    pub fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        self.call(Call::Status { task: id })
    }

    /// As [`Spool::tasks`](crate::Spool::tasks).
    ///
    /// # Errors
    /// As there (the owner's `InvalidOption` comes back as `Remote`); `Protocol`/`Timeout`
    /// if the connection fails.
    pub fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        self.call(Call::Tasks {
            filter: filter.clone(),
            paging: *paging,
        })
    }

    /// As [`Spool::schedules`](crate::Spool::schedules).
    ///
    /// # Errors
    /// `Protocol`/`Timeout` if the connection fails.
    pub fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        self.call(Call::Schedules)
    }

    /// As [`Spool::enqueue_json`](crate::Spool::enqueue_json): returns once the task is
    /// durable in the owner's file.
    ///
    /// # Errors
    /// The owner's errors as `Remote` (an invalid name or option: kind `InvalidInput`);
    /// `Protocol`/`Timeout` if the connection fails (then the task may or may not be stored).
    pub fn enqueue_json(
        &self,
        name: &str,
        arguments: Value,
        options: Options,
    ) -> Result<TaskId, Error> {
        self.call(Call::Enqueue {
            name: name.to_string(),
            arguments,
            options,
        })
    }

    /// As [`Spool::enqueue_many_json`](crate::Spool::enqueue_many_json): one transaction in
    /// the owner, durable when it returns.
    ///
    /// # Errors
    /// As [`enqueue_json`](Self::enqueue_json).
    pub fn enqueue_many_json(
        &self,
        name: &str,
        arguments: Vec<Value>,
        options: Options,
    ) -> Result<Vec<TaskId>, Error> {
        self.call(Call::EnqueueMany {
            name: name.to_string(),
            arguments,
            options,
        })
    }

    /// As [`Spool::revoke`](crate::Spool::revoke).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; the owner's others as `Remote`.
    pub fn revoke(&self, id: TaskId) -> Result<Revoke, Error> {
        self.call(Call::Revoke { task: id })
    }

    /// As [`Spool::revoke_where`](crate::Spool::revoke_where).
    ///
    /// # Errors
    /// The owner's errors as `Remote`.
    pub fn revoke_where(&self, filter: &TaskFilter) -> Result<Revoked, Error> {
        self.call(Call::RevokeWhere {
            filter: filter.clone(),
        })
    }

    /// As [`Spool::retry`](crate::Spool::retry).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; the owner's others as `Remote` (`WrongState`: kind
    /// `InvalidInput`).
    pub fn retry(&self, id: TaskId) -> Result<(), Error> {
        self.call(Call::Retry { task: id })
    }

    /// As [`Spool::forget`](crate::Spool::forget).
    ///
    /// # Errors
    /// As [`retry`](Self::retry).
    pub fn forget(&self, id: TaskId) -> Result<(), Error> {
        self.call(Call::Forget { task: id })
    }

    /// As [`Spool::workflow_status`](crate::Spool::workflow_status).
    ///
    /// # Errors
    /// `NotFound` if `id` is not the first task of a workflow.
    pub fn workflow_status(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        self.call(Call::WorkflowStatus { task: id })
    }

    /// As [`Spool::pause_schedule`](crate::Spool::pause_schedule).
    ///
    /// # Errors
    /// The owner's `ScheduleNotFound` as `Remote` (kind `NotFound`).
    pub fn pause_schedule(&self, name: &str) -> Result<(), Error> {
        self.call(Call::PauseSchedule {
            schedule: name.to_string(),
        })
    }

    /// As [`Spool::resume_schedule`](crate::Spool::resume_schedule).
    ///
    /// # Errors
    /// As [`pause_schedule`](Self::pause_schedule).
    pub fn resume_schedule(&self, name: &str) -> Result<(), Error> {
        self.call(Call::ResumeSchedule {
            schedule: name.to_string(),
        })
    }

    /// As [`Spool::pause_queue`](crate::Spool::pause_queue).
    ///
    /// # Errors
    /// The owner's errors as `Remote`.
    pub fn pause_queue(&self, queue: &str) -> Result<bool, Error> {
        self.call(Call::PauseQueue {
            queue: queue.to_string(),
        })
    }

    /// As [`Spool::resume_queue`](crate::Spool::resume_queue).
    ///
    /// # Errors
    /// The owner's errors as `Remote`.
    pub fn resume_queue(&self, queue: &str) -> Result<bool, Error> {
        self.call(Call::ResumeQueue {
            queue: queue.to_string(),
        })
    }

    /// A subscription to the owner's events, on a connection of its own, with a buffer of
    /// `buffer` events in the owner (as [`Spool::events_with_buffer`](crate::Spool::events_with_buffer)).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn events(&self, buffer: usize) -> Result<RemoteEvents, Error> {
        let (mut stream, mut input) = connect(&self.path)?;
        write_frame(
            &mut stream,
            &ToOwner::Call {
                id: 1,
                call: Box::new(Call::Subscribe { buffer }),
            },
        )
        .map_err(|e| Error::Protocol(format!("the subscription was not sent: {e}")))?;
        match receive(&mut input)? {
            FromOwner::Reply { error: None, .. } => Ok(RemoteEvents { stream, input }),
            FromOwner::Reply {
                error: Some(error), ..
            }
            | FromOwner::Closing { error } => Err(error.into_error()),
            other => Err(Error::Protocol(format!(
                "a subscription answered with {other:?}"
            ))),
        }
    }
}

/// A subscription to a live queue's events from another process ([`Client::events`]).
#[derive(Debug)]
pub struct RemoteEvents {
    stream: UnixStream,
    input: BufReader<UnixStream>,
}

impl RemoteEvents {
    /// The next event, waiting up to `timeout`; `Ok(None)` if none came.
    ///
    /// # Errors
    /// `Closed` once the owner closed the queue; `Protocol` if the connection breaks.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        let io = |e: std::io::Error| Error::Protocol(format!("the connection failed: {e}"));
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(io)?;
        match read_frame(&mut self.input) {
            Ok(Frame::Bytes(body)) => match decode(&body)? {
                FromOwner::Event { event } => Ok(Some(event)),
                FromOwner::Closing { error } => Err(error.into_error()),
                other => Err(Error::Protocol(format!("an event stream sent {other:?}"))),
            },
            Ok(Frame::Idle) => Ok(None),
            Ok(Frame::Closed) => Err(Error::Closed),
            Err(e) => Err(e),
        }
    }
}
