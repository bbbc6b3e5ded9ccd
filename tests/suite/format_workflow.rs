//! Format 6's workflow state, as a process left it when it died: steps waiting for their
//! parents, a chord whose counter is half way down, a member running at the exit.
//! `tests/fixtures/format-6-workflow/` was written by [`write_workflow_fixture`], by the
//! build that introduced format 6; the test opens a copy, checks it, and runs it.
//!
//! | id | task | how it was left |
//! |---|---|---|
//! | 1 | `WfAdd(2, 2)`, a chain's first step | succeeded (4) |
//! | 2 | `WfAddTo(4)`, after 1 | ready |
//! | 3 | `WfAddTo(8)`, after 2 | waiting |
//! | 4, 5 | `WfAdd(1, 1)`, `WfAdd(2, 2)`, chord members | succeeded |
//! | 6 | `WfHold`, chord member | running (in its handler) at the exit |
//! | 7 | `WfSum`, the chord's body, after 4, 5, 6 | waiting, one parent left |

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, ManualClock, Task, TaskError, TaskId, TaskState};

use super::common::*;

#[derive(Serialize, Deserialize)]
struct WfAdd {
    a: i64,
    b: i64,
}

impl Task for WfAdd {
    const NAME: &'static str = "wf.add";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

#[derive(Serialize, Deserialize)]
struct WfAddTo {
    b: i64,
}

impl Task for WfAddTo {
    const NAME: &'static str = "wf.add_to";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.input::<i64>()? + self.b)
    }
}

#[derive(Serialize, Deserialize)]
struct WfSum;

impl Task for WfSum {
    const NAME: &'static str = "wf.sum";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.inputs::<i64>()?.iter().sum())
    }
}

/// While the fixture is written: says it started, then blocks until the process exits.
/// Anywhere else it returns 3.
#[derive(Serialize, Deserialize)]
struct WfHold;

static HOLD: std::sync::Mutex<Option<crossbeam_channel::Sender<()>>> = std::sync::Mutex::new(None);

impl Task for WfHold {
    const NAME: &'static str = "wf.hold";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        let hold = HOLD.lock().unwrap().clone();
        if let Some(started) = hold {
            let _ = started.send(());
            std::thread::sleep(Duration::from_secs(600));
        }
        Ok(3)
    }
}

/// Writes the fixture into `$TASKSPOOL_WRITE_FIXTURE` and exits without closing the spool:
/// `TASKSPOOL_WRITE_FIXTURE=/tmp/fx cargo test --test lib -- --ignored --exact
/// suite::format_workflow::write_workflow_fixture`. Run once, by the build that introduced
/// format 6.
#[test]
#[ignore = "writes a format fixture; run by hand only"]
fn write_workflow_fixture() {
    let Some(spool) = fixture_writer() else {
        return;
    };
    spool
        .chain(WfAdd { a: 2, b: 2 })
        .then(WfAddTo { b: 4 })
        .then(WfAddTo { b: 8 })
        .enqueue()
        .unwrap();
    // The chain's first step only: the others' type is not registered here.
    spool.worker().register::<WfAdd>().drain().unwrap();
    let (tx, started) = crossbeam_channel::bounded(1);
    *HOLD.lock().unwrap() = Some(tx);
    let _worker = spool
        .worker()
        .concurrency(2)
        .register::<Member>()
        .start()
        .unwrap();
    let chord = spool
        .chord([Member::Add(1, 1), Member::Add(2, 2), Member::Hold], WfSum)
        .unwrap();
    started.recv().unwrap();
    for m in chord.members.members().take(2) {
        m.wait(WAIT).unwrap();
    }
    // No destructor runs: the queue file is not closed, the log is not checkpointed.
    std::process::exit(0);
}

#[test]
fn a_format_6_file_with_workflows_in_flight_opens_and_runs() {
    let (_dir, path) = copy_fixture("format-6-workflow");
    let clock = ManualClock::from_unix_ms(T0 + 100_000);
    let spool = manual_spool_at(&clock, &path);
    let state = |id: u64| spool.status(TaskId::from_u64(id)).unwrap().state;
    assert_eq!(state(1), TaskState::Succeeded);
    assert_eq!(state(2), TaskState::Ready);
    assert_eq!(state(3), TaskState::Waiting);
    assert_eq!(state(4), TaskState::Succeeded);
    assert_eq!(state(5), TaskState::Succeeded);
    // The member running at the exit is given back; the body still waits for it.
    assert_eq!(state(6), TaskState::Ready);
    assert_eq!(state(7), TaskState::Waiting);

    let report = spool
        .worker()
        .register::<WfAddTo>()
        .register::<WfSum>()
        .register::<Member>()
        .drain()
        .unwrap();
    assert_eq!(report.succeeded, 4);
    let chain = spool.handle::<WfAddTo>(TaskId::from_u64(3));
    assert_eq!(
        chain.wait(WAIT).unwrap(),
        16,
        "the chain went on from its stored step"
    );
    let body = spool.handle::<WfSum>(TaskId::from_u64(7));
    assert_eq!(
        body.wait(WAIT).unwrap(),
        2 + 4 + 3,
        "the body ran once, with every output"
    );
    assert_eq!(spool.status(TaskId::from_u64(7)).unwrap().attempts, 1);
}

/// A chord member: an addition, or a hold.
#[derive(Serialize, Deserialize)]
enum Member {
    Add(i64, i64),
    Hold,
}

impl Task for Member {
    const NAME: &'static str = "wf.member";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        match self {
            Member::Add(a, b) => Ok(a + b),
            Member::Hold => WfHold.run(ctx),
        }
    }
}
