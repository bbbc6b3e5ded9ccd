//! The control socket's protocol, spoken by the owner (`serve`) and by [`Client`](crate::Client).
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON (one message); a frame
//! longer than [`MAX_FRAME`] is refused. The client's first frame is a `hello` naming its
//! protocol version; the owner answers `welcome` with its own, or `refused` (and closes) if
//! they differ. Then each `call` frame, numbered by the client, gets one `reply` frame with
//! the same number, in order; a `subscribe` call turns the connection into a stream of `event`
//! frames. A connection that breaks the protocol hears `closing` with the reason and is
//! closed.

use std::io::{ErrorKind as IoKind, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Failure};
use crate::events::Event;
use crate::flow::{Limit, LimitTarget};
use crate::model::TaskId;
use crate::options::Options;
use crate::query::{Paging, TaskFilter};

/// The protocol version this build speaks.
pub(crate) const PROTOCOL: u32 = 1;

/// The longest frame either side accepts: 16 MiB.
pub(crate) const MAX_FRAME: usize = 16 << 20;

/// What a client sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToOwner {
    Hello { protocol: u32 },
    Call { id: u64, call: Box<Call> },
}

/// A call: one of the spool's verbs.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub(crate) enum Call {
    Stats,
    Status {
        task: TaskId,
    },
    Tasks {
        filter: TaskFilter,
        paging: Paging,
    },
    Schedules,
    Enqueue {
        name: String,
        arguments: Value,
        options: Options,
    },
    EnqueueMany {
        name: String,
        arguments: Vec<Value>,
        options: Options,
    },
    Revoke {
        task: TaskId,
    },
    RevokeWhere {
        filter: TaskFilter,
    },
    Retry {
        task: TaskId,
    },
    Forget {
        task: TaskId,
    },
    WorkflowStatus {
        task: TaskId,
    },
    PauseSchedule {
        schedule: String,
    },
    ResumeSchedule {
        schedule: String,
    },
    PauseQueue {
        queue: String,
    },
    ResumeQueue {
        queue: String,
    },
    Subscribe {
        buffer: usize,
    },
    /// Answered when the task is final, or with `timeout` after `timeout_ms` (at most
    /// [`MAX_WAIT_MS`]: a longer wait is several calls).
    Wait {
        task: TaskId,
        #[serde(default)]
        name: Option<String>,
        timeout_ms: u64,
    },
    RetryWhere {
        filter: TaskFilter,
    },
    RevokeWorkflow {
        task: TaskId,
    },
    Unschedule {
        schedule: String,
    },
    RunScheduleNow {
        schedule: String,
    },
    Limit {
        limit: Limit,
    },
    RemoveLimit {
        target: LimitTarget,
    },
    Limits,
    Flush,
    Checkpoint,
}

/// The longest one `wait` call waits in the owner, in ms: a connection thread never waits
/// longer for a peer that may have left.
pub(crate) const MAX_WAIT_MS: u64 = 30_000;

/// What the owner sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum FromOwner {
    Welcome {
        protocol: u32,
        server: String,
    },
    Refused {
        error: RemoteError,
    },
    Reply {
        id: u64,
        #[serde(default)]
        ok: Option<Value>,
        #[serde(default)]
        error: Option<RemoteError>,
    },
    Event {
        event: Event,
    },
    Closing {
        error: RemoteError,
    },
}

/// An error as it crosses the socket: its kind and message, and what a client needs to
/// return the owner's own error where it names a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default)]
    pub detail: Option<Detail>,
}

/// The errors a client gives back as the owner's own (anything else is `Error::Remote`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub(crate) enum Detail {
    NotFound { task: TaskId },
    Timeout { task: TaskId },
    TaskFailed { failure: Box<Failure> },
    TaskExpired { task: TaskId },
    TaskRevoked { task: TaskId },
    ScheduleNotFound { schedule: String },
    Closed,
}

impl RemoteError {
    pub(crate) fn of(e: &Error) -> RemoteError {
        RemoteError {
            kind: e.kind(),
            message: e.to_string(),
            detail: match e {
                Error::NotFound(task) => Some(Detail::NotFound { task: *task }),
                Error::Timeout(task) => Some(Detail::Timeout { task: *task }),
                Error::TaskFailed(failure) => Some(Detail::TaskFailed {
                    failure: failure.clone(),
                }),
                Error::TaskExpired(task) => Some(Detail::TaskExpired { task: *task }),
                Error::TaskRevoked(task) => Some(Detail::TaskRevoked { task: *task }),
                Error::ScheduleNotFound(schedule) => Some(Detail::ScheduleNotFound {
                    schedule: schedule.clone(),
                }),
                Error::Closed => Some(Detail::Closed),
                _ => None,
            },
        }
    }

    /// The error a client returns for it.
    pub(crate) fn into_error(self) -> Error {
        match (self.kind, self.detail) {
            (_, Some(Detail::NotFound { task })) => Error::NotFound(task),
            (_, Some(Detail::Timeout { task })) => Error::Timeout(task),
            (_, Some(Detail::TaskFailed { failure })) => Error::TaskFailed(failure),
            (_, Some(Detail::TaskExpired { task })) => Error::TaskExpired(task),
            (_, Some(Detail::TaskRevoked { task })) => Error::TaskRevoked(task),
            (_, Some(Detail::ScheduleNotFound { schedule })) => Error::ScheduleNotFound(schedule),
            (_, Some(Detail::Closed)) => Error::Closed,
            (ErrorKind::Protocol, None) => Error::Protocol(self.message),
            (kind, None) => Error::Remote {
                kind,
                message: self.message,
            },
        }
    }
}

/// Writes one frame holding `message`.
pub(crate) fn write_frame(out: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    out.write_all(&frame(message)?)?;
    out.flush()
}

/// One frame holding `message`: its length, then its JSON.
pub(crate) fn frame(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::new(IoKind::InvalidData, "frame too long"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// What reading a frame found.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A frame's bytes.
    Bytes(Vec<u8>),
    /// The peer closed the connection between frames.
    Closed,
    /// No frame started within the read timeout.
    Idle,
}

/// Reads one frame. A frame that starts must arrive whole within the read timeout; a length
/// over [`MAX_FRAME`] is an error (the body is not read).
pub(crate) fn read_frame(input: &mut impl Read) -> Result<Frame, Error> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(Frame::Closed),
            Ok(0) => {
                return Err(Error::Protocol(
                    "the peer closed the connection mid-frame".into(),
                ));
            }
            Ok(n) => got += n,
            Err(e) if got == 0 && is_timeout(&e) => return Ok(Frame::Idle),
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(e) => return Err(Error::Protocol(format!("reading a frame: {e}"))),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(Error::Protocol(format!(
            "a frame of {len} bytes; the limit is {MAX_FRAME}"
        )));
    }
    let mut body = vec![0; len];
    input
        .read_exact(&mut body)
        .map_err(|e| Error::Protocol(format!("reading a frame of {len} bytes: {e}")))?;
    Ok(Frame::Bytes(body))
}

/// Whether an I/O error is a socket timeout.
pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut)
}

/// A reply's value as JSON (a view, an id, a count…).
///
/// # Errors
/// `Json` if it does not serialize.
pub(crate) fn to_json(value: impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Json(format!("cannot encode a reply: {e}")))
}

/// Decodes a frame's message.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol(format!("a malformed frame: {e}")))
}
