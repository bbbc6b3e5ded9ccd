//! Throughput and latency figures of issue #4, each on a fresh queue file in a temp dir:
//! fsync_limit, enqueue_durable_1, enqueue_durable_8, enqueue_bulk, drain_noop, e2e_noop,
//! latency_p50_us / latency_p99_us; plus drain/e2e with an explicit prefetch of 0 (never
//! claim ahead) and 64, next to the default (adaptive) prefetch; and, last, enqueue_buffered_1
//! / enqueue_buffered_8 in the opt-in buffered durability mode (synced within 100 ms).
//!
//! Run: `cargo bench --bench throughput` (all), `cargo bench --bench throughput -- drain_noop`
//! (one figure), `cargo bench --bench throughput -- 'drain*'` (every figure starting "drain").
//! `TASKSPOOL_BENCH_SCALE=0.1` shrinks every size for a quick check; reported figures come
//! from scale 1. See benches/README.md.

mod common;

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::*;
use taskspool::{Durability, Spool};

/// Tasks in the bulk, drain and end-to-end figures (issue #4: 100k).
const TASKS: u64 = 100_000;
/// How long the durable-enqueue and fsync loops run, at scale 1.
const TIMED_SECS: f64 = 5.0;
/// Latency samples (issue #4: 1,000).
const LATENCY_SAMPLES: u64 = 1_000;
/// Explicit prefetch limits measured next to the default (adaptive) one.
const PREFETCH_VARIANTS: [usize; 2] = [0, 64];
/// Producers and their batch size in e2e_noop.
const E2E_PRODUCERS: u64 = 4;
const E2E_BATCH: u64 = 100;
const WORKERS: usize = 2;
const POLL: Duration = Duration::from_millis(1);
const LONG: Duration = Duration::from_secs(600);

fn timed() -> Duration {
    Duration::from_secs_f64((TIMED_SECS * scale()).max(0.5))
}

fn main() {
    let dir = temp_dir();
    note(format!(
        "throughput benches in {} at scale {}",
        dir.path().display(),
        scale()
    ));
    if selected("fsync_limit") {
        fsync_limit(dir.path());
    }
    if selected("enqueue_durable_1") {
        enqueue_durable(dir.path(), 1, false);
    }
    if selected("enqueue_durable_8") {
        enqueue_durable(dir.path(), 8, false);
    }
    if selected("enqueue_bulk") {
        enqueue_bulk(dir.path());
    }
    if selected("drain_noop") {
        repeated("drain_noop", || drain_noop(dir.path(), None, "drain_noop"));
    }
    for p in PREFETCH_VARIANTS {
        let name = format!("drain_noop_prefetch{p}");
        if selected(&name) {
            repeated(&name, || drain_noop(dir.path(), Some(p), &name));
        }
    }
    if selected("e2e_noop") {
        repeated("e2e_noop", || e2e_noop(dir.path(), None, "e2e_noop"));
    }
    for p in PREFETCH_VARIANTS {
        let name = format!("e2e_noop_prefetch{p}");
        if selected(&name) {
            repeated(&name, || e2e_noop(dir.path(), Some(p), &name));
        }
    }
    if selected("latency_p50_us") || selected("latency_p99_us") {
        latency(dir.path());
    }
    // The opt-in buffered mode, after every figure of the default mode.
    if selected("enqueue_buffered_1") {
        enqueue_durable(dir.path(), 1, true);
    }
    if selected("enqueue_buffered_8") {
        enqueue_durable(dir.path(), 8, true);
    }
    note("throughput benches done");
}

/// Measures a tasks/s figure `repeats()` times (once when one run takes over 20 s) and
/// reports the median.
fn repeated(name: &str, mut run: impl FnMut() -> f64) {
    let mut values = Vec::new();
    let start = Instant::now();
    while values.len() < repeats() {
        values.push(run());
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    note(format!("{name}: runs {} tasks/s", list(&values)));
    report(name, median(values), "tasks/s");
}

/// The physical reference: overwrite a 4 KiB block and `fdatasync`, in a loop, in the same
/// directory as the queue files.
fn fsync_limit(dir: &Path) {
    // Allocated first (256 blocks) so the loop measures data syncs, not file growth.
    let mut probe = SyncProbe::new(dir, 256);
    let limit = timed();
    let start = Instant::now();
    let mut n = 0u64;
    let mut each_us = Vec::new();
    while start.elapsed() < limit {
        each_us.push(probe.sync_once());
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    each_us.sort_by(f64::total_cmp);
    note(format!(
        "fsync_limit: {n} syncs in {secs:.2} s ({:.0} us each; p50 {:.0} us, p99 {:.0} us)",
        secs * 1e6 / n as f64,
        pct(&each_us, 0.5),
        pct(&each_us, 0.99)
    ));
    report("fsync_limit", n as f64 / secs, "syncs/s");
}

/// `threads` producers, each calling `enqueue` in a loop; every call is acknowledged durable
/// (or, with `buffered`, written to the OS and synced within 100 ms: `enqueue_buffered_*`).
fn enqueue_durable(dir: &Path, threads: usize, buffered: bool) {
    let (name, durability) = if buffered {
        (
            format!("enqueue_buffered_{threads}"),
            Durability::Buffered(Duration::from_millis(100)),
        )
    } else {
        (format!("enqueue_durable_{threads}"), Durability::Immediate)
    };
    let spool = Spool::builder()
        .durability(durability)
        .open(queue_path(dir, &name))
        .expect("open");
    let limit = timed();
    let barrier = Barrier::new(threads + 1);
    let (total, secs) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let spool = spool.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < limit {
                        spool
                            .enqueue(Noop {
                                n: (t as u64) << 32 | n,
                            })
                            .expect("enqueue");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        (total, start.elapsed().as_secs_f64())
    });
    note(format!(
        "{name}: {total} acknowledged enqueues in {secs:.2} s"
    ));
    report(&name, total as f64 / secs, "tasks/s");
}

/// One `enqueue_many` call with 100k tasks.
fn enqueue_bulk(dir: &Path) {
    let spool = Spool::open(queue_path(dir, "enqueue_bulk")).expect("open");
    let n = scaled(TASKS, 1_000);
    let start = Instant::now();
    let handles = spool
        .enqueue_many((0..n).map(|n| Noop { n }))
        .expect("bulk");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(handles.len() as u64, n);
    note(format!("enqueue_bulk: {n} tasks in {secs:.3} s"));
    report("enqueue_bulk", n as f64 / secs, "tasks/s");
}

/// 100k no-op tasks already queued; a 2-thread worker starts; timed until every result is
/// committed (visible in a snapshot, so durable).
fn drain_noop(dir: &Path, prefetch: Option<usize>, name: &str) -> f64 {
    let (spool, path) = fresh_spool(dir, name);
    let n = scaled(TASKS, 1_000);
    drop(
        spool
            .enqueue_many((0..n).map(|n| Noop { n }))
            .expect("fill"),
    );
    let secs = timed_drain(
        spool,
        &path,
        |spool| pool(spool, prefetch),
        |spool| wait_succeeded(spool, n, POLL, LONG),
    );
    note(format!("{name}: {n} tasks drained in {secs:.2} s"));
    n as f64 / secs
}

/// A 2-thread pool of `Noop`; `prefetch: None` keeps the library's default (adaptive).
fn pool(spool: &Spool, prefetch: Option<usize>) -> taskspool::Worker {
    let builder = spool.worker().concurrency(WORKERS).register::<Noop>();
    match prefetch {
        Some(p) => builder.prefetch(p),
        None => builder,
    }
    .start()
    .expect("worker")
}

/// Producers (4 threads, batches of 100 via `enqueue_many`, each batch durable) and a
/// 2-thread worker at once; timed from the first enqueue until every result is committed.
fn e2e_noop(dir: &Path, prefetch: Option<usize>, name: &str) -> f64 {
    let path = queue_path(dir, name);
    let _ = std::fs::remove_file(&path);
    let spool = Spool::open(&path).expect("open");
    let n = scaled(TASKS, 1_000);
    let batches = n.div_ceil(E2E_BATCH);
    let worker = pool(&spool, prefetch);
    let barrier = Barrier::new(E2E_PRODUCERS as usize + 1);
    let start = std::thread::scope(|s| {
        for p in 0..E2E_PRODUCERS {
            let spool = spool.clone();
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let mut b = p;
                while b < batches {
                    let lo = b * E2E_BATCH;
                    let hi = (lo + E2E_BATCH).min(n);
                    drop(
                        spool
                            .enqueue_many((lo..hi).map(|n| Noop { n }))
                            .expect("enqueue"),
                    );
                    b += E2E_PRODUCERS;
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    let produced = start.elapsed().as_secs_f64();
    wait_succeeded(&spool, n, POLL, LONG);
    let secs = start.elapsed().as_secs_f64();
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    note(format!(
        "{name}: {n} tasks enqueued in {produced:.2} s, all results durable after {secs:.2} s"
    ));
    drop(spool);
    let _ = std::fs::remove_file(&path);
    n as f64 / secs
}

/// Enqueue → handler start on an idle 2-thread worker, one task at a time: the instant before
/// `enqueue` is called vs. the instant the handler starts. Each sample waits for the previous
/// task's result, so the worker and the writer are idle when the next enqueue begins.
fn latency(dir: &Path) {
    let spool = Spool::open(queue_path(dir, "latency")).expect("open");
    let lat_us = probe_latencies_us(&spool, WORKERS, scaled(LATENCY_SAMPLES, 50));
    let pct = |p: f64| lat_us[((lat_us.len() - 1) as f64 * p).round() as usize];
    note(format!(
        "latency: {} samples, min {:.0} us, p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        lat_us.len(),
        lat_us[0],
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat_us[lat_us.len() - 1]
    ));
    report("latency_p50_us", pct(0.5), "us");
    report("latency_p99_us", pct(0.99), "us");
}
