//! The file engine: the verbs of `verbs` on one redb file, its write-ahead log (`wal`) and its
//! start journal (`inflight`). Writes go through the writer (`writer`), which groups them;
//! reads go to redb snapshots once the writer has published what it holds (`read`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use crossbeam_channel::Sender;
use redb::{Database, ReadableDatabase};

use crate::clock::Clock;
use crate::error::Error;
use crate::events::{EventHub, Events};
use crate::flow::Limit;
use crate::metrics::Metrics;
use crate::model::{PoolId, Revoke, Revoked, TaskId, TaskState};
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::store::errors::Db;
use crate::store::inflight::Inflight;
use crate::store::open::{Settings, open_with};
use crate::store::progress::Progress;
use crate::store::verbs::{
    Completion, Engine, Enqueued, FlowOp, Job, Lead, NewTask, PartOp, PoolSpec, Reporter,
    ScheduleOp, Serves, Then, ThreadSlot,
};
use crate::store::writer::{Command, WriterConfig, WriterHandle};
use crate::store::{query, read};
use crate::sync::Waiters;
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// How to open a queue file.
pub(crate) struct FileConfig {
    pub clock: Clock,
    /// How long finished tasks are kept; `None`: forever.
    pub result_ttl_ms: Option<u64>,
    /// The most memory redb's page cache may use.
    pub cache_bytes: usize,
    /// How much log accumulates before a checkpoint.
    pub checkpoint_bytes: u64,
    /// `Some(bound)`: buffered durability, synced within `bound`.
    pub buffered: Option<Duration>,
    /// Open even if the write-ahead log is damaged (see `SpoolBuilder::accept_log_damage`).
    pub accept_log_damage: bool,
    /// Verify every page at open (see `SpoolBuilder::check_integrity`).
    pub check_integrity: bool,
    /// Power-loss tests: a simulated disk under the file and its log.
    #[cfg(test)]
    pub disk: Option<Arc<crate::store::simdisk::SimDisk>>,
}

/// The engine of one open queue file. Dropping it commits what is pending, checkpoints the
/// log and releases the file.
pub(crate) struct FileEngine {
    writer: WriterHandle,
    db: Arc<Database>,
    journal: Arc<Inflight>,
    events: Arc<EventHub>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl FileEngine {
    /// Opens (or creates) the queue file at `path`: checks that it is ours and of a format we
    /// read (refusing it untouched otherwise), replays its log, recovers the attempts a dead
    /// owner left running, and starts the writer.
    ///
    /// # Errors
    /// `AlreadyOpen`, `Corrupt` (also for a damaged, missing or foreign log), `NotAQueue` or
    /// `NewerFormat` for a file that cannot be used (it is left untouched);
    /// `Storage`/`DiskFull` on I/O failure.
    pub(crate) fn open(
        path: &Path,
        config: FileConfig,
        waiters: Arc<Waiters>,
    ) -> Result<FileEngine, Error> {
        let settings = Settings {
            now_ms: config.clock.now_ms(),
            result_ttl_ms: config.result_ttl_ms,
            cache_bytes: config.cache_bytes,
            checkpoint_bytes: config.checkpoint_bytes,
            accept_log_damage: config.accept_log_damage,
            check_integrity: config.check_integrity,
            #[cfg(test)]
            disk: config.disk,
        };
        let opened = open_with(path, &settings)?;
        let events = Arc::new(EventHub::default());
        let metrics = Arc::new(Metrics::default());
        events.set_recovered(opened.recovered.0, opened.recovered.1);
        let clock = config.clock.clone();
        let db = Arc::new(opened.db);
        let writer = WriterHandle::spawn(
            db.clone(),
            WriterConfig {
                path: path.to_path_buf(),
                clock: config.clock,
                result_ttl_ms: config.result_ttl_ms,
                buffered: config.buffered,
                events: events.clone(),
                metrics: metrics.clone(),
            },
            (
                opened.counters,
                opened.counts,
                opened.catalog,
                opened.flow,
                opened.orphan_chords,
            ),
            opened.wal,
            waiters,
        )?;
        Ok(FileEngine {
            writer,
            db,
            journal: Arc::new(opened.inflight),
            events,
            metrics,
            clock,
        })
    }

    /// The database, for a read transaction that sees every acknowledged change.
    fn published(&self) -> Result<&Database, Error> {
        self.writer.publish()?;
        Ok(&self.db)
    }

    /// A running task's latest progress is in memory until its attempt ends.
    fn overlay_progress(&self, status: &mut TaskStatus) {
        if status.state == TaskState::Running
            && let Some(json) = self.writer.progress().get(status.id, status.attempts)
        {
            status.progress = serde_json::from_slice(&json).ok();
        }
    }

    /// Runs a read. redb panics on some damaged pages: that stops the engine, and the read
    /// and every later call return a `Corrupt` error.
    fn read<T>(&self, what: &str, read: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        self.writer.check()?;
        match catch_unwind(AssertUnwindSafe(read)) {
            Ok(result) => result,
            Err(panic) => Err(self.writer.stop(what, panic.as_ref())),
        }
    }
}

impl Drop for FileEngine {
    fn drop(&mut self) {
        self.writer.shutdown();
        // Subscribers read what is buffered, then hear that the spool is closed.
        self.events.close();
    }
}

impl Engine for FileEngine {
    fn insert(&self, tasks: Vec<NewTask>) -> Result<Vec<Enqueued>, Error> {
        self.writer
            .request(|reply| Command::Enqueue { tasks, reply })
    }

    fn insert_then(&self, tasks: Vec<NewTask>, lead: Lead, then: Then<Vec<Enqueued>>) {
        self.writer
            .request_then(|reply| Command::Enqueue { tasks, reply }, lead, then);
    }

    fn schedule(&self, op: ScheduleOp) -> Result<bool, Error> {
        self.writer.request(|reply| Command::Schedule { op, reply })
    }

    fn flow(&self, op: FlowOp) -> Result<bool, Error> {
        self.writer.request(|reply| Command::Flow { op, reply })
    }

    fn parts(&self, op: PartOp) -> Result<u64, Error> {
        self.writer.request(|reply| Command::Parts { op, reply })
    }

    fn limits(&self) -> Result<Vec<Limit>, Error> {
        self.read("reading the limits", || read::limits(self.published()?))
    }

    fn register(&self, pool: PoolSpec, jobs: Sender<Job>) -> Result<(), Error> {
        self.writer
            .request(|reply| Command::Register { pool, jobs, reply })
    }

    fn unregister(&self, pool: PoolId) {
        // A failed group still unregisters: the pool is gone from the writer's memory.
        let _ = self
            .writer
            .request(|reply| Command::Unregister { pool, reply });
    }

    fn claim(&self, serves: &Serves, max: usize) -> Result<Vec<Job>, Error> {
        let serves = serves.clone();
        self.writer
            .request(|reply| Command::Claim { serves, max, reply })
    }

    fn reporter(&self, in_flight: usize) -> Arc<dyn Reporter> {
        Arc::new(FileReporter {
            writer: self.writer.sender(),
            stopped: self.writer.stopped(),
            journal: self.journal.clone(),
            progress: self.writer.progress().clone(),
            // One more than can be pending: the note of the attempt starting now.
            ring: u64::try_from(in_flight).unwrap_or(u64::MAX / 2).max(1) + 1,
        })
    }

    fn sync(&self) -> Result<(), Error> {
        self.writer.request(|reply| Command::Sync { reply })
    }

    fn checkpoint(&self) -> Result<(), Error> {
        self.writer.request(|reply| Command::Checkpoint { reply })
    }

    fn revoke(&self, id: TaskId) -> Result<Revoke, Error> {
        self.writer.request(|reply| Command::Revoke { id, reply })
    }

    fn revoke_where(&self, filter: TaskFilter) -> Result<Revoked, Error> {
        self.writer
            .request(|reply| Command::RevokeWhere { filter, reply })
    }

    fn revoke_workflow(&self, id: TaskId) -> Result<Revoked, Error> {
        self.writer
            .request(|reply| Command::RevokeWorkflow { id, reply })
    }

    fn workflow_status(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        self.read("reading a workflow", || {
            read::workflow(self.published()?, id)
        })
    }

    fn retry_where(&self, filter: TaskFilter) -> Result<u64, Error> {
        self.writer
            .request(|reply| Command::RetryWhere { filter, reply })
    }

    fn retry(&self, id: TaskId) -> Result<(), Error> {
        self.writer.request(|reply| Command::Retry { id, reply })
    }

    fn forget(&self, id: TaskId) -> Result<(), Error> {
        self.writer.request(|reply| Command::Forget { id, reply })
    }

    fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        self.read("reading a task", || {
            let db = self.published()?;
            let mut status = read::status(db, self.writer.counts(), self.writer.live(), id)?;
            self.overlay_progress(&mut status);
            Ok(status)
        })
    }

    fn result(&self, id: TaskId, name: Option<&str>) -> Result<Option<Vec<u8>>, Error> {
        self.read("reading a result", || {
            read::result(self.published()?, id, name)
        })
    }

    fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        self.read("listing tasks", || {
            let read = self.published()?.begin_read().db()?;
            let live = self.writer.live();
            let mut page = query::tasks(&read, filter, paging, &|queue, name| {
                live.is_unregistered(queue, name)
            })?;
            for status in &mut page.tasks {
                self.overlay_progress(status);
            }
            Ok(page)
        })
    }

    fn events(&self, buffer: usize) -> Events {
        self.events.subscribe(buffer)
    }

    fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        self.read("reading the schedules", || {
            read::schedules(self.published()?)
        })
    }

    #[cfg(test)]
    fn fail_writes(&self, n: usize) {
        self.writer.fail_log_appends(n);
    }

    fn stats(&self) -> Result<Stats, Error> {
        self.read("counting ready tasks", || {
            let mut stats = read::stats(self.writer.counts(), self.writer.live(), || {
                self.published()?.begin_read().db()
            })?;
            let view = self
                .writer
                .counts()
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let catalog = &view.catalog;
            stats.metrics = self.metrics.snapshot(self.clock.now_ms(), |q, n| {
                (
                    catalog.queues.name(q).to_string(),
                    catalog.names.name(n).to_string(),
                )
            });
            Ok(stats)
        })
    }
}

/// Where a pool's threads report: the writer's channel and the start journal, in which each
/// thread has a ring of `ring` notes. It does not keep the writer running: once the engine
/// is dropped, reports fail with `Closed`.
struct FileReporter {
    writer: Sender<Command>,
    /// Set if the writer stopped for good: reports then fail with its error.
    stopped: Arc<OnceLock<Error>>,
    journal: Arc<Inflight>,
    progress: Arc<Progress>,
    ring: u64,
}

impl FileReporter {
    fn send(&self, cmd: Command) -> Result<(), Error> {
        if let Some(e) = self.stopped.get() {
            return Err(e.clone());
        }
        self.writer.send(cmd).map_err(|_| Error::Closed)
    }
}

impl Reporter for FileReporter {
    fn join(&self) -> ThreadSlot {
        ThreadSlot {
            place: self.journal.acquire(self.ring),
            started: 0,
        }
    }

    fn leave(&self, slot: ThreadSlot) {
        self.journal.release(slot.place, self.ring);
    }

    fn starting(&self, slot: &mut ThreadSlot, id: TaskId, attempt: u32) {
        let entry = slot.place + slot.started % self.ring;
        slot.started += 1;
        self.journal.mark(entry, id.0, attempt);
    }

    fn complete(&self, pool: Option<PoolId>, completion: Completion) -> Result<(), Error> {
        self.send(Command::Complete { pool, completion })
    }

    fn release(&self, pool: PoolId, id: TaskId, attempt: u32) -> Result<(), Error> {
        self.send(Command::Release { pool, id, attempt })
    }

    fn progress(&self, id: TaskId, attempt: u32, json: Vec<u8>) {
        self.progress.set(id, attempt, json);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::options::Options;
    use crate::store::writer::lock;

    fn temporary() -> (tempfile::TempDir, FileEngine) {
        let dir = tempfile::tempdir().unwrap();
        let config = FileConfig {
            clock: Clock::System,
            result_ttl_ms: None,
            cache_bytes: 1 << 20,
            checkpoint_bytes: 1 << 20,
            buffered: None,
            accept_log_damage: false,
            check_integrity: true,
            disk: None,
        };
        let engine = FileEngine::open(&dir.path().join("q.redb"), config, Arc::default()).unwrap();
        (dir, engine)
    }

    /// The writer keeps acknowledged groups in its open transaction. `stats` answers from the
    /// writer's memory, so it does not wait while the writer is busy (here: its lock held by
    /// the test); `status` reads the file, so it waits for the writer to commit what it holds,
    /// and then sees the task.
    #[test]
    fn stats_never_waits_for_the_writer_and_status_sees_every_acknowledged_task() {
        let (_dir, engine) = temporary();
        let engine = Arc::new(engine);
        let task = ping();
        let id = engine.insert(vec![task]).unwrap()[0].id;
        let busy = lock(engine.writer.core());

        let (stats_tx, stats_rx) = crossbeam_channel::bounded(1);
        let e = engine.clone();
        std::thread::spawn(move || stats_tx.send(e.stats()));
        let stats = stats_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stats waited for the writer")
            .unwrap();
        assert_eq!(stats.count(TaskState::Ready), 1);
        assert_eq!(stats.queues[0].name, "default");

        let (status_tx, status_rx) = crossbeam_channel::bounded(1);
        let e = engine.clone();
        let reader = std::thread::spawn(move || {
            let _ = status_tx.send(e.status(id));
        });
        assert!(
            status_rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "status read the file before the writer committed its held group"
        );
        drop(busy);
        let status = status_rx.recv().unwrap().unwrap();
        assert_eq!(status.state, TaskState::Ready);
        reader.join().unwrap();
    }

    fn ping() -> NewTask {
        NewTask {
            name: Arc::from("test.ping"),
            payload: b"null".to_vec(),
            opts: Arc::new(Options::new().resolve(0).unwrap()),
            enqueued_at_ms: 0,
            origin: None,
            step: None,
        }
    }

    /// Runs `call` on another thread and returns what it returned; fails the test if it
    /// does not return within 10 s (it hung).
    fn returns<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || tx.send(call()));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the call hung")
    }

    #[track_caller]
    fn assert_stopped<T: std::fmt::Debug>(result: Result<T, crate::Error>) {
        match result {
            Err(crate::Error::Corrupt { detail, .. }) => {
                assert!(detail.contains("redb panicked"), "{detail}")
            }
            other => panic!("expected the stop's Corrupt error, got {other:?}"),
        }
    }

    /// redb panics on some damaged pages. A panic in a group — on the writer thread, or on a
    /// caller's thread running its own group — stops the engine: that call and every later
    /// one returns a `Corrupt` error at once; none hangs, and the process goes on.
    #[test]
    fn a_panic_in_a_group_stops_the_engine_with_an_error_on_every_call() {
        for own_group in [false, true] {
            let (_dir, engine) = temporary();
            let engine = Arc::new(engine);
            let id = engine.insert(vec![ping()]).unwrap()[0].id;
            lock(engine.writer.core()).panic_next_group = true;
            let e = engine.clone();
            if own_group {
                // An enqueue that finds the writer idle runs its own group.
                assert_stopped(returns(move || e.insert(vec![ping()])));
            } else {
                // A sync always goes to the writer thread.
                assert_stopped(returns(move || e.sync()));
            }
            for _ in 0..2 {
                let e = engine.clone();
                assert_stopped(returns(move || e.insert(vec![ping()])));
                let e = engine.clone();
                assert_stopped(returns(move || e.sync()));
                let e = engine.clone();
                assert_stopped(returns(move || e.status(id)));
                let e = engine.clone();
                assert_stopped(returns(move || e.stats()));
                let reporter = engine.reporter(1);
                let completion = Completion {
                    id,
                    attempt: 1,
                    started_at_ms: 0,
                    run_us: 1,
                    outcome: crate::model::Outcome::Succeeded(b"null".to_vec()),
                    progress: None,
                    past_soft_limit: false,
                    follow_ups: Vec::new(),
                };
                assert_stopped(reporter.complete(None, completion));
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !engine.writer.exited() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the writer thread lives on"
                );
                std::thread::yield_now();
            }
        }
    }

    /// A step of a chord stored in parts that does not apply (here: indexing a chord that is
    /// not open) fails only its own caller, not an enqueue in the same group.
    #[test]
    fn a_part_step_that_does_not_apply_fails_only_its_caller() {
        let (_dir, engine) = temporary();
        let engine = Arc::new(engine);
        let busy = lock(engine.writer.core());
        let e = engine.clone();
        let parts = std::thread::spawn(move || e.parts(PartOp::Index { base: 999 }));
        let e = engine.clone();
        let insert = std::thread::spawn(move || e.insert(vec![ping()]));
        // Both wait for the writer, and go in its next group.
        std::thread::sleep(Duration::from_millis(50));
        drop(busy);
        assert!(matches!(parts.join().unwrap(), Err(Error::NotFound(_))));
        assert_eq!(insert.join().unwrap().unwrap().len(), 1);
    }
}
