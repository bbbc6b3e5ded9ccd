//! The commands callers and workers send to the writer thread, and the handle they send
//! them through.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::dispatch::{Job, WorkerSlots};
use crate::error::Error;
use crate::store::durable::LogSync;
use crate::store::schedules::ScheduleOp;
use crate::store::transitions::{Completion, NewTask};
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

/// The running writer thread and the channel to it.
pub(crate) struct WriterHandle {
    pub tx: Sender<Command>,
    /// The log's durability, which every reply is waited on.
    pub sync: Arc<LogSync>,
    pub(crate) join: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Sends a command; `Error::Closed` if the writer has exited.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        self.tx.send(cmd).map_err(|_| Error::Closed)
    }

    /// Sends a command built around a fresh reply channel and waits for the reply, and for
    /// the group that made it to be durable.
    pub(crate) fn request<T>(&self, build: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot();
        self.send(build(tx))?;
        let (reply, lsn) = rx.recv_at().map_err(|_| Error::Closed)?;
        let value = reply?;
        self.sync.wait(lsn)?;
        Ok(value)
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
