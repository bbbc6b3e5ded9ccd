//! Timer figures of issue #3: how late a countdown task starts after its due time, and how
//! often an idle spool's writer thread wakes up.
//!
//! - `countdown_wake_p50_us` / `countdown_wake_p99_us`: a task enqueued with a 50 ms
//!   countdown on an idle 2-thread worker; the handler takes `SystemTime::now()` first thing,
//!   and the figure is that minus the task's due time (enqueue time + countdown, as stored in
//!   its status). 200 samples, one at a time.
//! - `idle_wakeups_per_min`: a spool with a running worker, an interval schedule due in an
//!   hour and nothing else to do; the writer thread's voluntary context switches (from
//!   `/proc/self/task/<tid>/status`) over 60 s, per minute. The goal is zero: the writer
//!   sleeps until the next due time and wakes only for commands.
//!
//! Run: `cargo bench --bench timers`. `TASKSPOOL_BENCH_SCALE=0.1` shortens both.

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::*;
use crossbeam_channel::Sender;
use serde::{Deserialize, Serialize};
use taskspool::{Context, Options, Schedule, Spool, Task, TaskError};

static STARTS: Mutex<Option<Sender<(u64, SystemTime)>>> = Mutex::new(None);

/// Reports when its handler started.
#[derive(Serialize, Deserialize)]
struct Stamp {
    sample: u64,
}

impl Task for Stamp {
    const NAME: &'static str = "bench.stamp";
    type Output = ();

    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        let now = SystemTime::now();
        if let Some(tx) = STARTS
            .lock()
            .map_err(|_| TaskError::fail("poisoned"))?
            .as_ref()
        {
            let _ = tx.send((self.sample, now));
        }
        Ok(())
    }
}

fn main() {
    let dir = temp_dir();
    note(format!("timer benches at scale {}", scale()));
    if selected("countdown_wake_p50_us") || selected("countdown_wake_p99_us") {
        countdown(dir.path());
    }
    if selected("idle_wakeups_per_min") {
        idle(dir.path());
    }
    note("timer benches done");
}

fn countdown(dir: &std::path::Path) {
    let spool = Spool::open(queue_path(dir, "countdown")).expect("open");
    let (tx, rx) = crossbeam_channel::unbounded();
    *STARTS.lock().expect("lock") = Some(tx);
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Stamp>()
        .start()
        .expect("worker");
    let samples = scaled(200, 20);
    let mut late_us = Vec::new();
    for sample in 0..samples {
        let handle = spool
            .enqueue_with(
                Stamp { sample },
                Options::new().countdown(Duration::from_millis(50)),
            )
            .expect("enqueue");
        let due = handle.status().expect("status").due_at;
        let (got, started) = rx.recv_timeout(Duration::from_secs(10)).expect("start");
        assert_eq!(got, sample);
        handle.wait(Duration::from_secs(10)).expect("result");
        let late = started
            .duration_since(due)
            .map(|d| d.as_secs_f64() * 1e6)
            .unwrap_or_else(|early| -early.duration().as_secs_f64() * 1e6);
        late_us.push(late);
    }
    worker.shutdown(Duration::from_secs(10)).expect("shutdown");
    late_us.sort_by(f64::total_cmp);
    let pct = |p: f64| late_us[((late_us.len() - 1) as f64 * p).round() as usize];
    note(format!(
        "countdown: {} samples, start after due: min {:.0} us, p50 {:.0}, p99 {:.0}, max {:.0}",
        late_us.len(),
        late_us[0],
        pct(0.5),
        pct(0.99),
        late_us[late_us.len() - 1]
    ));
    report("countdown_wake_p50_us", pct(0.5), "us");
    report("countdown_wake_p99_us", pct(0.99), "us");
}

/// The writer thread's voluntary context switches so far.
fn writer_switches() -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "taskspool-write" || comm.trim() == "taskspool-writer" {
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            return status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok());
        }
    }
    None
}

fn idle(dir: &std::path::Path) {
    let spool = Spool::open(queue_path(dir, "idle")).expect("open");
    spool
        .schedule(
            "hourly",
            Schedule::every(Duration::from_secs(3600)),
            Stamp { sample: 0 },
        )
        .expect("schedule");
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Stamp>()
        .start()
        .expect("worker");
    let window = Duration::from_secs_f64((60.0 * scale()).max(5.0));
    std::thread::sleep(Duration::from_millis(200));
    let before = writer_switches().expect("writer thread found");
    std::thread::sleep(window);
    let after = writer_switches().expect("writer thread found");
    let per_min = (after - before) as f64 * 60.0 / window.as_secs_f64();
    note(format!(
        "idle: {} writer wake-ups in {:.0} s",
        after - before,
        window.as_secs_f64()
    ));
    worker.shutdown(Duration::from_secs(10)).expect("shutdown");
    report("idle_wakeups_per_min", per_min, "wakeups/min");
}
