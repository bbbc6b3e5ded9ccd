//! The commands callers and workers send to the writer thread, and the handle they send
//! them through.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::dispatch::{Job, WorkerSlots};
use crate::error::Error;
use crate::store::schedules::ScheduleOp;
use crate::store::transitions::{Completion, NewTask};
use crate::store::tx::CountsView;
use crate::store::writer::Core;
use crate::sync::{Promise, oneshot};

/// Where the writer sends the answer to one request.
pub(crate) type Reply<T> = Promise<Result<T, Error>>;

/// A request to the writer.
pub(crate) enum Command {
    /// Store new tasks; reply with their ids once durable.
    Enqueue {
        tasks: Vec<NewTask>,
        reply: Reply<Vec<u64>>,
    },
    /// An attempt finished; `worker` frees one of its slots.
    Complete {
        worker: Option<u64>,
        completion: Completion,
    },
    /// A claimed attempt that never started goes back to the ready index.
    Release { worker: u64, id: u64, attempt: u32 },
    /// A worker pool starts serving.
    Register {
        slots: WorkerSlots,
        reply: Reply<()>,
    },
    /// A worker pool stops: no more claims for it.
    Unregister { worker: u64, reply: Promise<()> },
    /// Claim due tasks once, for a synchronous drain on the caller's thread.
    ClaimOnce {
        queues: Vec<String>,
        names: HashSet<String>,
        max: usize,
        reply: Reply<Vec<Job>>,
    },
    /// Declare, remove, pause or resume a periodic schedule; replies whether it changed.
    Schedule { op: ScheduleOp, reply: Reply<bool> },
    /// Reply once everything sent before is committed.
    Sync { reply: Reply<()> },
    /// The manual clock moved: re-check due times.
    Tick,
    /// Commit what is pending and exit.
    Shutdown,
}

/// The running writer thread, the channel to it, and its state (on which a caller may run
/// its own group, see `Writer::lead`).
pub(crate) struct WriterHandle {
    pub tx: Sender<Command>,
    pub(crate) rx: Receiver<Command>,
    pub(crate) core: Arc<Core>,
    /// The task counts and names as of the last durable group, for `Spool::stats`.
    pub(crate) counts: Arc<std::sync::Mutex<CountsView>>,
    /// Set while acknowledged groups are not yet in redb (see [`WriterHandle::publish`]).
    pub(crate) unpublished: Arc<AtomicBool>,
    pub(crate) join: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Sends a command; `Error::Closed` if the writer has exited.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        self.tx.send(cmd).map_err(|_| Error::Closed)
    }

    /// Sends a command built around a fresh reply channel and waits for the reply.
    pub(crate) fn request<T>(&self, build: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot();
        let cmd = build(tx);
        let not_led = match self.core.try_lock() {
            Ok(mut writer) => writer.lead(cmd, &self.rx, &self.tx),
            Err(_) => Some(cmd),
        };
        if let Some(cmd) = not_led {
            self.send(cmd)?;
        }
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Makes every acknowledged change visible to a new read transaction: the writer keeps
    /// logged groups in its open transaction until a reader needs them (see
    /// `writer::commit`). Call before `Database::begin_read`.
    pub(crate) fn publish(&self) -> Result<(), Error> {
        if self.unpublished.load(Ordering::Acquire) {
            crate::store::writer::lock(&self.core).publish()?;
        }
        Ok(())
    }

    /// Asks the writer to finish and waits for it.
    pub(crate) fn shutdown(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(join) = self.join.take()
            && join.join().is_err()
        {
            tracing::error!("the taskspool writer thread panicked");
        }
    }
}
