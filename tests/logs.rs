//! What an operator sees in the logs: every attempt runs in a `task` span (id, name, queue,
//! attempt) with INFO events when it starts and when it succeeds (with its run time), a WARN
//! when it fails and will retry (with the delay), an ERROR when it fails for good, and a WARN
//! when an attempt left running by a dead owner is recovered.
//!
//! Its own test binary: it installs a global `tracing` subscriber that captures the output.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, ManualClock, Options, RetryPolicy, Spool, Task, TaskError, TaskState};

/// Everything logged so far, by every thread.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(sink.clone()))
            .init();
        buffer
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that mention `needle`.
fn lines_with(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Fails its first attempt (retryably), then succeeds.
#[derive(Serialize, Deserialize)]
struct Flaky;

impl Task for Flaky {
    const NAME: &'static str = "logs.flaky";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::retry("the network blinked"));
        }
        Ok(ctx.attempt())
    }
}

/// Always fails permanently.
#[derive(Serialize, Deserialize)]
struct Doomed;

impl Task for Doomed {
    const NAME: &'static str = "logs.doomed";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Err(TaskError::fail("the account is closed"))
    }
}

#[test]
fn each_attempt_logs_its_start_and_how_it_ended() {
    logs();
    let clock = ManualClock::starting_now();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .temporary()
        .unwrap();
    let flaky = spool
        .enqueue_with(
            Flaky,
            Options::new()
                .queue("net")
                .retry_policy(RetryPolicy::fixed(Duration::from_millis(2500))),
        )
        .unwrap();
    let doomed = spool.enqueue(Doomed).unwrap();
    let drain = spool
        .worker()
        .queues(["net", "default"])
        .register::<Flaky>()
        .register::<Doomed>();
    drain.drain().unwrap();
    clock.advance(Duration::from_secs(3));
    drain.drain().unwrap();
    assert_eq!(flaky.wait(Duration::from_secs(5)).unwrap(), 2);
    assert!(doomed.wait(Duration::from_secs(5)).is_err());

    let (f, d) = (flaky.id(), doomed.id());
    let span = |id, name: &str, queue: &str, attempt| {
        format!("task{{id={id} name={name} queue={queue} attempt={attempt}}}")
    };
    let started = lines_with("task started");
    for s in [
        span(f, "logs.flaky", "net", 1),
        span(f, "logs.flaky", "net", 2),
        span(d, "logs.doomed", "default", 1),
    ] {
        assert!(
            started.iter().any(|l| l.contains(&s) && l.contains("INFO")),
            "no start of {s} in {started:#?}"
        );
    }
    let succeeded = lines_with("task succeeded in");
    assert!(
        succeeded
            .iter()
            .any(|l| l.contains(&span(f, "logs.flaky", "net", 2))
                && l.contains("INFO")
                && l.contains("run_time_s=")),
        "{succeeded:#?}"
    );
    let retrying = lines_with("task failed; retrying in 2.500s");
    assert!(
        retrying.iter().any(|l| l.contains("WARN")
            && l.contains(&format!("task.id={f}"))
            && l.contains("task.name=logs.flaky")
            && l.contains("attempt=1")
            && l.contains("the network blinked")),
        "{retrying:#?}"
    );
    let failed = lines_with("task failed for good after 1 attempt(s)");
    assert!(
        failed.iter().any(|l| l.contains("ERROR")
            && l.contains(&format!("task.id={d}"))
            && l.contains("the account is closed")),
        "{failed:#?}"
    );
}

/// Holds its attempt until told to finish.
#[derive(Serialize, Deserialize)]
struct Held;

static RELEASE: Mutex<bool> = Mutex::new(false);
static STARTED: Mutex<bool> = Mutex::new(false);

impl Task for Held {
    const NAME: &'static str = "logs.held";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        *STARTED.lock().unwrap() = true;
        while !*RELEASE.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// An attempt still running when the file was closed (its shutdown timed out) is recovered
/// at the next open, and the recovery is logged with the task's id and name.
#[test]
fn a_recovered_attempt_is_logged() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.redb");
    let spool = Spool::open(&path).unwrap();
    let worker = spool
        .worker()
        .concurrency(1)
        .shutdown_timeout(Duration::ZERO)
        .register::<Held>()
        .start()
        .unwrap();
    let held = spool.enqueue(Held).unwrap();
    while !*STARTED.lock().unwrap() {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(worker);
    drop(spool);
    let reopened = Spool::open(&path).unwrap();
    *RELEASE.lock().unwrap() = true;
    assert_eq!(reopened.status(held.id()).unwrap().state, TaskState::Ready);
    let recovered = lines_with("task recovered: attempt 1 was running");
    assert!(
        recovered.iter().any(|l| l.contains("WARN")
            && l.contains(&format!("task.id={}", held.id()))
            && l.contains("task.name=logs.held")),
        "{recovered:#?}"
    );
}

/// A blocking wait on the thread of a current-thread runtime warns that it blocks the
/// runtime (where a pool on it cannot run the task: the wait ends only at its timeout).
#[cfg(feature = "tokio")]
#[test]
fn a_blocking_wait_on_a_current_thread_runtime_says_to_await_wait_async() {
    logs();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spool = Spool::temporary().unwrap();
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .register::<Flaky>()
        .start()
        .unwrap();
    let handle = spool.enqueue(Flaky).unwrap();
    let blocked = rt.block_on(async { handle.wait(Duration::from_millis(200)) });
    assert!(
        matches!(blocked, Err(taskspool::Error::Timeout(_))),
        "{blocked:?}"
    );
    let warned = lines_with("TaskHandle::wait blocks the thread of a current-thread");
    assert!(
        warned
            .iter()
            .any(|l| l.contains("WARN") && l.contains(&format!("task.id={}", handle.id()))),
        "{warned:#?}"
    );
    // Awaited, the same wait ends with the result.
    assert_eq!(
        rt.block_on(handle.wait_async(Duration::from_secs(20)))
            .unwrap(),
        2
    );
    rt.block_on(worker.shutdown_async(Duration::from_secs(20)))
        .unwrap();
}
