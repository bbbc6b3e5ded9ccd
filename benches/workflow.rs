//! Workflow figures of issue #14, each on a fresh queue file in a temp dir:
//! workflow_group_enqueue_100k next to enqueue_bulk (one group of 100k no-op members, and one
//! `enqueue_many` of 100k, alternated), chord_drain_100k next to drain_noop (a chord of 100k
//! no-op members and a body that counts their inputs, drained by a 2-thread pool until the
//! body's result is durable; and 100k plain no-op tasks, alternated), and
//! chain_step_latency_us_p50 / _p99 (a step's handler returning → the next step's handler
//! starting, on an idle pool, next to the same run's fsync p50).
//!
//! Run: `cargo bench --bench workflow` (all), or `cargo bench --bench workflow -- 'chord*'`.
//! See benches/README.md.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde::{Deserialize, Serialize};
use taskspool::{Context, Task, TaskError};

const TASKS: u64 = 100_000;
const SAMPLES: u64 = 200;
const WORKERS: usize = 2;
const POLL: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(600);

/// A chord's body: how many inputs it got.
#[derive(Serialize, Deserialize)]
struct Count;

impl Task for Count {
    const NAME: &'static str = "bench.count";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        Ok(ctx.inputs::<()>()?.len() as u64)
    }
}

/// When the first step of each sample returned, and when the second started.
static MARKS: Mutex<Vec<(u64, bool, Instant)>> = Mutex::new(Vec::new());

/// A chain step that notes the instant it returns (`last: false`) or starts (`last: true`).
#[derive(Serialize, Deserialize)]
struct Mark {
    sample: u64,
    last: bool,
}

impl Task for Mark {
    const NAME: &'static str = "bench.mark";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        MARKS
            .lock()
            .unwrap()
            .push((self.sample, self.last, Instant::now()));
        Ok(())
    }
}

fn main() {
    let dir = temp_dir();
    note(format!(
        "workflow benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("workflow_group_enqueue_100k") || selected("enqueue_bulk") {
        alternate(
            ("enqueue_bulk", || enqueue(dir.path(), false)),
            ("workflow_group_enqueue_100k", || enqueue(dir.path(), true)),
            "tasks/s",
            ">= 0.5",
        );
    }
    if selected("chord_drain_100k") || selected("drain_noop") {
        alternate(
            ("drain_noop", || drain(dir.path(), false)),
            ("chord_drain_100k", || drain(dir.path(), true)),
            "tasks/s",
            ">= 0.7",
        );
    }
    if selected("chain_step_latency_us_p50") || selected("chain_step_latency_us_p99") {
        chain_latency(dir.path());
    }
    if selected("rss_mb_chord_1m") {
        chord_rss(dir.path());
    }
    note("workflow benches done");
}

/// 100k no-op tasks in one call, durable when it returns: a group, or `enqueue_many`.
fn enqueue(dir: &Path, group: bool) -> f64 {
    let (spool, path) = fresh_spool(dir, if group { "group" } else { "bulk" });
    let n = scaled(TASKS, 1_000);
    let start = Instant::now();
    if group {
        drop(spool.group((0..n).map(|n| Noop { n })).expect("group"));
    } else {
        drop(
            spool
                .enqueue_many((0..n).map(|n| Noop { n }))
                .expect("bulk"),
        );
    }
    let secs = start.elapsed().as_secs_f64();
    drop(spool);
    let _ = std::fs::remove_file(&path);
    n as f64 / secs
}

/// 100k no-op tasks (a chord's members, with a body that counts them, or plain ones)
/// queued, drained by a 2-thread pool until the last result is durable.
fn drain(dir: &Path, chord: bool) -> f64 {
    let (spool, path) = fresh_spool(dir, if chord { "chord" } else { "plain" });
    let n = scaled(TASKS, 1_000);
    let body = if chord {
        Some(
            spool
                .chord((0..n).map(|n| Noop { n }), Count)
                .expect("chord")
                .body,
        )
    } else {
        drop(
            spool
                .enqueue_many((0..n).map(|n| Noop { n }))
                .expect("fill"),
        );
        None
    };
    let secs = timed_drain(
        spool,
        &path,
        |spool| {
            spool
                .worker()
                .concurrency(WORKERS)
                .register::<Noop>()
                .register::<Count>()
                .start()
                .expect("worker")
        },
        |spool| match &body {
            Some(body) => assert_eq!(body.wait(LONG).expect("body"), n),
            None => wait_succeeded(spool, n, POLL, LONG),
        },
    );
    n as f64 / secs
}

/// A chord of 1M no-op members and its counting body, drained by a 2-thread pool: the
/// largest resident set sampled every 20 ms while it drains (after the enqueue, which stores
/// it in parts), and the peak over the whole run.
fn chord_rss(dir: &Path) {
    let (spool, path) = fresh_spool(dir, "chord_1m");
    let n = scaled(10 * TASKS, 10_000);
    let stored = Instant::now();
    let body = spool
        .chord((0..n).map(|n| Noop { n }), Count)
        .expect("chord")
        .body;
    let enqueue_secs = stored.elapsed().as_secs_f64();
    let after_enqueue = rss_mib();
    let worker = spool
        .worker()
        .concurrency(WORKERS)
        .register::<Noop>()
        .register::<Count>()
        .start()
        .expect("worker");
    let mut most = 0.0f64;
    let start = Instant::now();
    while body.try_get().expect("body").is_none() {
        most = most.max(rss_mib());
        assert!(start.elapsed() < LONG, "the chord did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(body.wait(LONG).expect("body"), n);
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    note(format!(
        "chord of {n}: stored in {enqueue_secs:.1} s, drained in {secs:.1} s ({:.0} tasks/s); RSS \
         {after_enqueue:.1} MiB after the enqueue, at most {most:.1} MiB while it drained; peak \
         of the process {:.1} MiB",
        n as f64 / secs,
        peak_rss_mib()
    ));
    drop(spool);
    let _ = std::fs::remove_file(&path);
    report("rss_mb_chord_1m", most, "MiB");
}

/// 200 chains of two `Mark` steps, one at a time, on an idle 2-thread pool: the first
/// step's return → the second's start.
fn chain_latency(dir: &Path) {
    let (spool, _path) = fresh_spool(dir, "chain_latency");
    let worker = spool
        .worker()
        .concurrency(WORKERS)
        .register::<Mark>()
        .start()
        .expect("worker");
    let samples = scaled(SAMPLES, 20);
    MARKS.lock().unwrap().clear();
    for sample in 0..samples + 10 {
        let last = spool
            .chain(Mark {
                sample,
                last: false,
            })
            .then(Mark { sample, last: true })
            .enqueue()
            .expect("chain");
        last.wait(LONG).expect("chain ran");
    }
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    let marks = MARKS.lock().unwrap().clone();
    let at = |s: u64, last: bool| {
        marks
            .iter()
            .find(|m| m.0 == s && m.1 == last)
            .map(|m| m.2)
            .expect("mark")
    };
    // The first 10 samples warm up.
    let mut us: Vec<f64> = (10..samples + 10)
        .map(|s| at(s, true).duration_since(at(s, false)).as_secs_f64() * 1e6)
        .collect();
    us.sort_by(f64::total_cmp);
    let fsync = fsync_us(dir, samples);
    note(format!(
        "chain_step_latency: p50 {:.0} µs, p99 {:.0} µs; one fsync at this pace: p50 {:.0} µs, \
         p99 {:.0} µs (target p50 <= fsync p50 + 200 µs = {:.0} µs)",
        pct(&us, 0.5),
        pct(&us, 0.99),
        pct(&fsync, 0.5),
        pct(&fsync, 0.99),
        pct(&fsync, 0.5) + 200.0
    ));
    report("chain_step_latency_us_p50", pct(&us, 0.5), "us");
    report("chain_step_latency_us_p99", pct(&us, 0.99), "us");
    report("fsync_p50_us", pct(&fsync, 0.5), "us");
}
