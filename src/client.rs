//! [`Client`]: a live queue reached from another process, through its owner's control socket
//! (see `protocol` for the frames).

use std::io::{BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::events::Event;
use crate::flow::{Limit, LimitTarget};
use crate::model::{Revoke, Revoked, TaskId};
use crate::options::Options;
use crate::protocol::{
    Call, Frame, FromOwner, MAX_WAIT_MS, PROTOCOL, ToOwner, decode, read_frame, write_frame,
};
use crate::query::{Paging, TaskFilter};
use crate::registry::encode_arguments;
use crate::schedule::ScheduleInfo;
use crate::store::socket_path;
use crate::task::Task;
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

    /// Enqueues a task of type `T` in the owner, with its type's default options, durably
    /// (returns after the owner's sync). The owner needs no knowledge of `T`: the task goes
    /// by its name and JSON arguments, as with [`enqueue_json`](Self::enqueue_json).
    ///
    /// # Errors
    /// `Json` if the task does not serialize; as [`enqueue_json`](Self::enqueue_json).
    pub fn enqueue<T: Task>(&self, task: T) -> Result<TaskId, Error> {
        self.enqueue_with(task, Options::new())
    }

    /// As [`enqueue`](Self::enqueue), with options layered over the type's defaults.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_with<T: Task>(&self, task: T, options: Options) -> Result<TaskId, Error> {
        self.enqueue_json(T::NAME, arguments(&task)?, options.over(T::defaults()))
    }

    /// Enqueues many tasks of type `T` with their type's default options, in one
    /// transaction of the owner. Their ids, in order.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_many<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<TaskId>, Error> {
        self.enqueue_many_with(tasks, Options::new())
    }

    /// Enqueues many tasks of type `T` with the same options (over the type's defaults), in
    /// one transaction of the owner: all are stored, or none. Their ids, in order.
    ///
    /// # Errors
    /// As [`enqueue`](Self::enqueue).
    pub fn enqueue_many_with<T: Task>(
        &self,
        tasks: impl IntoIterator<Item = T>,
        options: Options,
    ) -> Result<Vec<TaskId>, Error> {
        let arguments = tasks
            .into_iter()
            .map(|task| arguments(&task))
            .collect::<Result<Vec<_>, Error>>()?;
        self.enqueue_many_json(T::NAME, arguments, options.over(T::defaults()))
    }

    /// Blocks until task `id`, of type `T`, reaches a final state or `timeout` passes, as
    /// [`TaskHandle::wait`](crate::TaskHandle::wait): the owner answers on the commit that
    /// stores the result (no polling on either side).
    ///
    /// # Errors
    /// As [`TaskHandle::wait`](crate::TaskHandle::wait): `Timeout`, `TaskFailed` (with the
    /// error history), `TaskExpired`, `TaskRevoked`, `NotFound`, `WrongTask` (as `Remote`,
    /// kind `InvalidInput`) if the task is of another type, `Json` if the output does not
    /// decode into `T::Output`; `Closed` if the owner closes the queue meanwhile.
    pub fn wait<T: Task>(&self, id: TaskId, timeout: Duration) -> Result<T::Output, Error> {
        let output = self.wait_for(id, Some(T::NAME), timeout)?;
        serde_json::from_value(output)
            .map_err(|e| Error::Json(format!("the stored result does not decode: {e}")))
    }

    /// As [`wait`](Self::wait) for a task of any type: its output as JSON.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_json(&self, id: TaskId, timeout: Duration) -> Result<Value, Error> {
        self.wait_for(id, None, timeout)
    }

    /// A wait in calls of at most `MAX_WAIT_MS` each, so the owner's connection thread never
    /// waits long for a client that may have gone.
    fn wait_for(&self, id: TaskId, name: Option<&str>, timeout: Duration) -> Result<Value, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            let answer = self.call(Call::Wait {
                task: id,
                name: name.map(str::to_string),
                timeout_ms,
            });
            match answer {
                Err(Error::Timeout(_)) if timeout_ms > MAX_WAIT_MS => {}
                done => return done,
            }
        }
    }

    /// As [`Spool::retry_where`](crate::Spool::retry_where): how many tasks go again.
    ///
    /// # Errors
    /// The owner's errors as `Remote`; `Protocol` if the connection fails.
    pub fn retry_where(&self, filter: &TaskFilter) -> Result<u64, Error> {
        self.call(Call::RetryWhere {
            filter: filter.clone(),
        })
    }

    /// As [`Spool::revoke_workflow`](crate::Spool::revoke_workflow).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; the owner's others as `Remote`.
    pub fn revoke_workflow(&self, id: TaskId) -> Result<Revoked, Error> {
        self.call(Call::RevokeWorkflow { task: id })
    }

    /// As [`Spool::unschedule`](crate::Spool::unschedule): whether the schedule existed.
    ///
    /// # Errors
    /// The owner's errors as `Remote`; `Protocol` if the connection fails.
    pub fn unschedule(&self, name: &str) -> Result<bool, Error> {
        self.call(Call::Unschedule {
            schedule: name.to_string(),
        })
    }

    /// As [`Spool::run_schedule_now`](crate::Spool::run_schedule_now): whether a task was
    /// created.
    ///
    /// # Errors
    /// `ScheduleNotFound` if the owner has no schedule of this name; `Protocol` if the
    /// connection fails.
    pub fn run_schedule_now(&self, name: &str) -> Result<bool, Error> {
        self.call(Call::RunScheduleNow {
            schedule: name.to_string(),
        })
    }

    /// As [`Spool::limit`](crate::Spool::limit): declares or replaces a limit in the
    /// owner; whether it changed anything.
    ///
    /// # Errors
    /// The owner's errors as `Remote` (an invalid limit: kind `InvalidInput`).
    pub fn limit(&self, limit: Limit) -> Result<bool, Error> {
        self.call(Call::Limit { limit })
    }

    /// As [`Spool::remove_limit`](crate::Spool::remove_limit).
    ///
    /// # Errors
    /// As [`limit`](Self::limit).
    pub fn remove_limit(&self, target: LimitTarget) -> Result<bool, Error> {
        self.call(Call::RemoveLimit { target })
    }

    /// As [`Spool::limits`](crate::Spool::limits).
    ///
    /// # Errors
    /// The owner's errors as `Remote`; `Protocol` if the connection fails.
    pub fn limits(&self) -> Result<Vec<Limit>, Error> {
        self.call(Call::Limits)
    }

    /// As [`Spool::flush`](crate::Spool::flush).
    ///
    /// # Errors
    /// The owner's errors as `Remote`; `Protocol` if the connection fails.
    pub fn flush(&self) -> Result<(), Error> {
        self.call(Call::Flush)
    }

    /// As [`Spool::checkpoint`](crate::Spool::checkpoint): returns once everything the owner
    /// acknowledged is in the queue file itself.
    ///
    /// # Errors
    /// The owner's errors as `Remote`; `Protocol` if the connection fails.
    pub fn checkpoint(&self) -> Result<(), Error> {
        self.call(Call::Checkpoint)
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

/// A task's arguments as JSON, checked as a local enqueue checks them (`encode_arguments`:
/// a NaN would otherwise reach the owner as `null`).
fn arguments<T: Task>(task: &T) -> Result<Value, Error> {
    let bytes = encode_arguments(task)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Json(format!("cannot encode the arguments of `{}`: {e}", T::NAME)))
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
