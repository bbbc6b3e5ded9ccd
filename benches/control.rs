//! Execution-control figures of issue #12, each on a fresh queue file in a temp dir:
//! revoke_running_us_p50 / _p99 (from the `revoke` call to the running handler observing
//! the cancel, next to the same run's fsync p99), hard_limit_overrun_ms_p99 (how late the
//! hard time limit ends an attempt), and drain_noop_limited / drain_noop alternated (100k
//! queued no-op tasks drained, every task with a time limit or none).
//!
//! Run: `cargo bench --bench control` (all), or `cargo bench --bench control -- 'revoke*'`.
//! See benches/README.md.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use taskspool::{Context, Options, Spool, Task, TaskError};

const TASKS: u64 = 100_000;
const SAMPLES: u64 = 200;
const WORKERS: usize = 2;
const POLL: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(600);
/// The hard limit of `hard_limit_overrun_ms_p99`'s tasks.
const HARD_LIMIT: Duration = Duration::from_millis(20);

/// What a handler saw: (sample, started, observed the cancel).
type Event = (u64, Instant, Option<Instant>);

/// The hard deadline each `Hanging` handler was told, by sample.
static DEADLINES: Mutex<Vec<(u64, std::time::SystemTime)>> = Mutex::new(Vec::new());

/// Where handlers send what they see.
static EVENTS: Mutex<Option<Sender<Event>>> = Mutex::new(None);
/// Hung handlers of samples up to this one may return.
static RELEASED: AtomicU64 = AtomicU64::new(0);

fn send(event: Event) {
    if let Some(tx) = EVENTS.lock().unwrap().as_ref() {
        let _ = tx.send(event);
    }
}

/// Sleeps until revoked; reports when it started and when it saw the cancel.
#[derive(Serialize, Deserialize)]
struct Revokable {
    sample: u64,
}

impl Task for Revokable {
    const NAME: &'static str = "bench.revokable";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        send((self.sample, Instant::now(), None));
        let _ = ctx.sleep(Duration::from_secs(60));
        send((self.sample, Instant::now(), Some(Instant::now())));
        Ok(())
    }
}

/// Hangs past its hard limit until released; reports when it started.
#[derive(Serialize, Deserialize)]
struct Hanging {
    sample: u64,
}

impl Task for Hanging {
    const NAME: &'static str = "bench.hanging";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        if let Some(deadline) = ctx.deadline() {
            DEADLINES.lock().unwrap().push((self.sample, deadline));
        }
        send((self.sample, Instant::now(), None));
        while RELEASED.load(Ordering::SeqCst) < self.sample {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

fn main() {
    let dir = temp_dir();
    note(format!(
        "control benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("revoke_running_us_p50") || selected("revoke_running_us_p99") {
        revoke_running(dir.path());
    }
    if selected("hard_limit_overrun_ms_p99") {
        hard_limit_overrun(dir.path());
    }
    if selected("drain_noop_limited") || selected("drain_noop") {
        drain_ab(dir.path());
    }
    note("control benches done");
}

/// One task at a time: it starts, the bench calls `revoke` (durable when it returns), and
/// the handler, asleep in `ctx.sleep`, observes the cancel. Timed from the call.
fn revoke_running(dir: &Path) {
    let spool = Spool::open(queue_path(dir, "revoke_running")).expect("open");
    let (tx, rx) = crossbeam_channel::unbounded();
    *EVENTS.lock().unwrap() = Some(tx);
    let worker = spool
        .worker()
        .concurrency(WORKERS)
        .register::<Revokable>()
        .start()
        .expect("worker");
    let samples = scaled(SAMPLES, 20);
    let mut us = Vec::new();
    for sample in 0..samples + 5 {
        let handle = spool.enqueue(Revokable { sample }).expect("enqueue");
        let (got, _, _) = rx.recv_timeout(Duration::from_secs(10)).expect("start");
        assert_eq!(got, sample);
        let called = Instant::now();
        spool.revoke(handle.id()).expect("revoke");
        let (got, _, observed) = rx.recv_timeout(Duration::from_secs(10)).expect("cancel");
        assert_eq!(got, sample);
        let observed = observed.expect("observed");
        if sample >= 5 {
            us.push(observed.duration_since(called).as_secs_f64() * 1e6);
        }
        let _ = handle.wait(Duration::from_secs(10));
    }
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    *EVENTS.lock().unwrap() = None;
    let fsync = pct(&fsync_us(dir, samples), 0.99);
    us.sort_by(f64::total_cmp);
    note(format!(
        "revoke_running: {} samples, p50 {:.0} us, p99 {:.0} us, max {:.0} us; one fsync's p99 \
         in the same run {fsync:.0} us (target p99 <= 2 fsyncs = {:.0} us)",
        us.len(),
        pct(&us, 0.5),
        pct(&us, 0.99),
        us[us.len() - 1],
        2.0 * fsync
    ));
    report("revoke_running_us_p50", pct(&us, 0.5), "us");
    report("revoke_running_us_p99", pct(&us, 0.99), "us");
    report("fsync_p99_us", fsync, "us");
}

/// One task at a time with a 20 ms hard limit, whose handler hangs past it: timed from the
/// deadline the handler was told (`ctx.deadline()`, on the system clock: its start, to the
/// millisecond, plus the limit) until `wait` sees the attempt ended (durably `Failed`).
fn hard_limit_overrun(dir: &Path) {
    let spool = Spool::open(queue_path(dir, "hard_limit")).expect("open");
    let (tx, rx) = crossbeam_channel::unbounded();
    *EVENTS.lock().unwrap() = Some(tx);
    let worker = spool
        .worker()
        .concurrency(WORKERS)
        .register::<Hanging>()
        .start()
        .expect("worker");
    let samples = scaled(SAMPLES, 20);
    let mut ms = Vec::new();
    for sample in 1..=samples + 5 {
        let handle = spool
            .enqueue_with(
                Hanging { sample },
                Options::new().time_limit(HARD_LIMIT).max_retries(0),
            )
            .expect("enqueue");
        let (got, _, _) = rx.recv_timeout(Duration::from_secs(10)).expect("start");
        assert_eq!(got, sample);
        let ended = handle.wait(Duration::from_secs(10));
        let at = std::time::SystemTime::now();
        assert!(ended.is_err(), "the hard limit fails the task");
        let deadline = DEADLINES
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| *s == sample)
            .map(|(_, d)| *d)
            .expect("the handler was told its deadline");
        if sample > 5 {
            let late = at.duration_since(deadline).unwrap_or_default();
            ms.push(late.as_secs_f64() * 1e3);
        }
        RELEASED.store(sample, Ordering::SeqCst);
    }
    RELEASED.store(u64::MAX, Ordering::SeqCst);
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    *EVENTS.lock().unwrap() = None;
    ms.sort_by(f64::total_cmp);
    note(format!(
        "hard_limit_overrun: {} samples, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 \
         <= 5 ms)",
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        ms[ms.len() - 1]
    ));
    report("hard_limit_overrun_ms_p99", pct(&ms, 0.99), "ms");
}

/// 100k no-op tasks queued, with a time limit each (`limited`) or not, drained by a 2-thread
/// worker until every result is durable.
fn drain(dir: &Path, limited: bool) -> f64 {
    let name = if limited {
        "drain_noop_limited"
    } else {
        "drain_noop"
    };
    let (spool, path) = fresh_spool(dir, name);
    let n = scaled(TASKS, 1_000);
    let opts = if limited {
        Options::new().time_limit(Duration::from_secs(60))
    } else {
        Options::new()
    };
    drop(
        spool
            .enqueue_many_with((0..n).map(|n| Noop { n }), opts)
            .expect("fill"),
    );
    let secs = timed_drain(
        spool,
        &path,
        |spool| {
            spool
                .worker()
                .concurrency(WORKERS)
                .register::<Noop>()
                .start()
                .expect("worker")
        },
        |spool| wait_succeeded(spool, n, POLL, LONG),
    );
    n as f64 / secs
}

/// `drain_noop` and `drain_noop_limited`, alternated (see `alternate`).
fn drain_ab(dir: &Path) {
    alternate(
        ("drain_noop", || drain(dir, false)),
        ("drain_noop_limited", || drain(dir, true)),
        "tasks/s",
        ">= 0.9",
    );
}
