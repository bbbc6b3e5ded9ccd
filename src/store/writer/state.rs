//! The writer's state: what one group at a time works on, and what it keeps between groups.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};

use crate::clock::Clock;
use crate::error::Error;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::signal::AttemptSignal;
use crate::store::catalog::Catalog;
use crate::store::counts::{Counters, Counts, CountsView, Tally};
use crate::store::flow::Flow;
use crate::store::idmap::IdMap;
use crate::store::pools::Pools;
use crate::store::progress::Progress;
use crate::store::redo::Redo;
use crate::store::running::Running;
use crate::store::tx::{Lent, Tx};
use crate::store::verbs::Completion;
use crate::store::wal::Wal;
use crate::sync::Waiters;

/// The longest the writer waits for the producers of the last group to join the next one.
pub(super) const GATHER: Duration = Duration::from_micros(200);

/// Most commands folded into one transaction.
pub(super) const MAX_GROUP: usize = 8_192;
/// Most scheduled tasks promoted, or results pruned, per transaction.
pub(super) const MAINTENANCE_BATCH: usize = 5_000;

/// Settings the writer needs.
pub(crate) struct WriterConfig {
    /// The queue file (for the errors that name it).
    pub path: PathBuf,
    pub clock: Clock,
    pub result_ttl_ms: Option<u64>,
    /// `Some(bound)`: buffered durability, the log is synced within `bound` of a write
    /// instead of before each reply (see `crate::Durability`).
    pub buffered: Option<Duration>,
    /// Where the events of durable groups go (see `crate::events`).
    pub events: Arc<EventHub>,
    /// Where the durable groups' metrics are counted (see `crate::metrics`).
    pub metrics: Arc<Metrics>,
}

/// The writer's state, shared by the writer's files (`group`, `commit`, `thread`).
pub(crate) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) config: WriterConfig,
    pub(super) counters: Counters,
    /// Task counts as of the last logged group (see `counts`); the file has them as of the
    /// last durable commit, the log has every change since.
    pub(super) counts: Counts,
    /// The same counts and the catalog, for `stats` and `status`.
    pub(super) counts_view: Arc<Mutex<CountsView>>,
    pub(super) catalog: Catalog,
    /// The live pools: the one registry of them.
    pub(super) pools: Pools,
    /// The signal of every attempt handed out and not yet reported, by task id: a revoke
    /// asks the running attempt to stop through it. Kept across failed groups (a signal
    /// stays valid as long as its attempt runs; one of a claim that a failed group rolled
    /// back is replaced when the task is claimed again).
    pub(super) signals: IdMap<(u32, Arc<AttemptSignal>)>,
    /// The progress handlers reported, until their attempt's completion takes it (see
    /// `store::progress`).
    pub(super) progress: Arc<Progress>,
    pub(super) waiters: Arc<Waiters>,
    pub(super) next_wake: Option<u64>,
    /// Completions from a group that failed, applied again with the next group.
    pub(super) retry: Vec<Completion>,
    /// Failed groups in a row.
    pub(super) failures: u32,
    /// After a failed group: when the writer thread applies `retry` again if no command
    /// comes first.
    pub(super) retry_at: Option<Instant>,
    /// Moving average of one group's transaction time (apply + commit), in microseconds.
    pub(super) avg_cycle_us: Option<f64>,
    /// How many enqueue callers the last group served (see `gather`).
    pub(super) last_callers: usize,
    /// Records of running tasks, lent to each transaction (see `Tx`).
    pub(super) running_cache: Running,
    /// The declared limits and pauses, lent to each transaction (see `store::flow`).
    pub(super) flow_cache: Flow,
    /// Chords a dead process left open (first id, sealed), finished or deleted a part per
    /// group (see `store::parts`); the last one first.
    pub(super) orphan_chords: Vec<(u64, bool)>,
    /// The write-ahead log that makes groups durable between checkpoints.
    pub(super) wal: Wal,
    /// The log is full: the next group commits durably to the queue file and restarts it.
    pub(super) checkpoint_due: bool,
    /// The redo buffer, lent to each transaction so its allocation is reused.
    pub(super) redo: Redo,
    /// The spool is shutting down: no group runs any more.
    pub(super) closed: bool,
    /// Why the writer stopped for good, if it did not simply close: a panic inside redb
    /// (a damaged file). Shared with the handle: every later call returns it.
    pub(super) stopped: Arc<OnceLock<Error>>,
    /// Fault injection: the next group panics, as redb does on some damaged files.
    #[cfg(test)]
    pub(crate) panic_next_group: bool,
    /// Buffered durability: when the oldest unsynced log record must be synced.
    pub(super) sync_deadline: Option<Instant>,
    /// The write transaction kept open across groups (see `commit`): it holds every group
    /// logged since the last commit to redb. `None` after a commit, and after a failure
    /// rolled it back.
    pub(super) held: Option<WriteTransaction>,
    /// The redo records of the logged groups not yet committed to redb, each length-prefixed:
    /// what builds `held` again after a failure rolled it back.
    pub(super) held_records: Vec<u8>,
    /// How many groups `held_records` has.
    pub(super) held_groups: usize,
    /// A failure rolled back changes the in-memory mirrors (queue ids, running records) may
    /// hold: they are read again with the next transaction.
    pub(super) stale: bool,
    /// Set while logged groups are not yet committed to redb, where readers look (shared with
    /// the handle: a reader then asks for a commit, see `WriterHandle::publish`).
    pub(super) unpublished: Arc<AtomicBool>,
}

/// The writer's state: run by the writer thread, or by a caller that finds it idle (see
/// [`Writer::lead`]).
pub(crate) type Core = Mutex<Writer>;

pub(crate) fn lock(core: &Core) -> std::sync::MutexGuard<'_, Writer> {
    core.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the open loaded for the writer: the counters, the counts, the catalog, the flow
/// mirror, and the chords a dead process left open.
pub(crate) type Loaded = (Counters, Counts, Catalog, Flow, Vec<(u64, bool)>);

impl Writer {
    /// A writer over an opened, recovered database.
    pub(super) fn new(
        db: Arc<Database>,
        config: WriterConfig,
        (counters, counts, catalog, flow, orphan_chords): Loaded,
        wal: Wal,
        waiters: Arc<Waiters>,
    ) -> Writer {
        Writer {
            db,
            config,
            counters,
            counts_view: Arc::new(Mutex::new(CountsView {
                counts: counts.clone(),
                catalog: catalog.clone(),
                paused: flow.paused().map(str::to_string).collect(),
            })),
            counts,
            catalog,
            pools: Pools::default(),
            signals: IdMap::default(),
            progress: Arc::default(),
            waiters,
            // Due at once: the first group scans the timed indexes.
            next_wake: Some(0),
            retry: Vec::new(),
            failures: 0,
            retry_at: None,
            avg_cycle_us: None,
            last_callers: 0,
            running_cache: Running::default(),
            flow_cache: flow,
            orphan_chords,
            wal,
            checkpoint_due: false,
            redo: Redo::default(),
            closed: false,
            stopped: Arc::new(OnceLock::new()),
            #[cfg(test)]
            panic_next_group: false,
            sync_deadline: None,
            held: None,
            held_records: Vec::new(),
            held_groups: 0,
            stale: false,
            unpublished: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A transaction's state, lent the writer's records of running tasks and its redo
    /// buffer. If the transaction fails they are not taken back: the records may hold
    /// writes that are rolled back, so the memory starts empty again (and is reloaded, see
    /// `stale`).
    pub(super) fn open_tx<'t>(&mut self, txn: &'t WriteTransaction, now: u64) -> Tx<'t> {
        let lent = Lent {
            running: std::mem::take(&mut self.running_cache),
            flow: std::mem::take(&mut self.flow_cache),
            redo: std::mem::take(&mut self.redo),
            events: self.config.events.active().then(Vec::new),
        };
        Tx::open(txn, now, self.counters, self.config.result_ttl_ms, lent)
    }

    /// Takes back what [`Writer::open_tx`] lent; returns the redo record, for
    /// [`Writer::commit`].
    pub(super) fn take_back(&mut self, tx: Tx<'_>) -> Redo {
        let lent = tx.into_lent();
        self.running_cache = lent.running;
        self.flow_cache = lent.flow;
        lent.redo
    }

    /// Keeps a durable transaction's counters and counts (and shows them, with any new
    /// names, to `stats` and `status`).
    pub(super) fn keep(&mut self, tally: &Tally) {
        self.counters = tally.counters;
        tally.apply(&mut self.counts);
        let mut view = self
            .counts_view
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tally.apply(&mut view.counts);
        let catalog = &self.catalog;
        if (view.catalog.queues.len(), view.catalog.names.len())
            != (catalog.queues.len(), catalog.names.len())
        {
            view.catalog = catalog.clone();
        }
        show_pauses(&self.flow_cache, &mut view);
    }

    /// Shows the paused queues to `stats` (after the mirror was read again).
    pub(super) fn show_pauses(&self) {
        let mut view = self
            .counts_view
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        show_pauses(&self.flow_cache, &mut view);
    }
}

fn show_pauses(flow: &Flow, view: &mut CountsView) {
    if !flow.paused().eq(view.paused.iter().map(String::as_str)) {
        view.paused = flow.paused().map(str::to_string).collect();
    }
}

impl Writer {
    /// Stops the writer for good after a panic in `what` (redb panics on some damaged
    /// files): the open transaction is dropped, and every later call returns the error.
    pub(super) fn stop(&mut self, what: &str, panic: &(dyn Any + Send)) {
        let e = panicked(&self.config.path, what, panic);
        tracing::error!(error = %e, "taskspool stopped its writer");
        let _ = self.stopped.set(e);
        self.closed = true;
        let held = self.held.take();
        // Dropping a transaction of a damaged file can panic again; it is abandoned either way.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(held)));
    }

    /// The error a caller of a writer that no longer runs gets.
    pub(super) fn stopped_error(&self) -> Error {
        self.stopped.get().cloned().unwrap_or(Error::Closed)
    }
}

/// The error for a panic in `what` while working on the queue file at `path`.
pub(crate) fn panicked(path: &std::path::Path, what: &str, panic: &(dyn Any + Send)) -> Error {
    let message = if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    };
    Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "redb panicked while {what} ({message}), which it does on a damaged file; the spool \
             has stopped and every later call returns this error"
        ),
    }
}
