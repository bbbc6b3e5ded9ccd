//! The on-disk format: files written by earlier releases open, read and run unchanged.
//!
//! `tests/fixtures/format-N/` holds a queue file, its write-ahead log and its start journal
//! as a process left them when it died, written by the first build of format version N with
//! [`write_format_fixture`] (format 2: rev 225afe3; formats 3 and 4: the builds that
//! introduced them, see `tests/fixtures/README.md`; format 4's execution-control state has a
//! fixture and a test of its own, `suite::format_control`). A test per fixture opens a copy and checks every task and
//! schedule in it, then runs what is pending. They stay forever: a later format change adds
//! a fixture of its own (and a test like these) next to them.
//!
//! What the fixture holds, by id (times from `T0`, 2026-01-01T00:00:00Z):
//!
//! | id | task | how it was left |
//! |---|---|---|
//! | 1 | `FxAdd { 2, 3 }` | succeeded (output 5) |
//! | 2 | `FxFlaky { fails: 1 }`, fixed 60 s backoff | failed once, then succeeded at T0+60 s |
//! | 3 | `FxFlaky { fails: 3 }`, fixed 60 s backoff, 3 retries | failed twice, retrying at T0+120 s |
//! | 4 | `FxDoomed` | failed permanently (`Fatal`) |
//! | 5 | `FxAdd { 10, 20 }`, countdown 1 h | scheduled for T0+1 h |
//! | 6 | `FxAdd { 1, 1 }` on queue `later`, expires after 30 s | expired |
//! | 7 | `FxAdd { 7, 7 }` on queue `other`, priority 7 | ready |
//! | 8 | `FxAdd { 100, 1 }` | succeeded (output 101), in the log only |
//! | 9 | `FxAdd { 4, 4 }` | ready, in the log only |
//! | 10 | `FxHold` on queue `hold` | running when the process died (in the log and the journal) |
//!
//! Schedules: `hourly` (every hour, first fire T0+1 h) and `morning` (cron `0 6 * * *` in
//! Europe/Paris, paused).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use taskspool::{
    AttemptErrorKind, Context, Error, ManualClock, MisfirePolicy, Options, RetryPolicy, Schedule,
    Spool, Task, TaskError, TaskId, TaskState,
};

use super::common::*;

/// 2026-01-01T00:00:00Z, the fixture's clock at its start.
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

/// Where the generator writes, when set (see [`write_format_2_fixture`]).

#[derive(Debug, Serialize, Deserialize)]
struct FxAdd {
    a: i64,
    b: i64,
}

impl Task for FxAdd {
    const NAME: &'static str = "fixture.add";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// Fails retryably on its first `fails` attempts, then returns the attempt number.
#[derive(Debug, Serialize, Deserialize)]
struct FxFlaky {
    fails: u32,
}

impl Task for FxFlaky {
    const NAME: &'static str = "fixture.flaky";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if ctx.attempt() <= self.fails {
            return Err(TaskError::retry(format!("flaky attempt {}", ctx.attempt())));
        }
        Ok(ctx.attempt())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct FxDoomed;

impl Task for FxDoomed {
    const NAME: &'static str = "fixture.doomed";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Err(TaskError::fail("doomed"))
    }
}

/// While the fixture is written: says it started, then blocks until the process exits.
/// Anywhere else: returns its attempt number.
#[derive(Debug, Serialize, Deserialize)]
struct FxHold;

static HOLD_STARTED: std::sync::Mutex<Option<crossbeam_channel::Sender<()>>> =
    std::sync::Mutex::new(None);

impl Task for FxHold {
    const NAME: &'static str = "fixture.hold";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        let started = HOLD_STARTED.lock().unwrap().clone();
        if let Some(started) = started {
            let _ = started.send(());
            std::thread::sleep(Duration::from_secs(600));
        }
        Ok(ctx.attempt())
    }
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn drain_default(spool: &Spool) -> taskspool::DrainReport {
    spool
        .worker()
        .register::<FxAdd>()
        .register::<FxFlaky>()
        .register::<FxDoomed>()
        .drain()
        .unwrap()
}

/// Writes a fixture of this build's format into `$TASKSPOOL_WRITE_FIXTURE` (a directory)
/// and exits the process without closing the spool, the way a crash leaves the files:
/// `TASKSPOOL_WRITE_FIXTURE=/tmp/fx cargo test --test lib -- --ignored --exact
/// suite::format::write_format_fixture`. Run once by the build that introduces a format;
/// a committed fixture is never written again.
#[test]
#[ignore = "writes a format fixture; run by hand only"]
fn write_format_fixture() {
    let Ok(dir) = std::env::var(WRITE_ENV) else {
        return;
    };
    let path = Path::new(&dir).join("queue.redb");
    let clock = ManualClock::from_unix_ms(T0);
    let open = || {
        Spool::builder()
            .manual_clock(clock.clone())
            .open(&path)
            .unwrap()
    };
    {
        let spool = open();
        let sixty = RetryPolicy::fixed(Duration::from_secs(60));
        spool.enqueue(FxAdd { a: 2, b: 3 }).unwrap();
        spool
            .enqueue_with(FxFlaky { fails: 1 }, Options::new().retry_policy(sixty))
            .unwrap();
        spool
            .enqueue_with(
                FxFlaky { fails: 3 },
                Options::new().retry_policy(sixty).max_retries(3),
            )
            .unwrap();
        spool.enqueue(FxDoomed).unwrap();
        spool
            .enqueue_with(
                FxAdd { a: 10, b: 20 },
                Options::new().countdown(Duration::from_secs(3600)),
            )
            .unwrap();
        spool
            .enqueue_with(
                FxAdd { a: 1, b: 1 },
                Options::new()
                    .queue("later")
                    .expires(Duration::from_secs(30)),
            )
            .unwrap();
        spool
            .enqueue_with(
                FxAdd { a: 7, b: 7 },
                Options::new().queue("other").priority(7),
            )
            .unwrap();
        spool
            .schedule(
                "hourly",
                Schedule::every(Duration::from_secs(3600)),
                FxAdd { a: 0, b: 60 },
            )
            .unwrap();
        spool
            .schedule_with(
                "morning",
                Schedule::cron("0 6 * * *")
                    .unwrap()
                    .tz("Europe/Paris")
                    .misfire(MisfirePolicy::Skip),
                FxAdd { a: 6, b: 0 },
                Options::new().queue("other"),
            )
            .unwrap();
        spool.pause_schedule("morning").unwrap();
        drain_default(&spool);
        clock.advance(Duration::from_secs(60));
        drain_default(&spool);
    }
    clock.set_ms(T0 + 90_000);
    let spool = open();
    spool.enqueue(FxAdd { a: 100, b: 1 }).unwrap();
    drain_default(&spool);
    spool.enqueue(FxAdd { a: 4, b: 4 }).unwrap();
    let (tx, started) = crossbeam_channel::bounded(1);
    *HOLD_STARTED.lock().unwrap() = Some(tx);
    let _worker = spool
        .worker()
        .concurrency(1)
        .queue("hold")
        .register::<FxHold>()
        .start()
        .unwrap();
    spool
        .enqueue_with(FxHold, Options::new().queue("hold"))
        .unwrap();
    started.recv().unwrap();
    // No destructor runs: the queue file is not closed, the log is not checkpointed.
    std::process::exit(0);
}

#[track_caller]
fn expect(
    spool: &Spool,
    id: u64,
    name: &str,
    queue: &str,
    state: TaskState,
    attempts: u32,
) -> taskspool::TaskStatus {
    let status = spool.status(TaskId::from_u64(id)).unwrap();
    assert_eq!(
        (
            status.name.as_str(),
            status.queue.as_str(),
            status.state,
            status.attempts
        ),
        (name, queue, state, attempts),
        "task {id}: {status:?}"
    );
    assert_eq!(
        status.enqueued_at,
        at(if id <= 7 { T0 } else { T0 + 90_000 })
    );
    status
}

#[test]
fn a_format_2_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-2");
}

#[test]
fn a_format_3_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-3");
}

#[test]
fn a_format_4_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-4");
}

#[test]
fn a_format_5_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-5");
}

#[test]
fn a_format_6_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-6");
}

#[test]
fn a_format_7_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-7");
}

/// Opens a copy of the fixture `name`, checks every task and schedule in it, and runs what is
/// pending.
fn opens_reads_and_runs(name: &str) {
    let (_dir, path) = copy_fixture(name);
    let clock = ManualClock::from_unix_ms(T0 + 100_000);
    let spool = manual_spool_at(&clock, &path);
    // The upgrade indexed every task by state (and recovery moved its entries).
    assert_listed_as_counted(&spool);

    // Every task, as the dead process left it (and recovery at open made of it).
    let s = expect(&spool, 1, "fixture.add", "default", TaskState::Succeeded, 1);
    assert_eq!((s.started_at, s.finished_at), (Some(at(T0)), Some(at(T0))));
    assert!(s.errors.is_empty() && s.schedule.is_none() && s.expires_at.is_none());
    assert_eq!(
        spool
            .handle::<FxAdd>(TaskId::from_u64(1))
            .try_get()
            .unwrap(),
        Some(5)
    );

    let s = expect(
        &spool,
        2,
        "fixture.flaky",
        "default",
        TaskState::Succeeded,
        2,
    );
    assert_eq!(s.errors.len(), 1);
    assert_eq!(
        (s.errors[0].attempt, s.errors[0].at, s.errors[0].kind),
        (1, at(T0), AttemptErrorKind::Error)
    );
    assert_eq!(s.errors[0].message, "flaky attempt 1");
    assert_eq!(s.finished_at, Some(at(T0 + MIN)));
    assert_eq!(
        spool
            .handle::<FxFlaky>(TaskId::from_u64(2))
            .try_get()
            .unwrap(),
        Some(2)
    );

    let s = expect(
        &spool,
        3,
        "fixture.flaky",
        "default",
        TaskState::Retrying,
        2,
    );
    assert_eq!((s.max_retries, s.due_at), (3, at(T0 + 2 * MIN)));
    let history: Vec<_> = s.errors.iter().map(|e| (e.attempt, e.at, e.kind)).collect();
    assert_eq!(
        history,
        vec![
            (1, at(T0), AttemptErrorKind::Error),
            (2, at(T0 + MIN), AttemptErrorKind::Error)
        ]
    );
    assert_eq!(s.errors[1].message, "flaky attempt 2");

    let s = expect(&spool, 4, "fixture.doomed", "default", TaskState::Failed, 1);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(
        (s.errors[0].kind, s.errors[0].message.as_str()),
        (AttemptErrorKind::Fatal, "doomed")
    );
    match spool.handle::<FxDoomed>(TaskId::from_u64(4)).try_get() {
        Err(Error::TaskFailed(f)) => assert_eq!((f.attempts, f.message.as_str()), (1, "doomed")),
        other => panic!("task 4: {other:?}"),
    }

    let s = expect(&spool, 5, "fixture.add", "default", TaskState::Scheduled, 0);
    assert_eq!(s.due_at, at(T0 + HOUR));

    let s = expect(&spool, 6, "fixture.add", "later", TaskState::Expired, 0);
    assert_eq!(s.expires_at, Some(at(T0 + 30_000)));
    assert_eq!(s.errors.len(), 1);
    assert_eq!(s.errors[0].kind, AttemptErrorKind::Expired);
    assert!(matches!(
        spool.handle::<FxAdd>(TaskId::from_u64(6)).try_get(),
        Err(Error::TaskExpired(_))
    ));

    let s = expect(&spool, 7, "fixture.add", "other", TaskState::Ready, 0);
    assert_eq!(s.priority, 7);

    let s = expect(&spool, 8, "fixture.add", "default", TaskState::Succeeded, 1);
    assert_eq!(s.finished_at, Some(at(T0 + 90_000)));
    assert_eq!(
        spool
            .handle::<FxAdd>(TaskId::from_u64(8))
            .try_get()
            .unwrap(),
        Some(101)
    );

    expect(&spool, 9, "fixture.add", "default", TaskState::Ready, 0);

    // Running when the process died, and it had started (the journal says so): one lost
    // attempt, and it runs again.
    let s = expect(&spool, 10, "fixture.hold", "hold", TaskState::Ready, 1);
    assert_eq!(s.errors.len(), 1);
    assert_eq!(
        (s.errors[0].attempt, s.errors[0].kind),
        (1, AttemptErrorKind::WorkerLost)
    );

    assert!(is_not_found(&spool, TaskId::from_u64(11)));
    let stats = spool.stats().unwrap();
    let count = |q: &str, s: TaskState| stats.queue(q).map_or(0, |q| q.count(s));
    assert_eq!(count("default", TaskState::Succeeded), 3);
    assert_eq!(count("default", TaskState::Retrying), 1);
    assert_eq!(count("default", TaskState::Failed), 1);
    assert_eq!(count("default", TaskState::Scheduled), 1);
    assert_eq!(count("later", TaskState::Expired), 1);
    assert_eq!(count("default", TaskState::Ready), 1);
    assert_eq!(count("other", TaskState::Ready), 1);
    assert_eq!(count("hold", TaskState::Ready), 1);
    assert_eq!(stats.total(), 10);

    let schedules = spool.schedules().unwrap();
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["hourly", "morning"]);
    let (hourly, morning) = (&schedules[0], &schedules[1]);
    assert_eq!(
        (hourly.task.as_str(), hourly.queue.as_str()),
        ("fixture.add", "default")
    );
    assert_eq!(hourly.schedule, "every 3600s");
    assert_eq!(
        (hourly.next_fire, hourly.last_fire, hourly.paused),
        (Some(at(T0 + HOUR)), None, false)
    );
    assert_eq!(hourly.misfire, MisfirePolicy::RunOnce);
    assert_eq!(morning.schedule, "cron `0 6 * * *` in Europe/Paris");
    assert_eq!(
        (morning.queue.as_str(), morning.misfire),
        ("other", MisfirePolicy::Skip)
    );
    assert_eq!((morning.next_fire, morning.paused), (None, true));

    // What is pending runs.
    assert_eq!(drain_default(&spool).attempts, 1, "task 9");
    assert_eq!(
        spool
            .handle::<FxAdd>(TaskId::from_u64(9))
            .try_get()
            .unwrap(),
        Some(8)
    );
    clock.set_ms(T0 + 2 * MIN);
    drain_default(&spool);
    expect(
        &spool,
        3,
        "fixture.flaky",
        "default",
        TaskState::Retrying,
        3,
    );
    clock.set_ms(T0 + 3 * MIN);
    drain_default(&spool);
    assert_eq!(
        spool
            .handle::<FxFlaky>(TaskId::from_u64(3))
            .try_get()
            .unwrap(),
        Some(4)
    );

    clock.set_ms(T0 + HOUR);
    // Task 5 comes due, and `hourly` fires once: task 11.
    assert_eq!(drain_default(&spool).attempts, 2);
    assert_eq!(
        spool
            .handle::<FxAdd>(TaskId::from_u64(5))
            .try_get()
            .unwrap(),
        Some(30)
    );
    let fired = spool.status(TaskId::from_u64(11)).unwrap();
    assert_eq!(fired.schedule.as_deref(), Some("hourly"));
    assert_eq!(fired.fire_time, Some(at(T0 + HOUR)));
    assert_eq!(
        spool
            .handle::<FxAdd>(TaskId::from_u64(11))
            .try_get()
            .unwrap(),
        Some(60)
    );

    let other = spool
        .worker()
        .queue("other")
        .register::<FxAdd>()
        .drain()
        .unwrap();
    assert_eq!(other.succeeded, 1);
    assert_eq!(
        spool
            .handle::<FxAdd>(TaskId::from_u64(7))
            .try_get()
            .unwrap(),
        Some(14)
    );
    spool
        .worker()
        .queue("hold")
        .register::<FxHold>()
        .drain()
        .unwrap();
    assert_eq!(
        spool
            .handle::<FxHold>(TaskId::from_u64(10))
            .try_get()
            .unwrap(),
        Some(2)
    );

    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Succeeded), 9);
    assert_eq!(
        stats.count(TaskState::Failed) + stats.count(TaskState::Expired),
        2
    );
    assert_eq!(stats.total(), 11);
}

#[test]
fn a_format_8_file_left_by_a_crash_opens_reads_and_runs() {
    opens_reads_and_runs("format-8");
}
