//! Format 5's flow-control state, as a process left it when it died: declared limits, a
//! paused queue, tasks parked behind their key's limit, unique keys held by tasks and by a
//! schedule's template. `tests/fixtures/format-5-flow/` was written by [`write_flow_fixture`],
//! by the build that introduced format 5; the test opens a copy, checks it, and runs it.
//!
//! | id | task | how it was left |
//! |---|---|---|
//! | 1 | `FlKeyed`, limit key `a` | running (in its handler) at the exit |
//! | 2, 3 | `FlKeyed`, limit key `a` | ready, parked behind key `a`'s limit of 1 |
//! | 4 | `FlKeyed`, limit key `b` | succeeded |
//! | 5 | `FlPlain` on queue `uploads` (paused), unique key `u1` | ready |
//! | 6 | `FlPlain`, unique key `p1` held for 1 h from T0 | succeeded |
//!
//! Limits: `FlKeyed` at most 1 running per key; queue `mail` 10/m; `FlPlain` at most 2
//! running. Queue `uploads` paused. Schedule `beat`: every hour from T0, its tasks
//! (`FlPlain`) unique by `beat`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{
    Context, Limit, LimitTarget, ManualClock, Options, Rate, Schedule, Spool, Task, TaskError,
    TaskId, TaskState, Unique,
};

use super::common::*;

/// While the fixture is written, the first one (key `a`) blocks until the process exits.
#[derive(Serialize, Deserialize)]
struct FlKeyed {
    key: String,
}

static HOLD: std::sync::Mutex<Option<crossbeam_channel::Sender<()>>> = std::sync::Mutex::new(None);

impl Task for FlKeyed {
    const NAME: &'static str = "flow.keyed";
    type Output = String;
    fn run(self, _ctx: &Context) -> Result<String, TaskError> {
        if self.key == "a" {
            let hold = HOLD.lock().unwrap().clone();
            if let Some(started) = hold {
                let _ = started.send(());
                std::thread::sleep(Duration::from_secs(600));
            }
        }
        Ok(self.key)
    }
}

#[derive(Serialize, Deserialize)]
struct FlPlain {
    n: u32,
}

impl Task for FlPlain {
    const NAME: &'static str = "flow.plain";
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.n)
    }
}

fn keyed(key: &str) -> (FlKeyed, Options) {
    (FlKeyed { key: key.into() }, Options::new().limit_key(key))
}

fn limits() -> Vec<Limit> {
    vec![
        Limit::task::<FlKeyed>().per_key(1).unwrap(),
        Limit::task::<FlPlain>().concurrency(2).unwrap(),
        Limit::queue("mail").rate(Rate::per_minute(10).unwrap()),
    ]
}

/// Writes the fixture into `$TASKSPOOL_WRITE_FIXTURE` and exits without closing the spool:
/// `TASKSPOOL_WRITE_FIXTURE=/tmp/fx cargo test --test lib -- --ignored --exact
/// suite::format_flow::write_flow_fixture`. Run once, by the build that introduced format 5.
#[test]
#[ignore = "writes a format fixture; run by hand only"]
fn write_flow_fixture() {
    let Some(spool) = fixture_writer() else {
        return;
    };
    for limit in limits() {
        spool.limit(limit).unwrap();
    }
    spool.pause_queue("uploads").unwrap();
    let (tx, started) = crossbeam_channel::bounded(1);
    *HOLD.lock().unwrap() = Some(tx);
    for key in ["a", "a", "a"] {
        let (task, opts) = keyed(key);
        spool.enqueue_with(task, opts).unwrap();
    }
    let _worker = spool
        .worker()
        .concurrency(3)
        .register::<FlKeyed>()
        .start()
        .unwrap();
    started.recv().unwrap();
    let (task, opts) = keyed("b");
    let b = spool.enqueue_with(task, opts).unwrap();
    assert_eq!(b.wait(WAIT).unwrap(), "b");
    spool
        .enqueue_with(
            FlPlain { n: 5 },
            Options::new().queue("uploads").unique("u1"),
        )
        .unwrap();
    let p = spool
        .enqueue_with(
            FlPlain { n: 6 },
            Options::new().unique_with("p1", Unique::For(Duration::from_secs(3600))),
        )
        .unwrap();
    spool.worker().register::<FlPlain>().drain().unwrap();
    assert_eq!(p.wait(WAIT).unwrap(), 6);
    spool
        .schedule_with(
            "beat",
            Schedule::every(Duration::from_secs(3600)),
            FlPlain { n: 7 },
            Options::new().unique("beat"),
        )
        .unwrap();
    // No destructor runs: the queue file is not closed, the log is not checkpointed.
    std::process::exit(0);
}

#[test]
fn a_format_5_file_with_flow_control_state_opens_and_runs() {
    let (_dir, path) = copy_fixture("format-5-flow");
    let clock = ManualClock::from_unix_ms(T0 + 100_000);
    let spool = manual_spool_at(&clock, &path);
    let state = |id: u64| spool.status(TaskId::from_u64(id)).unwrap().state;

    assert_eq!(spool.limits().unwrap(), limits());
    let stats = spool.stats().unwrap();
    let uploads = stats.queues.iter().find(|q| q.name == "uploads").unwrap();
    assert!(uploads.paused);
    // The attempt that ran at the exit is given back; the parked ones are ready.
    for id in [1, 2, 3] {
        assert_eq!(state(id), TaskState::Ready, "task {id}");
    }
    assert_eq!(state(4), TaskState::Succeeded);
    assert_eq!(state(5), TaskState::Ready);
    assert_eq!(state(6), TaskState::Succeeded);

    // The unique keys still hold.
    let dup = spool
        .enqueue_with(
            FlPlain { n: 0 },
            Options::new().queue("uploads").unique("u1"),
        )
        .unwrap();
    assert!(dup.is_duplicate() && dup.id() == TaskId::from_u64(5));
    let dup = spool
        .enqueue_with(
            FlPlain { n: 0 },
            Options::new().unique_with("p1", Unique::For(Duration::from_secs(3600))),
        )
        .unwrap();
    assert!(dup.is_duplicate() && dup.id() == TaskId::from_u64(6));

    // Key `a`'s tasks run one at a time, all of them; the paused queue holds its task.
    let report = spool.worker().register::<FlKeyed>().drain().unwrap();
    assert_eq!(report.succeeded, 3);
    let plain = || {
        spool
            .worker()
            .queues(["default", "uploads"])
            .register::<FlPlain>()
            .drain()
            .unwrap()
            .attempts
    };
    assert_eq!(plain(), 0);
    assert!(spool.resume_queue("uploads").unwrap());
    assert_eq!(plain(), 1);
    assert_eq!(state(5), TaskState::Succeeded);

    // The schedule's fires carry its unique key: two fires, one task while it waits.
    clock.set_ms(T0 + 3_600_000);
    eventually("the first fire", || {
        spool.stats().unwrap().count(TaskState::Ready) == 1
    });
    clock.set_ms(T0 + 7_200_000);
    let fired_twice = |s: &Spool| {
        s.schedules().unwrap()[0].last_fire
            == Some(std::time::UNIX_EPOCH + Duration::from_millis(T0 + 7_200_000))
    };
    eventually("the second fire", || fired_twice(&spool));
    assert_eq!(spool.stats().unwrap().count(TaskState::Ready), 1);
    assert!(
        spool
            .remove_limit(LimitTarget::Task(FlPlain::NAME.into()))
            .unwrap()
    );
}
