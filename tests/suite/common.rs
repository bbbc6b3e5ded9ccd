//! Task types and helpers shared by the suite.
//!
//! Tests run in parallel threads of one process, so every piece of global state a task
//! touches is keyed by a string the test makes unique with [`unique`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskspool::{
    Context, Error, ManualClock, Spool, SpoolBuilder, Task, TaskError, TaskId, TaskState,
};

/// Generous bound for waits that must finish quickly when the code is right.
pub const WAIT: Duration = Duration::from_secs(10);

/// A name no other test uses, for keys into the global maps below.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------------------------------------
// The engine under test: `tests/lib.rs` runs the suite on queue files, `tests/suite_postgres.rs`
// runs the modules that are not about the file on PostgreSQL. Each root says how a fresh spool
// opens (`crate::open_fresh`).

/// Opens a fresh, empty spool with the builder's options on the engine under test: a
/// temporary queue file, or a temporary PostgreSQL schema (dropped at close).
pub trait OpenFresh {
    /// The spool, or the error the builder's options give.
    fn open_fresh(self) -> Result<Spool, Error>;
}

impl OpenFresh for SpoolBuilder {
    fn open_fresh(self) -> Result<Spool, Error> {
        crate::open_fresh(self)
    }
}

/// A queue a test opens, closes and opens again, on the engine under test.
pub(crate) use crate::fresh_place;

/// A fresh spool with the default options on the engine under test.
pub fn fresh_spool() -> Spool {
    Spool::builder().open_fresh().expect("a fresh spool")
}

/// A fresh directory and a queue file path inside it (the file does not exist yet).
pub fn temp_queue() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("taskspool-test-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("queue.redb");
    (dir, path)
}

/// A copy of `tests/fixtures/<name>/` (a queue file, its log and journal) in a fresh
/// directory: opening a file writes to it.
pub fn copy_fixture(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, path) = temp_queue();
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    for file in ["queue.redb", "queue.redb.wal", "queue.redb.inflight"] {
        std::fs::copy(from.join(file), dir.path().join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    (dir, path)
}

/// 2026-01-01T00:00:00Z: where manual clocks start, and the time format fixtures were
/// written at.
pub const T0: u64 = 1_767_225_600_000;

/// The environment variable naming the directory a fixture writer writes into.
pub const WRITE_ENV: &str = "TASKSPOOL_WRITE_FIXTURE";

/// A manual clock at a fixed, realistic time ([`T0`]).
pub fn manual_clock() -> ManualClock {
    ManualClock::from_unix_ms(T0)
}

/// For a fixture writer: the spool it writes, in `$TASKSPOOL_WRITE_FIXTURE`, on a manual
/// clock at [`T0`]; `None` when the variable is not set (the writer then does nothing).
pub fn fixture_writer() -> Option<Spool> {
    let dir = std::env::var(WRITE_ENV).ok()?;
    let path = std::path::Path::new(&dir).join("queue.redb");
    Some(manual_spool_at(&manual_clock(), &path))
}

/// A fresh spool on a manual clock, on the engine under test.
pub fn manual_spool(clock: &ManualClock) -> Spool {
    Spool::builder()
        .manual_clock(clock.clone())
        .open_fresh()
        .expect("a fresh spool")
}

/// The queue file at `path` on a manual clock (opened again after a "restart").
pub fn manual_spool_at(clock: &ManualClock, path: &std::path::Path) -> Spool {
    Spool::builder()
        .manual_clock(clock.clone())
        .open(path)
        .expect("open the queue file")
}

/// Polls `cond` until it holds or `WAIT` passes. Only for state that changes asynchronously
/// (a commit on the writer thread), never to let time-based behaviour happen.
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(what, WAIT, cond);
}

/// As [`eventually`], for up to `within`: for a long run of work that cannot overlap (each
/// step one durable commit, the next claimed only after it).
pub fn eventually_within(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The state of a task, panicking on any error.
pub fn state_of(spool: &Spool, id: TaskId) -> TaskState {
    spool.status(id).expect("status").state
}

/// Whether `status` says `NotFound` for this id.
pub fn is_not_found(spool: &Spool, id: TaskId) -> bool {
    matches!(spool.status(id), Err(Error::NotFound(found)) if found == id)
}

// ---------------------------------------------------------------------------------------------
// Global per-key state.

static LOGS: LazyLock<Mutex<HashMap<String, Vec<u64>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends to the log named `key`.
pub fn log_push(key: &str, value: u64) {
    lock(&LOGS).entry(key.to_string()).or_default().push(value);
}

/// The log named `key` so far.
pub fn logged(key: &str) -> Vec<u64> {
    lock(&LOGS).get(key).cloned().unwrap_or_default()
}

/// A latch a test opens to let a task proceed, and which records that the task started.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    cond: Condvar,
}

#[derive(Default)]
struct GateState {
    open: bool,
    started: u32,
    finished: u32,
}

impl Gate {
    pub fn open(&self) {
        lock(&self.state).open = true;
        self.cond.notify_all();
    }

    pub fn started(&self) -> u32 {
        lock(&self.state).started
    }

    pub fn finished(&self) -> u32 {
        lock(&self.state).finished
    }

    /// Blocks until the task has started `n` times (bounded by `WAIT`).
    pub fn wait_started(&self, n: u32) {
        let guard = lock(&self.state);
        let (guard, timeout) = self
            .cond
            .wait_timeout_while(guard, WAIT, |s| s.started < n)
            .unwrap_or_else(PoisonError::into_inner);
        assert!(
            !timeout.timed_out(),
            "task did not start {n} time(s); started {}",
            guard.started
        );
    }

    /// Counts a start (for a task that uses the gate itself).
    pub fn enter(&self) {
        lock(&self.state).started += 1;
        self.cond.notify_all();
    }

    /// Blocks until the gate opens (bounded by twice `WAIT`).
    pub fn pass(&self) {
        let guard = lock(&self.state);
        let (_guard, timeout) = self
            .cond
            .wait_timeout_while(guard, WAIT * 2, |s| !s.open)
            .unwrap_or_else(PoisonError::into_inner);
        assert!(!timeout.timed_out(), "gate never opened");
    }

    fn leave(&self) {
        lock(&self.state).finished += 1;
        self.cond.notify_all();
    }
}

static GATES: LazyLock<Mutex<HashMap<String, Arc<Gate>>>> = LazyLock::new(Default::default);

/// The gate named `key`, created closed.
pub fn gate(key: &str) -> Arc<Gate> {
    lock(&GATES).entry(key.to_string()).or_default().clone()
}

// ---------------------------------------------------------------------------------------------
// Task types.

/// Adds two numbers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Add {
    pub a: i64,
    pub b: i64,
}

impl Task for Add {
    const NAME: &'static str = "test.add";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// Appends its own id to the log `log`, so tests can see the order tasks ran in.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub log: String,
}

impl Record {
    pub fn to(log: &str) -> Self {
        Record {
            log: log.to_string(),
        }
    }
}

impl Task for Record {
    const NAME: &'static str = "test.record";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        log_push(&self.log, ctx.id().as_u64());
        Ok(ctx.id().as_u64())
    }
}

/// What a [`Scripted`] task does on one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Step {
    /// Succeeds, returning the attempt number.
    Succeed,
    /// `TaskError::retry`.
    Retry,
    /// `TaskError::retry_after` this many seconds.
    RetryAfterSecs(u64),
    /// `TaskError::fail`.
    Fail,
    /// Panics with a message naming the attempt.
    Panic,
    /// Returns a `std` error through `?`.
    ParseError,
}

/// Does `steps[attempt - 1]` (the last step for later attempts) and logs each attempt number
/// under `log`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Scripted {
    pub log: String,
    pub steps: Vec<Step>,
}

impl Scripted {
    pub fn new(log: &str, steps: impl Into<Vec<Step>>) -> Self {
        Scripted {
            log: log.to_string(),
            steps: steps.into(),
        }
    }
}

impl Task for Scripted {
    const NAME: &'static str = "test.scripted";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        let attempt = ctx.attempt();
        log_push(&self.log, u64::from(attempt));
        let index = usize::try_from(attempt - 1).unwrap_or(usize::MAX);
        let step = self
            .steps
            .get(index)
            .or(self.steps.last())
            .cloned()
            .unwrap_or(Step::Succeed);
        match step {
            Step::Succeed => Ok(attempt),
            Step::Retry => Err(TaskError::retry(format!("try again (attempt {attempt})"))),
            Step::RetryAfterSecs(s) => Err(TaskError::retry_after(
                Duration::from_secs(s),
                format!("come back in {s}s"),
            )),
            Step::Fail => Err(TaskError::fail(format!("gave up on attempt {attempt}"))),
            Step::Panic => panic!("boom on attempt {attempt}"),
            Step::ParseError => {
                let n: u32 = "not a number".parse()?;
                Ok(n)
            }
        }
    }
}

/// Marks its gate started, waits for the gate to open (if `wait`), sleeps `work_ms` (its
/// "work"), marks it finished and returns `value`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Gated {
    pub gate: String,
    pub wait: bool,
    pub work_ms: u64,
    pub value: u64,
}

impl Task for Gated {
    const NAME: &'static str = "test.gated";
    type Output = u64;
    fn run(self, _ctx: &Context) -> Result<u64, TaskError> {
        let g = gate(&self.gate);
        g.enter();
        if self.wait {
            g.pass();
        }
        std::thread::sleep(Duration::from_millis(self.work_ms));
        g.leave();
        Ok(self.value)
    }
}

/// A task type that no worker registers unless a test says so.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ghost {
    pub n: u32,
}

impl Task for Ghost {
    const NAME: &'static str = "test.ghost";
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.n * 2)
    }
}

/// Returns what its [`Context`] says, to check what a handler is told.
#[derive(Debug, Serialize, Deserialize)]
pub struct Introspect;

/// The context as seen by [`Introspect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub id: u64,
    pub name: String,
    pub queue: String,
    pub attempt: u32,
    pub max_retries: u32,
    pub last: bool,
    pub enqueued_at_ms: u64,
}

impl Task for Introspect {
    const NAME: &'static str = "test.introspect";
    type Output = Seen;
    fn run(self, ctx: &Context) -> Result<Seen, TaskError> {
        let seen = Seen {
            id: ctx.id().as_u64(),
            name: ctx.name().to_string(),
            queue: ctx.queue().to_string(),
            attempt: ctx.attempt(),
            max_retries: ctx.max_retries(),
            last: ctx.is_last_attempt(),
            enqueued_at_ms: u64::try_from(
                ctx.enqueued_at()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap(),
        };
        if !seen.last {
            return Err(TaskError::retry(format!("{seen:?}")));
        }
        Ok(seen)
    }
}

/// Every state's listing holds as many tasks as `stats` counts in that state.
pub fn assert_listed_as_counted(spool: &Spool) {
    let stats = spool.stats().unwrap();
    for state in TaskState::ALL {
        let filter = taskspool::TaskFilter::new().state(state);
        let mut paging = taskspool::Paging::first(taskspool::MAX_PAGE);
        let mut listed = 0;
        loop {
            let page = spool.tasks(&filter, &paging).unwrap();
            assert!(page.tasks.iter().all(|t| t.state == state));
            listed += page.tasks.len() as u64;
            match page.next {
                Some(next) => paging = paging.after(next),
                None => break,
            }
        }
        assert_eq!(
            listed,
            stats.count(state),
            "{state:?} tasks listed against counted"
        );
    }
}
