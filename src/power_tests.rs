//! Power loss below the page cache. A mixed workload runs on a simulated disk (see
//! `store::simdisk`) that records every write and sync of the queue file and its log. Then,
//! for a power cut right after every sync of the run — keeping only what was synced, and
//! again keeping a random part of what was written since — the files are rebuilt, reopened
//! for real, and every promise is checked: the open succeeds (a power cut is not damage);
//! every enqueue and schedule acknowledged before the cut is there; every result a `wait`
//! returned before the cut is unchanged; no (schedule, fire time) is there twice; and what
//! is pending then runs to the end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::simdisk::{LOG, QUEUE, SimDisk};
use crate::{
    Context, ManualClock, Options, RetryPolicy, Schedule, Spool, Task, TaskError, TaskId, TaskState,
};

const T0: u64 = 1_767_225_600_000;

/// Fails its first `fails` attempts (retryably, or for good if `fatal`), then returns `n`.
#[derive(Debug, Serialize, Deserialize)]
struct Step {
    n: u64,
    fails: u32,
    fatal: bool,
}

impl Task for Step {
    const NAME: &'static str = "power.step";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        if ctx.attempt() <= self.fails {
            return Err(if self.fatal {
                TaskError::fail("fatal")
            } else {
                TaskError::retry("again")
            });
        }
        Ok(self.n)
    }
}

/// What the run acknowledged, each with the number of syncs done when it was acknowledged
/// (it is durable in every image cut at that sync or later).
#[derive(Default)]
struct Acked {
    tasks: Vec<(TaskId, u64)>,
    results: Vec<(TaskId, Result<u64, String>, u64)>,
    schedule: Option<u64>,
}

/// The mixed workload: two producers (single enqueues and a batch, some tasks failing once
/// then succeeding, some failing for good, with immediate retries), a two-thread pool, a
/// schedule, the clock moving, and waiters; the spool is closed cleanly at the end.
fn workload(path: &Path, disk: &Arc<SimDisk>) -> Acked {
    let clock = ManualClock::from_unix_ms(T0);
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .checkpoint_after(16 * 1024)
        .on_sim_disk(disk.clone())
        .open(path)
        .unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    let syncs = || disk.syncs();
    spool
        .schedule(
            "tick",
            Schedule::every(Duration::from_secs(1)),
            Step {
                n: 0,
                fails: 0,
                fatal: false,
            },
        )
        .unwrap();
    acked.lock().unwrap().schedule = Some(syncs());
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Step>()
        .start()
        .unwrap();
    let next = AtomicU64::new(0);
    let opts = Options::new().retry_policy(RetryPolicy::immediate());
    std::thread::scope(|s| {
        for producer in 0..2 {
            let (spool, acked, next, opts, clock) = (&spool, &acked, &next, &opts, &clock);
            s.spawn(move || {
                for i in 0..30u64 {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let task = Step {
                        n,
                        fails: (i % 3) as u32,
                        fatal: i % 7 == 6,
                    };
                    let h = spool.enqueue_with(task, opts.clone()).unwrap();
                    acked.lock().unwrap().tasks.push((h.id(), disk.syncs()));
                    if i % 10 == 9 {
                        clock.advance(Duration::from_secs(1));
                    }
                }
                let batch = (0..20).map(|i| Step {
                    n: 1000 * (producer + 1) + i,
                    fails: 0,
                    fatal: false,
                });
                for h in spool.enqueue_many(batch).unwrap() {
                    acked.lock().unwrap().tasks.push((h.id(), disk.syncs()));
                }
            });
        }
    });
    let ids: Vec<TaskId> = acked.lock().unwrap().tasks.iter().map(|t| t.0).collect();
    for id in ids {
        let result = spool
            .handle::<Step>(id)
            .wait(Duration::from_secs(10))
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            assert!(e.contains("failed after"), "task {id}: {e}");
        }
        acked.lock().unwrap().results.push((id, result, syncs()));
    }
    worker.shutdown(Duration::from_secs(10)).unwrap();
    drop(spool);
    Arc::try_unwrap(acked)
        .ok()
        .expect("the producers are done")
        .into_inner()
        .unwrap()
}

/// Opens the image and checks every promise; returns the number of tasks it holds.
fn check(path: &Path, k: u64, acked: &Acked) -> Result<u64, String> {
    let clock = ManualClock::from_unix_ms(T0 + 3_600_000);
    let spool = Spool::builder()
        .manual_clock(clock)
        .open(path)
        .map_err(|e| format!("the open failed: {e}"))?;
    for &(id, at) in &acked.tasks {
        if at <= k {
            spool
                .status(id)
                .map_err(|e| format!("acknowledged task {id} (at sync {at}): {e}"))?;
        }
    }
    for (id, seen, at) in &acked.results {
        if *at > k {
            continue;
        }
        let now = spool
            .handle::<Step>(*id)
            .try_get()
            .map_err(|e| e.to_string());
        let now = match now {
            Ok(Some(n)) => Ok(n),
            Ok(None) => return Err(format!("task {id}'s result (seen at sync {at}) is gone")),
            Err(e) => Err(e),
        };
        if now != *seen {
            return Err(format!("task {id}: {now:?}, but wait returned {seen:?}"));
        }
    }
    let schedules = spool.schedules().map_err(|e| e.to_string())?;
    if acked.schedule.is_some_and(|at| at <= k) && schedules.len() != 1 {
        return Err(format!("the acknowledged schedule is gone: {schedules:?}"));
    }
    // Everything still pending runs to a final state; no fire is there twice.
    spool
        .worker()
        .register::<Step>()
        .drain()
        .map_err(|e| format!("drain: {e}"))?;
    let stats = spool.stats().map_err(|e| e.to_string())?;
    let total = stats.total();
    let mut fires = HashMap::new();
    for id in 1..=total {
        let s = spool
            .status(TaskId::from_u64(id))
            .map_err(|e| format!("task {id}: {e}"))?;
        if !s.state.is_final() && s.state != TaskState::Scheduled {
            return Err(format!("task {id} did not finish: {s:?}"));
        }
        if let Some(fire) = s.fire_time
            && let Some(first) = fires.insert(fire, id)
        {
            return Err(format!("tasks {first} and {id} are the same fire"));
        }
    }
    Ok(total)
}

#[test]
fn a_power_cut_at_any_sync_loses_nothing_acknowledged() {
    let run = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let acked = workload(&run.path().join("q.redb"), &disk);
    let syncs = disk.syncs();
    assert!(
        syncs > 40,
        "a workload of {syncs} syncs is too small to mean much"
    );
    let mut rng = fastrand::Rng::with_seed(7);
    let mut opened = 0;
    for k in 1..=syncs {
        for keep_some in [false, true] {
            let image = disk.image_at(k, keep_some.then_some(&mut rng));
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("q.redb");
            for (id, suffix) in [(QUEUE, ""), (LOG, ".wal")] {
                if let Some(bytes) = &image[id] {
                    std::fs::write(format!("{}{suffix}", path.display()), bytes).unwrap();
                }
            }
            match check(&path, k, &acked) {
                Ok(_) => opened += 1,
                Err(what) => panic!(
                    "power cut after sync {k} of {syncs} (unsynced writes {}): {what}",
                    if keep_some { "partly kept" } else { "lost" }
                ),
            }
        }
    }
    assert_eq!(opened, 2 * syncs);
}
