//! The handle to a running writer: the channel to its thread, its state (on which a caller
//! may run its own group, see `Writer::lead`), and what readers see of it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use redb::Database;

use crate::error::Error;
use crate::store::counts::CountsView;
use crate::store::pools::LivePools;
use crate::store::progress::Progress;
use crate::store::verbs::Lead;
use crate::store::wal::Wal;
use crate::store::writer::command::{Command, Reply};
use crate::store::writer::state::{Core, Loaded, Writer, WriterConfig, lock};
use crate::store::writer::thread::{self, Exited};
use crate::sync::{Promise, Waiters, oneshot};

/// The running writer thread, the channel to it, and the views readers take of its state.
pub(crate) struct WriterHandle {
    tx: Sender<Command>,
    rx: Receiver<Command>,
    core: Arc<Core>,
    /// The task counts and names as of the last durable group, for `stats` and `status`.
    counts: Arc<Mutex<CountsView>>,
    /// The live pools, for `stats` and `status`.
    live: LivePools,
    progress: Arc<Progress>,
    /// Set while acknowledged groups are not yet in redb (see [`WriterHandle::publish`]).
    unpublished: Arc<AtomicBool>,
    /// Set when the writer thread has ended (see `thread::run`).
    exited: Arc<Exited>,
    /// Why the writer stopped for good, if it did (see `Writer::stop`).
    stopped: Arc<OnceLock<Error>>,
    join: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Starts the writer thread over an opened, recovered database.
    pub(crate) fn spawn(
        db: Arc<Database>,
        config: WriterConfig,
        state: Loaded,
        wal: Wal,
        waiters: Arc<Waiters>,
    ) -> Result<WriterHandle, Error> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let tick = tx.clone();
        config
            .clock
            .subscribe(move || tick.send(Command::Tick).is_ok());
        let writer = Writer::new(db, config, state, wal, waiters);
        let (counts, live, unpublished, stopped, progress) = (
            writer.counts_view.clone(),
            writer.pools.live(),
            writer.unpublished.clone(),
            writer.stopped.clone(),
            writer.progress.clone(),
        );
        let core = Arc::new(Mutex::new(writer));
        let exited = Arc::new(Exited::default());
        let join = {
            let (core, rx, exited) = (core.clone(), rx.clone(), exited.clone());
            std::thread::Builder::new()
                .name("taskspool-writer".into())
                .spawn(move || thread::run(&core, &rx, &exited))
                .map_err(|e| Error::storage_from("cannot start the writer thread", e))?
        };
        Ok(WriterHandle {
            tx,
            rx,
            core,
            counts,
            live,
            progress,
            unpublished,
            exited,
            stopped,
            join: Some(join),
        })
    }

    /// Sends a command that has no reply; `Error::Closed` if the writer has exited.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Error> {
        self.tx.send(cmd).map_err(|_| Error::Closed)
    }

    /// A sender of commands that does not keep the writer running (for worker threads).
    pub(crate) fn sender(&self) -> Sender<Command> {
        self.tx.clone()
    }

    /// Sends a command built around a fresh reply and waits for the reply. An enqueue that
    /// finds the writer idle runs its own group (see `Writer::lead`). A writer that no longer
    /// runs answers at once, with why it stopped.
    pub(crate) fn request<T>(&self, build: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot();
        self.submit(build(tx))?;
        match rx.recv() {
            Ok(answer) => answer,
            Err(_) => {
                // Dropped unanswered: the writer panicked with it (on this thread, and has
                // recorded why already) or on its own thread, which is ending.
                if self.stopped.get().is_none() {
                    self.exited.wait();
                }
                Err(lock(&self.core).stopped_error())
            }
        }
    }

    /// As [`request`](Self::request), without waiting: `then` hears the answer, on the
    /// writer's thread (or on this one, if it ran its own group, or at once if the writer no
    /// longer runs). `then` must not block: it holds up the writer.
    pub(crate) fn request_then<T: Send + 'static>(
        &self,
        build: impl FnOnce(Reply<T>) -> Command,
        lead: Lead,
        then: Box<dyn FnOnce(Result<T, Error>) + Send>,
    ) {
        let stopped = self.stopped.clone();
        let cmd = build(Promise::calling(Box::new(move |answer| {
            // Dropped unanswered: the writer stopped (and says why), or is closing.
            then(answer.unwrap_or_else(|| Err(stopped.get().cloned().unwrap_or(Error::Closed))))
        })));
        // A command the channel refused is dropped there, which answers it.
        let _ = match lead {
            Lead::Allowed => self.submit(cmd),
            Lead::Never => self.queue(cmd),
        };
    }

    /// Runs `cmd` as this caller's own group if the writer is idle (see `Writer::lead`),
    /// else queues it for the writer thread. A writer that no longer runs answers at once,
    /// with why it stopped.
    fn submit(&self, cmd: Command) -> Result<(), Error> {
        let not_led = match self.core.try_lock() {
            Ok(mut writer) => writer.lead(cmd, &self.rx, &self.tx),
            Err(TryLockError::Poisoned(poisoned)) => {
                poisoned.into_inner().lead(cmd, &self.rx, &self.tx)
            }
            Err(TryLockError::WouldBlock) => Some(cmd),
        };
        match not_led {
            Some(cmd) => self.queue(cmd),
            None => Ok(()),
        }
    }

    /// Queues `cmd` for the writer thread. A writer that no longer runs answers at once.
    fn queue(&self, cmd: Command) -> Result<(), Error> {
        self.send(cmd)?;
        // The thread sets `exited` before it answers what is queued: if it is not set yet,
        // the thread will answer this command.
        if self.exited.is_set() {
            let mut writer = lock(&self.core);
            writer.refuse(self.rx.try_iter());
        }
        Ok(())
    }

    /// What tells whether the writer stopped for good (for reporters, which do not hold the
    /// handle).
    pub(crate) fn stopped(&self) -> Arc<OnceLock<Error>> {
        self.stopped.clone()
    }

    /// Why the writer stopped for good, if it did: then every call should return it.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match self.stopped.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Makes every acknowledged change visible to a new read transaction: the writer keeps
    /// logged groups in its open transaction until a reader needs them (see
    /// `writer::commit`). Call before `Database::begin_read`.
    pub(crate) fn publish(&self) -> Result<(), Error> {
        self.check()?;
        if self.unpublished.load(Ordering::Acquire) {
            let mut writer = lock(&self.core);
            let published = catch_unwind(AssertUnwindSafe(|| writer.publish()));
            match published {
                Ok(result) => result?,
                Err(panic) => {
                    writer.stop("committing for a reader", panic.as_ref());
                    drop(writer);
                    let _ = self.tx.send(Command::Tick);
                    return self.check();
                }
            }
        }
        Ok(())
    }

    /// Stops the writer for good after a panic in `what` on a reader's thread (a read of a
    /// damaged file); returns the error every later call gets.
    pub(crate) fn stop(&self, what: &str, panic: &(dyn std::any::Any + Send)) -> Error {
        lock(&self.core).stop(what, panic);
        let _ = self.tx.send(Command::Tick);
        self.check().err().unwrap_or(Error::Closed)
    }

    /// Fault injection: the next `n` log appends fail as on a full disk.
    #[cfg(test)]
    pub(crate) fn fail_log_appends(&self, n: usize) {
        lock(&self.core).wal.fail_next = n;
    }

    /// Whether the writer thread has ended.
    #[cfg(test)]
    pub(crate) fn exited(&self) -> bool {
        self.exited.is_set()
    }

    /// The counts and names as of the last durable group.
    pub(crate) fn counts(&self) -> &Mutex<CountsView> {
        &self.counts
    }

    /// The live pools.
    pub(crate) fn live(&self) -> &LivePools {
        &self.live
    }

    /// The progress running handlers reported.
    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The writer's state, for tests that hold it to make the writer busy.
    #[cfg(test)]
    pub(crate) fn core(&self) -> &Core {
        &self.core
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

/// Starts a writer over a file opened by `store::open` or `store::prepare` (for tests that
/// drive the writer without an engine); `buffered` as in [`WriterConfig`].
#[cfg(test)]
pub(crate) fn spawn_opened(
    opened: crate::store::open::Opened,
    buffered: Option<std::time::Duration>,
) -> (WriterHandle, Arc<Database>) {
    let db = Arc::new(opened.db);
    let config = WriterConfig {
        path: std::path::PathBuf::from("test.redb"),
        clock: crate::clock::Clock::System,
        result_ttl_ms: None,
        buffered,
        events: Arc::default(),
        metrics: Arc::default(),
    };
    let state = (
        opened.counters,
        opened.counts,
        opened.catalog,
        opened.flow,
        opened.orphan_chords,
    );
    let writer = WriterHandle::spawn(
        db.clone(),
        config,
        state,
        opened.wal,
        Arc::new(Waiters::default()),
    )
    .expect("the writer thread starts");
    (writer, db)
}
