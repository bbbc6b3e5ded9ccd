//! Helpers shared by the bench binaries: task types, scaling, temp files, polling, output.
//!
//! Each bench binary includes this module with `mod common;` and uses only part of it.
#![allow(dead_code)]

pub mod finished;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use taskspool::{Context, Spool, Task, TaskError, TaskState};

/// A task that does nothing: the benches measure the queue, not the work.
#[derive(Serialize, Deserialize)]
pub struct Noop {
    pub n: u64,
}

impl Task for Noop {
    const NAME: &'static str = "bench.noop";
    type Output = ();

    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Ok(())
    }
}

/// Where `Probe` reports the instant its handler started.
pub static PROBE_STARTS: Mutex<Option<Sender<(u64, Instant)>>> = Mutex::new(None);

/// A task that reports `(sample index, Instant::now())` when its handler starts.
#[derive(Serialize, Deserialize)]
pub struct Probe {
    pub sample: u64,
}

impl Task for Probe {
    const NAME: &'static str = "bench.probe";
    type Output = ();

    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        let now = Instant::now();
        if let Some(tx) = PROBE_STARTS.lock().unwrap().as_ref() {
            let _ = tx.send((self.sample, now));
        }
        Ok(())
    }
}

/// Enqueue-to-start latencies of `samples` [`Probe`]s on `spool`, one at a time (each waits
/// for the previous task's result, so the pool and the writer are idle when the next enqueue
/// begins), a pool of `workers` threads waiting, after 10 warm-up rounds not recorded; in
/// µs, sorted.
pub fn probe_latencies_us(spool: &Spool, workers: usize, samples: u64) -> Vec<f64> {
    let (tx, rx) = crossbeam_channel::unbounded();
    *PROBE_STARTS.lock().unwrap() = Some(tx);
    let worker = spool
        .worker()
        .concurrency(workers)
        .register::<Probe>()
        .start()
        .expect("worker");
    let mut lat_us: Vec<f64> = Vec::with_capacity(samples as usize);
    for sample in 0..samples + 10 {
        let before = Instant::now();
        let handle = spool.enqueue(Probe { sample }).expect("enqueue");
        let (got, started) = rx.recv_timeout(Duration::from_secs(10)).expect("start");
        assert_eq!(got, sample);
        handle.wait(Duration::from_secs(10)).expect("result");
        if sample >= 10 {
            lat_us.push(started.duration_since(before).as_secs_f64() * 1e6);
        }
    }
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    *PROBE_STARTS.lock().unwrap() = None;
    lat_us.sort_by(f64::total_cmp);
    lat_us
}

/// `TASKSPOOL_BENCH_SCALE` (default 1.0): multiplies every task count, for quick runs.
/// Reported figures must come from a run at scale 1.
pub fn scale() -> f64 {
    std::env::var("TASKSPOOL_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

/// `n` scaled, at least `min`.
pub fn scaled(n: u64, min: u64) -> u64 {
    ((n as f64 * scale()).round() as u64).max(min)
}

/// `TASKSPOOL_BENCH_REPEAT` (default 3): how many times the short, noisy figures (drain, e2e,
/// backlog drain windows) are measured; the median is reported.
pub fn repeats() -> usize {
    std::env::var("TASKSPOOL_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3)
}

/// The median of some measurements (the upper middle one for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Measurements as a short list for the notes.
pub fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A temporary directory on a real file system. `TASKSPOOL_BENCH_DIR` picks the parent
/// directory (default: the system temp dir).
pub fn temp_dir() -> tempfile::TempDir {
    let mut b = tempfile::Builder::new();
    b.prefix("taskspool-bench-");
    match std::env::var_os("TASKSPOOL_BENCH_DIR") {
        Some(parent) => b.tempdir_in(parent),
        None => b.tempdir(),
    }
    .expect("cannot create a temporary directory")
}

/// A fresh queue file in `dir`.
pub fn queue_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.redb"))
}

/// Whether the figure `name` was selected by the command line (no selection = all). A filter
/// selects the figure of that exact name, or, ending in `*`, every figure starting with it:
/// `cargo bench --bench throughput -- drain_noop 'e2e*'`.
pub fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| match f.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == f,
        })
}

/// Prints one summary line in the format.
pub fn report(name: &str, value: f64, unit: &str) {
    let value = if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    println!("bench={name} value={value} unit={unit}");
}

/// The 1/5/15-minute load averages, for the notes.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Progress and context go to stderr; stdout carries only the summary lines.
pub fn note(msg: impl AsRef<str>) {
    eprintln!("# {} (load {})", msg.as_ref(), loadavg());
}

/// Blocks until `stats()` counts at least `n` tasks `Succeeded` (its counts change only once a
/// group is in the log and synced, hence durable), polling every `poll`. Panics after
/// `timeout`.
pub fn wait_succeeded(spool: &Spool, n: u64, poll: Duration, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let done = spool.stats().expect("stats").count(TaskState::Succeeded);
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {done} of {n} tasks succeeded"
        );
        std::thread::sleep(poll);
    }
}

/// Peak resident set size of this process (VmHWM), in MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_kib("VmHWM:") / 1024.0
}

/// Current resident set size of this process (VmRSS), in MiB.
pub fn rss_mib() -> f64 {
    proc_status_kib("VmRSS:") / 1024.0
}

fn proc_status_kib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// A file's size in MiB.
pub fn file_mib(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(f64::NAN, |m| m.len() as f64 / (1024.0 * 1024.0))
}

/// Runs `a` and `b` alternately `repeats()` times (at least 3), so both meet the same
/// moments of the machine, each going first in every other pair; reports each one's median
/// under its name, and the median of b / a pair by pair as `<b>_ratio` (the pairs on
/// stderr, with `target`).
pub fn alternate(
    (name_a, mut a): (&str, impl FnMut() -> f64),
    (name_b, mut b): (&str, impl FnMut() -> f64),
    unit: &str,
    target: &str,
) {
    let rounds = repeats().max(3);
    let (mut xs, mut ys, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = a();
            (x, b())
        } else {
            let y = b();
            (a(), y)
        };
        xs.push(x);
        ys.push(y);
        ratios.push(y / x);
    }
    note(format!(
        "{name_a}: {} {unit}; {name_b}: {} {unit}; {name_b} / {name_a} pair by pair: {} \
         (target {target})",
        list(&xs),
        list(&ys),
        ratios
            .iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    report(name_a, median(xs), unit);
    report(name_b, median(ys), unit);
    report(&format!("{name_b}_ratio"), median(ratios), "x");
}

/// The value at quantile `p` of `sorted`.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A file of `blocks` 4 KiB blocks in a directory, allocated and synced first, so that each
/// [`sync_once`](Self::sync_once) measures a data sync, not file growth. Removed when dropped.
pub struct SyncProbe {
    file: std::fs::File,
    path: PathBuf,
    blocks: u64,
    next: u64,
}

impl SyncProbe {
    /// The probe file `fsync.bin` in `dir`, of `blocks` blocks.
    pub fn new(dir: &Path, blocks: u64) -> Self {
        use std::io::Write;
        let path = dir.join("fsync.bin");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .expect("open fsync file");
        for _ in 0..blocks {
            file.write_all(&[0xA5u8; 4096]).unwrap();
        }
        file.sync_all().unwrap();
        SyncProbe {
            file,
            path,
            blocks,
            next: 0,
        }
    }

    /// Overwrites the next block and `fdatasync`s; returns how long that took, in µs.
    pub fn sync_once(&mut self) -> f64 {
        use std::io::{Seek, SeekFrom, Write};
        let t = Instant::now();
        let at = (self.next % self.blocks) * 4096;
        self.file.seek(SeekFrom::Start(at)).unwrap();
        self.file.write_all(&[0xA5u8; 4096]).unwrap();
        self.file.sync_data().unwrap();
        self.next += 1;
        t.elapsed().as_secs_f64() * 1e6
    }
}

impl Drop for SyncProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `n` single 4 KiB overwrites + `fdatasync` in this directory, one at a time (the pace of
/// one-at-a-time samples): each one's time in µs, sorted. The reference for targets stated
/// in fsyncs.
pub fn fsync_us(dir: &Path, n: u64) -> Vec<f64> {
    let mut probe = SyncProbe::new(dir, 16);
    let mut us: Vec<f64> = (0..n).map(|_| probe.sync_once()).collect();
    us.sort_by(f64::total_cmp);
    us
}

/// A fresh queue file named `name` in `dir` (a leftover one removed), and its path.
pub fn fresh_spool(dir: &Path, name: &str) -> (Spool, PathBuf) {
    let path = queue_path(dir, name);
    let _ = std::fs::remove_file(&path);
    (Spool::open(&path).expect("open"), path)
}

/// Times a drain: from `start` (a pool starting on `spool`) until `done` returns (it waits
/// for the results to be durable); then shuts the pool down, closes the spool and removes
/// its file at `path`. Seconds.
pub fn timed_drain(
    spool: Spool,
    path: &Path,
    start: impl FnOnce(&Spool) -> taskspool::Worker,
    done: impl FnOnce(&Spool),
) -> f64 {
    let began = Instant::now();
    let worker = start(&spool);
    done(&spool);
    let secs = began.elapsed().as_secs_f64();
    worker.shutdown(Duration::from_secs(30)).expect("shutdown");
    drop(spool);
    let _ = std::fs::remove_file(path);
    secs
}
