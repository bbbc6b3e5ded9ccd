//! Backlog, crash-reopen and churn figures of issue #4:
//! drain_noop_backlog_1m, rss_mb_backlog_1m, reopen_ms_backlog_1m, file_mb_after_churn.
//!
//! The backlog figures run in a child process (this binary re-executed with
//! `TASKSPOOL_BENCH_CHILD=backlog`): it fills a queue file with 1M tasks, starts a 2-thread
//! worker, measures the drain rate over consecutive windows of 100k completions (the median of
//! 3 by default; at least 700k stay queued), reports its
//! own peak RSS (VmHWM), and keeps running tasks until the parent kills it with SIGKILL. The
//! parent then times `Spool::open` of that file (recovery of the orphaned attempts included).
//!
//! Run: `cargo bench --bench backlog` (all), or one figure:
//! `cargo bench --bench backlog -- file_mb_after_churn`.
//! `TASKSPOOL_BENCH_SCALE=0.1` shrinks every size. See benches/README.md.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use taskspool::{ManualClock, Spool, TaskState};

/// Tasks queued in the backlog figures (issue #4: 1M).
const BACKLOG: u64 = 1_000_000;
/// Tasks drained (while the rest stay queued) to measure the backlog drain rate.
const DRAIN: u64 = 100_000;
/// Tasks enqueued and completed in the churn figure (issue #4: 1M).
const CHURN: u64 = 1_000_000;
/// Tasks per `enqueue_many` call when filling.
const CHUNK: u64 = 10_000;
/// Tasks per churn round: enqueue, run all, let their results expire, prune.
const CHURN_ROUND: u64 = 50_000;
const WORKERS: usize = 2;
const POLL: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(1800);
const CHILD_ENV: &str = "TASKSPOOL_BENCH_CHILD";
const FILE_ENV: &str = "TASKSPOOL_BENCH_FILE";

fn main() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("backlog") {
        let path = PathBuf::from(std::env::var_os(FILE_ENV).expect("queue file path"));
        backlog_child(&path);
        return;
    }
    let dir = temp_dir();
    note(format!(
        "backlog benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("drain_noop_backlog_1m")
        || selected("rss_mb_backlog_1m")
        || selected("reopen_ms_backlog_1m")
    {
        backlog_parent(dir.path());
    }
    if selected("file_mb_after_churn") {
        churn(dir.path());
    }
    note("backlog benches done");
}

/// Spawns the child, relays its figures, kills it with SIGKILL while tasks run, times reopen.
fn backlog_parent(dir: &Path) {
    let path = queue_path(dir, "backlog");
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, "backlog")
        .env(FILE_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the backlog child");
    let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
    let mut ready_to_kill = false;
    for line in stdout.lines() {
        let line = line.expect("child output");
        if line.starts_with("bench=") {
            println!("{line}");
        } else if line == "kill-me" {
            ready_to_kill = true;
            break;
        }
    }
    assert!(ready_to_kill, "the backlog child exited early");
    // Child::kill sends SIGKILL on Unix: no destructor, no final commit.
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("reap the child");
    note(format!(
        "backlog child killed ({status}); file is {:.1} MiB",
        file_mib(&path)
    ));

    let start = Instant::now();
    let spool = Spool::open(&path).expect("reopen after kill -9");
    let reopen_ms = start.elapsed().as_secs_f64() * 1e3;
    let stats = spool.stats().expect("stats");
    note(format!(
        "reopened in {reopen_ms:.0} ms: {} ready, {} running, {} succeeded",
        stats.count(TaskState::Ready),
        stats.count(TaskState::Running),
        stats.count(TaskState::Succeeded)
    ));
    drop(spool);
    report("reopen_ms_backlog_1m", reopen_ms, "ms");

    // For comparison (not a target): reopening the same file after a clean close.
    let start = Instant::now();
    let spool = Spool::open(&path).expect("clean reopen");
    note(format!(
        "clean reopen of the same file: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    ));
    drop(spool);
}

/// Fills 1M tasks, drains 100k with 2 workers while ~900k stay queued, reports the rate and
/// the peak RSS, then asks to be killed while tasks are running.
fn backlog_child(path: &Path) {
    let spool = Spool::open(path).expect("open");
    let total = scaled(BACKLOG, 10_000);
    let drain = scaled(DRAIN, 1_000);
    let start = Instant::now();
    let mut next = 0;
    while next < total {
        let hi = (next + CHUNK).min(total);
        drop(
            spool
                .enqueue_many((next..hi).map(|n| Noop { n }))
                .expect("fill"),
        );
        next = hi;
    }
    let fill = start.elapsed().as_secs_f64();
    note(format!(
        "backlog child: {total} tasks queued in {fill:.1} s ({:.0}/s), file {:.1} MiB, RSS {:.1} MiB",
        total as f64 / fill,
        file_mib(path),
        rss_mib()
    ));
    let worker = spool
        .worker()
        .concurrency(WORKERS)
        .register::<Noop>()
        .start()
        .expect("worker");
    // Consecutive windows of `drain` completions; the median window is reported.
    let mut rates = Vec::new();
    let mut done = 0;
    let mut start = Instant::now();
    for _ in 0..repeats() {
        done += drain;
        wait_succeeded(&spool, done, POLL, LONG);
        let secs = start.elapsed().as_secs_f64();
        start = Instant::now();
        rates.push(drain as f64 / secs);
        note(format!(
            "backlog child: {drain} drained in {secs:.2} s with {} still queued",
            spool.stats().expect("stats").count(TaskState::Ready)
        ));
    }
    note(format!("backlog child: windows {} tasks/s", list(&rates)));
    report("drain_noop_backlog_1m", median(rates), "tasks/s");
    report("rss_mb_backlog_1m", peak_rss_mib(), "MiB");
    // Keep draining a little, so attempts are in flight when the kill lands.
    std::thread::sleep(Duration::from_millis(200));
    println!("kill-me");
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = &worker;
    }
}

/// Enqueue and complete 1M tasks in rounds, with a 1 s result TTL on a manual clock: after
/// each round the clock moves past the TTL and the writer prunes. Reports the file size.
fn churn(dir: &Path) {
    let path = queue_path(dir, "churn");
    let clock = ManualClock::starting_now();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(1))
        .open(&path)
        .expect("open");
    let worker = spool
        .worker()
        .concurrency(WORKERS)
        .register::<Noop>()
        .start()
        .expect("worker");
    let total = scaled(CHURN, 10_000);
    let round = CHURN_ROUND.min(total);
    let start = Instant::now();
    let mut done = 0;
    let mut max_mib: f64 = 0.0;
    while done < total {
        let hi = (done + round).min(total);
        let mut next = done;
        while next < hi {
            let chunk_hi = (next + CHUNK).min(hi);
            drop(
                spool
                    .enqueue_many((next..chunk_hi).map(|n| Noop { n }))
                    .expect("enqueue"),
            );
            next = chunk_hi;
        }
        wait_succeeded(&spool, hi - done, POLL, LONG);
        clock.advance(Duration::from_secs(2));
        wait_pruned(&spool);
        done = hi;
        max_mib = max_mib.max(file_mib(&path));
        if done % (round * 4) == 0 || done == total {
            note(format!(
                "churn: {done} tasks done in {:.1} s, file {:.1} MiB",
                start.elapsed().as_secs_f64(),
                file_mib(&path)
            ));
        }
    }
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    drop(spool);
    let size = file_mib(&path);
    note(format!(
        "churn: {total} tasks in {:.1} s; largest size seen {max_mib:.1} MiB, after close {size:.1} MiB",
        start.elapsed().as_secs_f64()
    ));
    report("file_mb_after_churn", size, "MiB");
}

/// Waits until every finished task has been pruned (no task left in the file).
fn wait_pruned(spool: &Spool) {
    let deadline = Instant::now() + LONG;
    loop {
        let stats = spool.stats().expect("stats");
        if stats.queues.iter().all(|q| q.total() == 0) {
            return;
        }
        assert!(Instant::now() < deadline, "pruning did not finish");
        std::thread::sleep(POLL);
    }
}
