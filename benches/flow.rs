//! Flow-control figures of issue #13, each on a fresh queue file in a temp dir:
//! rate_limit_error_pct (a 100/s limit held for 10 s with far more tasks ready than it lets
//! go: how far the observed rate is from the limit), unique_enqueue_durable_1 next to
//! enqueue_durable_1 alternated (one producer, durable enqueues with a fresh unique key each,
//! or without), and drain_noop_flow / drain_noop alternated (100k queued no-op tasks drained
//! while a concurrency limit and a rate limit are set on another task type, or with none).
//!
//! Run: `cargo bench --bench flow` (all), or `cargo bench --bench flow -- 'unique*'`.
//! See benches/README.md.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde::{Deserialize, Serialize};
use taskspool::{Context, Limit, Options, Rate, Spool, Task, TaskError};

const TASKS: u64 = 100_000;
const WORKERS: usize = 2;
const POLL: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(600);
/// The rate of `rate_limit_error_pct`, and how long it is held.
const RATE_PER_SEC: u32 = 100;
const RATE_SECS: u64 = 10;
/// How long each durable-enqueue loop runs, at scale 1.
const TIMED_SECS: f64 = 3.0;

/// When each `Metered` handler started.
static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

/// Notes when it started.
#[derive(Serialize, Deserialize)]
struct Metered;

impl Task for Metered {
    const NAME: &'static str = "bench.metered";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        STARTS.lock().unwrap().push(Instant::now());
        Ok(())
    }
}

fn main() {
    let dir = temp_dir();
    note(format!(
        "flow benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("rate_limit_error_pct") {
        rate_limit(dir.path());
    }
    if selected("unique_enqueue_durable_1") || selected("enqueue_durable_1") {
        enqueue_ab(dir.path());
    }
    if selected("drain_noop_flow") || selected("drain_noop") {
        drain_ab(dir.path());
    }
    note("flow benches done");
}

/// 100/s on the task type, 3,000 ready at once (three times what 10 s lets go), a 4-thread
/// pool: the starts in the 10 s after the first, against the 1,000 the limit allows.
fn rate_limit(dir: &Path) {
    let path = queue_path(dir, "rate_limit");
    let spool = Spool::open(&path).expect("open");
    spool
        .limit(Limit::task::<Metered>().rate(Rate::per_second(RATE_PER_SEC).expect("rate")))
        .expect("limit");
    let n = u64::from(RATE_PER_SEC) * RATE_SECS * 3;
    drop(spool.enqueue_many((0..n).map(|_| Metered)).expect("fill"));
    STARTS.lock().unwrap().clear();
    let worker = spool
        .worker()
        .concurrency(4)
        .register::<Metered>()
        .start()
        .expect("worker");
    std::thread::sleep(Duration::from_secs(RATE_SECS + 1));
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    let starts = STARTS.lock().unwrap().clone();
    let first = starts[0];
    let window = Duration::from_secs(RATE_SECS);
    let within = starts
        .iter()
        .filter(|s| s.duration_since(first) < window)
        .count();
    let allowed = f64::from(RATE_PER_SEC) * RATE_SECS as f64;
    let error = (within as f64 - allowed).abs() / allowed * 100.0;
    note(format!(
        "rate_limit: {within} starts in the {RATE_SECS} s after the first, {allowed} allowed; \
         {} started in all",
        starts.len()
    ));
    report("rate_limit_error_pct", error, "%");
}

/// Durable single-producer enqueues for `TIMED_SECS`, each with a fresh unique key or none.
fn enqueue_durable(dir: &Path, unique: bool) -> f64 {
    let name = if unique {
        "unique_enqueue_durable_1"
    } else {
        "enqueue_durable_1"
    };
    let (spool, path) = fresh_spool(dir, name);
    let limit = Duration::from_secs_f64(TIMED_SECS * scale());
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < limit {
        let opts = if unique {
            Options::new().unique(format!("order:{n}"))
        } else {
            Options::new()
        };
        let h = spool.enqueue_with(Noop { n }, opts).expect("enqueue");
        assert!(!h.is_duplicate());
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(spool);
    let _ = std::fs::remove_file(&path);
    rate
}

/// `enqueue_durable_1` and `unique_enqueue_durable_1`, alternated (see `alternate`).
fn enqueue_ab(dir: &Path) {
    alternate(
        ("enqueue_durable_1", || enqueue_durable(dir, false)),
        ("unique_enqueue_durable_1", || enqueue_durable(dir, true)),
        "tasks/s",
        ">= 0.9",
    );
}

/// 100k no-op tasks queued, drained by a 2-thread worker until every result is durable;
/// with `flow`, a concurrency limit and a rate limit are set on another task type (which
/// has tasks waiting on the same queue).
fn drain(dir: &Path, flow: bool) -> f64 {
    let name = if flow {
        "drain_noop_flow"
    } else {
        "drain_noop"
    };
    let (spool, path) = fresh_spool(dir, name);
    if flow {
        spool
            .limit(
                Limit::task::<Metered>()
                    .concurrency(1)
                    .expect("limit")
                    .rate(Rate::per_hour(1).expect("rate")),
            )
            .expect("limit");
        drop(spool.enqueue_many((0..100).map(|_| Metered)).expect("fill"));
    }
    let n = scaled(TASKS, 1_000);
    drop(
        spool
            .enqueue_many((0..n).map(|n| Noop { n }))
            .expect("fill"),
    );
    let expected = if flow { n + 1 } else { n };
    let secs = timed_drain(
        spool,
        &path,
        |spool| {
            spool
                .worker()
                .concurrency(WORKERS)
                .register::<Noop>()
                .register::<Metered>()
                .start()
                .expect("worker")
        },
        |spool| wait_succeeded(spool, expected, POLL, LONG),
    );
    n as f64 / secs
}

/// `drain_noop` and `drain_noop_flow`, alternated (see `alternate`).
fn drain_ab(dir: &Path) {
    alternate(
        ("drain_noop", || drain(dir, false)),
        ("drain_noop_flow", || drain(dir, true)),
        "tasks/s",
        ">= 0.95",
    );
}
