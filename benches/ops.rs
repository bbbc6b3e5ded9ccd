//! Operations figures of issue #15: `list_page_us_1m` (a page of 100 tasks of one state from a
//! file of 1M tasks), `cli_ls_ms_1m` (the whole `taskspool ls` process on that file, closed)
//! and `events_drain_noop` (`drain_noop` with one subscriber reading every
//! event).
//!
//! `events_drain_noop`: 100k no-op tasks queued, then a 2-thread worker drains them (timed as
//! `drain_noop` in `throughput`) while a thread reads every event of a subscription taken
//! after the fill (a `Started` and a `Succeeded` per task). Runs alternate with and without
//! the subscriber (`common::alternate`, at least three pairs); the medians are
//! `events_drain_noop` and `drain_noop_same_run`, and `events_drain_noop_ratio` the median
//! ratio pair by pair (target ≥ 0.9). Events the reader missed (`Lagged`) are printed on
//! stderr.
//!
//! The file: 1M tasks run to the end, one in 100 failed (10k), the rest succeeded, with no
//! results TTL. A page is timed from the call to its return (`Spool::tasks`), the median of
//! many pages at cursors spread over the file: failed tasks oldest first and newest first,
//! and, for comparison, succeeded ones.
//!
//! `remote_enqueue_durable_1` / `_8`: a child process (this binary, re-executed) owns a queue
//! file and serves its control socket; 1 or 8 threads of this process, each with its own
//! `Client`, call `enqueue_json` in a loop for 3 s (each call returns once the owner's group
//! is synced). Beside them, in the same run, `enqueue_durable_1` / `_8` as `throughput` times
//! them (threads of the owning process calling `enqueue`), on another file, alternated
//! (`common::alternate`); medians, and `remote_enqueue_durable_1_ratio` / `_8_ratio`
//! (target ≥ 0.7).
//!
//! Run: `cargo bench --bench ops` (all), or one figure: `cargo bench --bench ops --
//! list_page_us_1m`. `TASKSPOOL_BENCH_SCALE=0.1` shrinks every size. See benches/README.md.

mod common;

use std::time::{Duration, Instant};

use common::finished::finished_file;
use common::*;
use taskspool::{Event, Paging, Spool, TaskFilter, TaskId, TaskState};

/// Tasks per page (issue #15: 100).
const PAGE: usize = 100;
/// Pages timed per order.
const PAGES: usize = 200;

fn main() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("serve") {
        serve_child();
        return;
    }
    let dir = temp_dir();
    note(format!(
        "ops benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("list_page_us_1m") {
        list_page(&dir);
    }
    if selected("events_drain_noop") {
        events_drain(&dir);
    }
    if selected("remote_enqueue_durable_1") || selected("remote_enqueue_durable_8") {
        remote_enqueue(&dir);
    }
    note("ops benches done");
}

fn list_page(dir: &tempfile::TempDir) {
    let (spool, total) = finished_file(dir);
    let path = queue_path(dir.path(), "listing");
    let time = |filter: &TaskFilter, paging: Paging| -> f64 {
        let start = Instant::now();
        let page = spool.tasks(filter, &paging).expect("tasks");
        let us = start.elapsed().as_secs_f64() * 1e6;
        assert_eq!(page.tasks.len(), PAGE, "a whole page");
        us
    };
    let failed = TaskFilter::new().state(TaskState::Failed);
    let succeeded = TaskFilter::new().state(TaskState::Succeeded);
    // Cursors spread over the ids, leaving a page's worth of failed tasks after each.
    let cursors: Vec<u64> = (0..PAGES as u64)
        .map(|i| i * (total / 2) / PAGES as u64 + 1)
        .collect();
    for (what, filter, newest) in [
        ("failed, oldest first", &failed, false),
        ("failed, newest first", &failed, true),
        ("succeeded, oldest first", &succeeded, false),
    ] {
        let mut times: Vec<f64> = cursors
            .iter()
            .map(|&c| {
                let cursor = if newest { total + 1 - c } else { c };
                let paging = Paging::first(PAGE).after(TaskId::from_u64(cursor));
                time(
                    filter,
                    if newest {
                        paging.newest_first()
                    } else {
                        paging
                    },
                )
            })
            .collect();
        times.sort_by(f64::total_cmp);
        note(format!(
            "a page of {PAGE} {what}: p50 {:.0} µs, p99 {:.0} µs",
            pct(&times, 0.5),
            pct(&times, 0.99)
        ));
        if what == "failed, oldest first" {
            report("list_page_us_1m", pct(&times, 0.5), "us");
        }
    }
    drop(spool);
    cli_ls(&path);
}

/// `cli_ls_ms_1m`: the whole `taskspool ls FILE --state failed --limit 100` process on the
/// closed file, from spawn to exit; the median of 20 runs (after one unmeasured).
fn cli_ls(path: &std::path::Path) {
    let run = || {
        let start = Instant::now();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskspool"))
            .args(["ls", "--state", "failed", "--limit", "100"])
            .arg(path)
            .output()
            .expect("run taskspool");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout.iter().filter(|&&b| b == b'\n').count(),
            102,
            "header, 100, next"
        );
        ms
    };
    run();
    let mut times: Vec<f64> = (0..20).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    note(format!(
        "taskspool ls --state failed --limit 100: p50 {:.1} ms, max {:.1} ms",
        pct(&times, 0.5),
        times[times.len() - 1]
    ));
    report("cli_ls_ms_1m", pct(&times, 0.5), "ms");
}

/// Tasks per drain of `events_drain_noop` (as `drain_noop`: 100k).
const DRAIN: u64 = 100_000;

/// One drain of `DRAIN` no-op tasks, with a subscriber reading every event or without;
/// tasks/s, and the events the subscriber read and missed.
fn drain_once(dir: &tempfile::TempDir, subscribe: bool) -> (f64, u64, u64) {
    let (spool, path) = fresh_spool(dir.path(), "events");
    let n = scaled(DRAIN, 1_000);
    drop(
        spool
            .enqueue_many((0..n).map(|n| Noop { n }))
            .expect("fill"),
    );
    let reader = subscribe.then(|| {
        let mut events = spool.events();
        std::thread::spawn(move || {
            let (mut read, mut missed) = (0, 0);
            for event in events.iter() {
                match event {
                    Event::Lagged { missed: m } => missed += m,
                    _ => read += 1,
                }
            }
            (read, missed)
        })
    });
    let secs = timed_drain(
        spool,
        &path,
        |spool| {
            spool
                .worker()
                .concurrency(2)
                .register::<Noop>()
                .start()
                .expect("worker")
        },
        |spool| wait_succeeded(spool, n, Duration::from_millis(1), Duration::from_secs(600)),
    );
    let (read, missed) = reader.map_or((0, 0), |r| r.join().expect("reader"));
    (n as f64 / secs, read, missed)
}

fn events_drain(dir: &tempfile::TempDir) {
    let run = |subscribe: bool| {
        let (rate, read, missed) = drain_once(dir, subscribe);
        if subscribe {
            note(format!(
                "with a subscriber: {read} events read, {missed} missed"
            ));
        }
        rate
    };
    alternate(
        ("drain_noop_same_run", || run(false)),
        ("events_drain_noop", || run(true)),
        "tasks/s",
        ">= 0.9",
    );
}

const CHILD_ENV: &str = "TASKSPOOL_BENCH_CHILD";
const FILE_ENV: &str = "TASKSPOOL_BENCH_FILE";
/// How long each enqueue loop runs.
const LOOP: Duration = Duration::from_secs(3);

/// The owner of a queue file, serving its control socket until the parent kills it.
fn serve_child() {
    let path = std::env::var_os(FILE_ENV).expect("queue file path");
    let spool = Spool::open(&path).expect("open");
    println!("ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let _ = &spool;
    }
}

/// Runs `threads` loops of `call` for `LOOP`; calls per second.
fn rate(threads: usize, call: impl Fn(usize, u64) + Sync) -> f64 {
    let barrier = std::sync::Barrier::new(threads);
    let total: u64 = std::thread::scope(|s| {
        let loops: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, call) = (&barrier, &call);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < LOOP {
                        call(t, n);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        loops.into_iter().map(|l| l.join().expect("loop")).sum()
    });
    total as f64 / LOOP.as_secs_f64()
}

fn remote_enqueue(dir: &tempfile::TempDir) {
    use std::io::BufRead;
    let remote_path = queue_path(dir.path(), "remote");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, "serve")
        .env(FILE_ENV, &remote_path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the owner");
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("the owner's ready line");
    assert_eq!(ready.trim(), "ready");
    let local = Spool::open(queue_path(dir.path(), "local")).expect("open");
    for threads in [1, 8] {
        let clients: Vec<taskspool::Client> = (0..threads)
            .map(|_| taskspool::Client::connect(&remote_path).expect("connect"))
            .collect();
        let remote = || {
            rate(threads, |t, n| {
                clients[t]
                    .enqueue_json(
                        "bench.noop",
                        serde_json::json!({ "n": n }),
                        Default::default(),
                    )
                    .expect("remote enqueue");
            })
        };
        let local = || {
            rate(threads, |t, n| {
                local
                    .enqueue(Noop {
                        n: (t as u64) << 32 | n,
                    })
                    .expect("enqueue");
            })
        };
        alternate(
            (&format!("enqueue_durable_{threads}_same_run"), local),
            (&format!("remote_enqueue_durable_{threads}"), remote),
            "tasks/s",
            ">= 0.7",
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
