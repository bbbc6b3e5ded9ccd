//! Format 4's execution-control state, as a process left it when it died: a record's second
//! part (time limits, a pending revoke, progress, the retry budget of a snoozed or retried
//! task) and a schedule's (its time limits). `tests/fixtures/format-4-control/` was written
//! by [`write_control_fixture`], by the build that introduced format 4; the test opens a copy
//! and checks and runs every task in it. (`format-4/`, next to it, holds the tasks every
//! format's fixture has, checked by `suite::format`.)
//!
//! | id | task | how it was left |
//! |---|---|---|
//! | 1 | `CxLimited`, soft limit 10 s, hard limit 30 s | ready |
//! | 2 | `CxHold` on queue `hold` | running, and revoked (a revoke waiting for the attempt's end) |
//! | 3 | `CxLimited` | revoked before it ran |
//! | 4 | `CxSnoozer`, max 3 retries | snoozed for 30 s at T0: due at T0+30 s, 4 retries allowed |
//! | 5 | `CxProgress` | succeeded, its progress `{"step": 2}` kept |
//! | 6 | `CxOnce`, no retries | failed, then retried by hand: ready, 1 retry allowed |
//!
//! Schedule `limited`: every hour from T0, its tasks (`CxLimited`) with a 60 s time limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskspool::{
    AttemptErrorKind, Context, Error, ManualClock, Options, Revoke, Schedule, Spool, Task,
    TaskError, TaskId, TaskState,
};

use super::common::*;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Returns its hard deadline's distance from its start, in ms (0 without a limit).
#[derive(Serialize, Deserialize)]
struct CxLimited;

impl Task for CxLimited {
    const NAME: &'static str = "control.limited";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        let started = ctx.spool()?.status(ctx.id())?.started_at;
        Ok(match (ctx.deadline(), started) {
            (Some(deadline), Some(started)) => {
                deadline.duration_since(started).unwrap().as_millis() as u64
            }
            _ => 0,
        })
    }
}

/// While the fixture is written: says it started, then blocks until the process exits.
/// Anywhere else it must not run.
#[derive(Serialize, Deserialize)]
struct CxHold;

static HOLD_STARTED: std::sync::Mutex<Option<crossbeam_channel::Sender<()>>> =
    std::sync::Mutex::new(None);

impl Task for CxHold {
    const NAME: &'static str = "control.hold";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        let started = HOLD_STARTED.lock().unwrap().clone();
        if let Some(started) = started {
            let _ = started.send(());
            std::thread::sleep(Duration::from_secs(600));
        }
        panic!("a revoked task ran again");
    }
}

/// Snoozes 30 s on its first attempt; returns the attempt number after.
#[derive(Serialize, Deserialize)]
struct CxSnoozer;

impl Task for CxSnoozer {
    const NAME: &'static str = "control.snoozer";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::snooze(Duration::from_secs(30), "later"));
        }
        Ok(ctx.attempt())
    }
}

/// Reports its progress twice and succeeds.
#[derive(Serialize, Deserialize)]
struct CxProgress;

impl Task for CxProgress {
    const NAME: &'static str = "control.progress";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        ctx.set_progress(&json!({ "step": 1 }))?;
        ctx.set_progress(&json!({ "step": 2 }))?;
        Ok(())
    }
}

/// Fails its first attempt; returns the attempt number after.
#[derive(Serialize, Deserialize)]
struct CxOnce;

impl Task for CxOnce {
    const NAME: &'static str = "control.once";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::retry("first attempt fails"));
        }
        Ok(ctx.attempt())
    }
}

fn drain(spool: &Spool) -> taskspool::DrainReport {
    spool
        .worker()
        .register::<CxLimited>()
        .register::<CxSnoozer>()
        .register::<CxProgress>()
        .register::<CxOnce>()
        .drain()
        .unwrap()
}

/// Writes the fixture into `$TASKSPOOL_WRITE_FIXTURE` and exits without closing the spool:
/// `TASKSPOOL_WRITE_FIXTURE=/tmp/fx cargo test --test lib -- --ignored --exact
/// suite::format_control::write_control_fixture`. Run once, by the build that introduced
/// format 4.
#[test]
#[ignore = "writes a format fixture; run by hand only"]
fn write_control_fixture() {
    let Some(spool) = fixture_writer() else {
        return;
    };
    spool
        .enqueue_with(
            CxLimited,
            Options::new()
                .soft_time_limit(Duration::from_secs(10))
                .time_limit(Duration::from_secs(30)),
        )
        .unwrap();
    let (tx, started) = crossbeam_channel::bounded(1);
    *HOLD_STARTED.lock().unwrap() = Some(tx);
    let _worker = spool
        .worker()
        .concurrency(1)
        .queue("hold")
        .register::<CxHold>()
        .start()
        .unwrap();
    let hold = spool
        .enqueue_with(CxHold, Options::new().queue("hold"))
        .unwrap();
    started.recv().unwrap();
    assert_eq!(spool.revoke(hold.id()).unwrap(), Revoke::Cancelling);
    let revoked = spool.enqueue(CxLimited).unwrap();
    assert_eq!(spool.revoke(revoked.id()).unwrap(), Revoke::Revoked);
    spool
        .enqueue_with(CxSnoozer, Options::new().max_retries(3))
        .unwrap();
    spool.enqueue(CxProgress).unwrap();
    let once = spool
        .enqueue_with(CxOnce, Options::new().max_retries(0))
        .unwrap();
    // Runs 4, 5 and 6; task 1 stays ready (its type is not registered in this drain).
    spool
        .worker()
        .register::<CxSnoozer>()
        .register::<CxProgress>()
        .register::<CxOnce>()
        .drain()
        .unwrap();
    spool.retry(once.id()).unwrap();
    spool
        .schedule_with(
            "limited",
            Schedule::every(Duration::from_secs(3600)),
            CxLimited,
            Options::new().time_limit(Duration::from_secs(60)),
        )
        .unwrap();
    // No destructor runs: the queue file is not closed, the log is not checkpointed.
    std::process::exit(0);
}

#[test]
fn a_format_4_file_with_execution_control_state_opens_and_runs() {
    let (_dir, path) = copy_fixture("format-4-control");
    let clock = ManualClock::from_unix_ms(T0 + 100_000);
    let spool = manual_spool_at(&clock, &path);
    let status = |id: u64| spool.status(TaskId::from_u64(id)).unwrap();

    assert_eq!(status(1).state, TaskState::Ready);
    // Revoked while it ran, and the process died first: revoked at this open, not re-run.
    let s = status(2);
    assert_eq!((s.state, s.attempts), (TaskState::Revoked, 1));
    let last = s.errors.last().unwrap();
    assert_eq!(last.kind, AttemptErrorKind::Revoked);
    assert!(
        last.message
            .contains("the process exited before it returned"),
        "{}",
        last.message
    );
    let s = status(3);
    assert_eq!(s.state, TaskState::Revoked);
    assert_eq!(s.errors[0].message, "revoked before it ran");
    let s = status(4);
    assert_eq!((s.attempts, s.max_retries), (1, 4));
    assert_eq!(s.due_at, at(T0 + 30_000));
    assert_eq!(s.errors[0].kind, AttemptErrorKind::Snoozed);
    let s = status(5);
    assert_eq!(s.state, TaskState::Succeeded);
    assert_eq!(s.progress, Some(json!({ "step": 2 })));
    let s = status(6);
    assert_eq!(
        (s.state, s.attempts, s.max_retries),
        (TaskState::Ready, 1, 1)
    );
    let limited = spool.schedules().unwrap();
    assert_eq!(limited[0].name, "limited");
    assert_eq!(limited[0].next_fire, Some(at(T0 + 3_600_000)));

    // What is pending runs, with the limits it was stored with.
    drain(&spool);
    let limit_of = |id: u64| {
        spool
            .handle::<CxLimited>(TaskId::from_u64(id))
            .try_get()
            .unwrap()
    };
    assert_eq!(limit_of(1), Some(30_000));
    assert_eq!(
        spool
            .handle::<CxSnoozer>(TaskId::from_u64(4))
            .try_get()
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        spool
            .handle::<CxOnce>(TaskId::from_u64(6))
            .try_get()
            .unwrap(),
        Some(2)
    );
    assert!(matches!(
        spool.handle::<CxHold>(TaskId::from_u64(2)).try_get(),
        Err(Error::TaskRevoked(_))
    ));
    // The schedule's fire carries its time limit.
    clock.set_ms(T0 + 3_600_000);
    drain(&spool);
    assert_eq!(status(7).schedule.as_deref(), Some("limited"));
    assert_eq!(limit_of(7), Some(60_000));
}
