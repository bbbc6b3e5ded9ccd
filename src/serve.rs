//! The owner's control socket (`<file>.sock`, see `protocol`): how another process reaches a
//! live queue ([`Client`](crate::Client)).
//!
//! The socket is bound under a temporary name, given mode 0600 and renamed into place, so it
//! is never reachable with a wider mode; a socket file left by a dead owner is replaced (the
//! file lock makes this process the only owner). One thread accepts; each connection gets a
//! thread of its own, at most [`MAX_CONNECTIONS`] at once, which calls the spool's verbs —
//! an enqueue from another process joins the owner's group commit and is answered after its
//! sync, like a local one. Nothing a client does reaches the writer other than through those
//! verbs: a malformed or oversized frame, another protocol version, a client that stalls
//! mid-frame or stops reading its replies gets an error (where it can still hear one) and is
//! disconnected; its thread holds at most one frame. The threads reach the spool through an
//! [`Owner`] that holds it weakly: the spool closes when the application drops it, and then
//! the socket goes.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::protocol::{
    Call, Frame, FromOwner, PROTOCOL, RemoteError, ToOwner, decode, frame, read_frame, write_frame,
};
use crate::store::{PRIVATE, socket_path};

/// Connections served at once; more are told so and closed.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// How long a frame may take to arrive once it started, and a reply to be taken.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the socket serves: the spool's verbs (implemented above this module, by
/// `spool::remote`, on a weak handle to the spool).
pub(crate) trait Owner: Send + Sync + 'static {
    /// Answers `call` through `done`, with its JSON, or `None` once the spool is closed:
    /// before returning, for most calls; for an enqueue, once the writer made it durable, on
    /// whichever thread answers (the writer's, usually), so `done` never blocks.
    fn answer(&self, call: Call, done: Done);
    /// A subscription to the spool's events; `None` once it is closed.
    fn subscribe(&self, buffer: usize) -> Option<crate::events::Events>;
    /// Whether the spool is closed.
    fn closed(&self) -> bool;
}

/// What hears a call's answer (see [`Owner::answer`]).
pub(crate) type Done = Box<dyn FnOnce(Option<Result<Value, Error>>) + Send>;

/// The open connections, by number (each thread removes its own when it ends).
type Connections = Arc<Mutex<HashMap<u64, UnixStream>>>;

/// A served control socket; dropping it stops serving and removes the socket file.
pub(crate) struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The listening socket (a duplicate of the accept thread's), to wake that thread.
    listener: UnixListener,
    accept: Option<JoinHandle<()>>,
    /// The open connections by number, to shut them down when the socket goes.
    connections: Connections,
}

impl ControlSocket {
    /// Serves the socket of the queue file `queue` for `spool`.
    ///
    /// # Errors
    /// `Storage` if the socket cannot be bound (its path is too long for a Unix socket, or
    /// the directory refuses).
    pub(crate) fn start(queue: &Path, spool: Arc<dyn Owner>) -> Result<ControlSocket, Error> {
        let path = socket_path(queue);
        let listener = bind_private(&path)?;
        let waker = listener
            .try_clone()
            .map_err(|e| Error::storage_from("cannot serve the control socket", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Connections::default();
        let accept = {
            let (stop, connections) = (stop.clone(), connections.clone());
            std::thread::Builder::new()
                .name("taskspool-socket".into())
                .spawn(move || accept_loop(listener, spool, stop, connections))
                .map_err(|e| Error::storage_from("cannot start the control socket's thread", e))?
        };
        Ok(ControlSocket {
            path,
            stop,
            listener: waker,
            accept: Some(accept),
            connections,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which sees the stop: a shut-down listening socket fails its
        // blocked `accept` (connecting to the path would not reach it if the file is gone).
        // SAFETY: `shutdown` takes a descriptor and flags and touches no memory of ours; the
        // descriptor is valid, owned by `self.listener` until after this call.
        let _ = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for (_, stream) in lock(&self.connections).drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Binds `path` with mode 0600: under a temporary name in the same directory, then renamed.
fn bind_private(path: &Path) -> Result<UnixListener, Error> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let _ = std::fs::remove_file(&temp);
    let bind = |e| Error::storage_from(&format!("cannot serve {}", path.display()), e);
    let listener = UnixListener::bind(&temp).map_err(bind)?;
    let private = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(PRIVATE))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = private {
        let _ = std::fs::remove_file(&temp);
        return Err(bind(e));
    }
    Ok(listener)
}

fn accept_loop(
    listener: UnixListener,
    spool: Arc<dyn Owner>,
    stop: Arc<AtomicBool>,
    connections: Connections,
) {
    let live = Arc::new(AtomicUsize::new(0));
    for (n, stream) in (0u64..).zip(listener.incoming()) {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else {
            // A failed accept (out of descriptors…): the next one is tried, not at once.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if live.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let error = Error::Protocol(format!(
                "the owner serves {MAX_CONNECTIONS} connections at once; close one and retry"
            ));
            refuse(&mut stream, &error);
            continue;
        }
        if let Ok(clone) = stream.try_clone() {
            lock(&connections).insert(n, clone);
        }
        live.fetch_add(1, Ordering::SeqCst);
        let (spool, count, open) = (spool.clone(), live.clone(), connections.clone());
        let spawned = std::thread::Builder::new()
            .name("taskspool-client".into())
            .spawn(move || {
                if let Err(e) = serve(&mut stream, &*spool) {
                    tracing::debug!(error = %e, "control socket connection closed");
                }
                lock(&open).remove(&n);
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            lock(&connections).remove(&n);
            live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Tells the peer why it is disconnected, if it still listens, and closes.
fn refuse(stream: &mut UnixStream, error: &Error) {
    // Said if the socket takes it soon: a peer that does not read is not waited for again.
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = write_frame(
        stream,
        &FromOwner::Closing {
            error: RemoteError::of(error),
        },
    );
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// One connection: the hello, then calls until the peer leaves or breaks the protocol.
fn serve(stream: &mut UnixStream, spool: &dyn Owner) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Protocol(format!("the connection failed: {e}"));
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let result = converse(stream, spool);
    if let Err(e) = &result {
        refuse(stream, e);
    }
    result
}

fn converse(stream: &mut UnixStream, spool: &dyn Owner) -> Result<(), Error> {
    // Reads through a buffer: a whole small frame in one read.
    let mut input = BufReader::new(
        stream
            .try_clone()
            .map_err(|e| Error::Protocol(format!("the connection failed: {e}")))?,
    );
    let outbox = Arc::new(Outbox {
        stream: stream
            .try_clone()
            .map_err(|e| Error::Protocol(format!("the connection failed: {e}")))?,
        state: Mutex::new(Due::Idle),
        sent: Condvar::new(),
    });
    let send = |stream: &mut UnixStream, msg: &FromOwner| {
        write_frame(stream, msg).map_err(|e| Error::Protocol(format!("a reply was not taken: {e}")))
    };
    // The hello.
    let hello = match read_frame(&mut input)? {
        Frame::Bytes(body) => decode::<ToOwner>(&body)?,
        Frame::Closed => return Ok(()),
        Frame::Idle => {
            return Err(Error::Protocol(format!(
                "no hello within {} s",
                IO_TIMEOUT.as_secs()
            )));
        }
    };
    match hello {
        ToOwner::Hello { protocol } if protocol == PROTOCOL => send(
            stream,
            &FromOwner::Welcome {
                protocol: PROTOCOL,
                server: format!("taskspool {}", env!("CARGO_PKG_VERSION")),
            },
        )?,
        ToOwner::Hello { protocol } => {
            let error = Error::Protocol(format!(
                "the client speaks protocol {protocol}; this owner speaks {PROTOCOL}: use a \
                 taskspool client of the owner's version"
            ));
            send(
                stream,
                &FromOwner::Refused {
                    error: RemoteError::of(&error),
                },
            )?;
            return Ok(());
        }
        ToOwner::Call { .. } => {
            return Err(Error::Protocol("the first frame must be a hello".into()));
        }
    }
    loop {
        let body = match read_frame(&mut input)? {
            Frame::Bytes(body) => body,
            Frame::Closed => return Ok(()),
            Frame::Idle => {
                if spool.closed() {
                    return Ok(());
                }
                continue;
            }
        };
        let (id, call) = match decode::<ToOwner>(&body)? {
            ToOwner::Call { id, call } => (id, *call),
            ToOwner::Hello { .. } => return Err(Error::Protocol("a second hello".into())),
        };
        if let Call::Subscribe { buffer } = call {
            outbox.wait_idle();
            let events = spool.subscribe(buffer).ok_or(Error::Closed)?;
            send(
                stream,
                &FromOwner::Reply {
                    id,
                    ok: Some(Value::Null),
                    error: None,
                },
            )?;
            return stream_events(stream, events);
        }
        outbox.call(id, call, spool)?;
    }
}

/// Where a connection's replies go out. A reply given while the connection's thread is still
/// in [`Owner::answer`] is written by that thread (blocking, within `IO_TIMEOUT`); one given
/// later — an enqueue's, from the writer's thread once durable — is written by whoever gives
/// it, at once and without blocking, so the connection's thread does not wake for it. The
/// client sends its next call after the reply: then the socket has room for a small reply,
/// which an enqueue's is (see `spool::remote`); a peer that fills it by not reading its
/// replies is disconnected. The next call waits for a reply still due, so replies keep the
/// order of their calls.
struct Outbox {
    stream: UnixStream,
    state: Mutex<Due>,
    sent: Condvar,
}

/// Where a connection's reply stands.
enum Due {
    /// Nothing is due.
    Idle,
    /// The call is being answered on the connection's thread.
    Calling,
    /// Answered while `Calling`: for the connection's thread to write.
    Answered(FromOwner),
    /// Whoever answers writes it.
    Later,
}

impl Outbox {
    /// Answers call `id` (after the reply before it is out).
    fn call(self: &Arc<Self>, id: u64, call: Call, spool: &dyn Owner) -> Result<(), Error> {
        self.wait_idle();
        *lock(&self.state) = Due::Calling;
        let outbox = self.clone();
        spool.answer(call, Box::new(move |answer| outbox.answered(id, answer)));
        let mut due = lock(&self.state);
        match std::mem::replace(&mut *due, Due::Later) {
            Due::Answered(reply) => {
                *due = Due::Idle;
                drop(due);
                if matches!(reply, FromOwner::Closing { .. }) {
                    // The spool closed: `serve` says so as it disconnects.
                    return Err(Error::Closed);
                }
                write_frame(&mut &self.stream, &reply)
                    .map_err(|e| Error::Protocol(format!("a reply was not taken: {e}")))
            }
            _ => Ok(()),
        }
    }

    /// Returns once no reply is due.
    fn wait_idle(&self) {
        let mut due = lock(&self.state);
        while matches!(*due, Due::Later) {
            due = self.sent.wait(due).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The reply to call `id`: kept for the connection's thread, or written now.
    fn answered(&self, id: u64, answer: Option<Result<Value, Error>>) {
        let reply = match answer {
            Some(Ok(value)) => FromOwner::Reply {
                id,
                ok: Some(value),
                error: None,
            },
            Some(Err(e)) => FromOwner::Reply {
                id,
                ok: None,
                error: Some(RemoteError::of(&e)),
            },
            None => FromOwner::Closing {
                error: RemoteError::of(&Error::Closed),
            },
        };
        let mut due = lock(&self.state);
        if matches!(*due, Due::Calling) {
            *due = Due::Answered(reply);
            return;
        }
        let closing = matches!(reply, FromOwner::Closing { .. });
        if !frame(&reply).is_ok_and(|bytes| send_now(&self.stream, &bytes)) || closing {
            tracing::debug!("a control socket client left unread replies; disconnecting it");
            let _ = self.stream.shutdown(std::net::Shutdown::Both);
        }
        *due = Due::Idle;
        drop(due);
        self.sent.notify_all();
    }
}

/// Writes all of `bytes` if the socket takes them now; whether it did.
fn send_now(stream: &UnixStream, bytes: &[u8]) -> bool {
    let mut sent = 0;
    while sent < bytes.len() {
        let rest = &bytes[sent..];
        // SAFETY: the pointer and length describe `rest`, alive and unchanged for the call,
        // which only reads from it; the descriptor is valid, owned by `stream` throughout.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        match usize::try_from(n) {
            Ok(n) => sent += n,
            Err(_) if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
            }
            Err(_) => return false,
        }
    }
    true
}

/// Sends events until the spool closes or the peer stops taking them.
fn stream_events(stream: &mut UnixStream, mut events: crate::Events) -> Result<(), Error> {
    loop {
        match events.recv_timeout(IO_TIMEOUT) {
            Ok(Some(event)) => write_frame(stream, &FromOwner::Event { event })
                .map_err(|e| Error::Protocol(format!("events were not taken: {e}")))?,
            Ok(None) => {
                // Notice, once per quiet `IO_TIMEOUT`, a peer that left: it sends nothing
                // after its subscribe, so a read finds the end of the stream, or times out.
                let mut byte = [0u8; 1];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
                match std::io::Read::read(stream, &mut byte) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {
                        return Err(Error::Protocol(
                            "a frame after subscribe: an event stream only sends".into(),
                        ));
                    }
                    Err(e) if crate::protocol::is_timeout(&e) => {}
                    Err(_) => return Ok(()),
                }
            }
            Err(_) => return Ok(()),
        }
    }
}
