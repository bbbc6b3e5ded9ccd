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

use crate::error::{Error, ErrorKind};
use crate::events::Event;
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
}

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

/// An error as it crosses the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
    /// The task a `not_found` error is about.
    #[serde(default)]
    pub task: Option<TaskId>,
}

impl RemoteError {
    pub(crate) fn of(e: &Error) -> RemoteError {
        RemoteError {
            kind: e.kind(),
            message: e.to_string(),
            task: match e {
                Error::NotFound(id) => Some(*id),
                _ => None,
            },
        }
    }

    /// The error a client returns for it.
    pub(crate) fn into_error(self) -> Error {
        match (self.kind, self.task) {
            (ErrorKind::NotFound, Some(id)) => Error::NotFound(id),
            (ErrorKind::Protocol, _) => Error::Protocol(self.message),
            (kind, _) => Error::Remote {
                kind,
                message: self.message,
            },
        }
    }
}

/// Writes one frame holding `message`.
pub(crate) fn write_frame(out: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::new(IoKind::InvalidData, "frame too long"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)?;
    out.flush()
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

/// Decodes a frame's message.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol(format!("a malformed frame: {e}")))
}
