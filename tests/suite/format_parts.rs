//! Format 7's chord stored in parts, as a process left it when it died before the seal.
//! `tests/fixtures/format-7-parts/` was written by [`write_parts_fixture`], by the build that
//! introduced format 7; the test opens a copy and checks that the open deleted the chord.
//!
//! | id | task | how it was left |
//! |---|---|---|
//! | 1 | `PAdd(2, 3)` | ready |
//! | 2..=2002 | a chord of 2,000 `PStop` members and a `PSum` body | ids reserved; members 2..=1025 (the first part) stored unindexed; the process exited while it encoded the second part |

use serde::{Deserialize, Serialize, Serializer};
use taskspool::{Context, Error, ManualClock, Task, TaskError, TaskId, TaskState};

use super::common::*;

#[derive(Serialize, Deserialize)]
struct PAdd {
    a: i64,
    b: i64,
}

impl Task for PAdd {
    const NAME: &'static str = "parts.add";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// A member that, while the fixture is written, ends the process when member 1,500 (in the
/// chord's second part) is encoded.
#[derive(Deserialize)]
struct PStop {
    n: u64,
}

static WRITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Serialize for PStop {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.n == 1_500 && WRITING.load(std::sync::atomic::Ordering::SeqCst) {
            // No destructor runs: the queue file is not closed, the log is not checkpointed.
            std::process::exit(0);
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PStop", 1)?;
        st.serialize_field("n", &self.n)?;
        st.end()
    }
}

impl Task for PStop {
    const NAME: &'static str = "parts.stop";
    type Output = u64;
    fn run(self, _ctx: &Context) -> Result<u64, TaskError> {
        Ok(self.n)
    }
}

#[derive(Serialize, Deserialize)]
struct PSum;

impl Task for PSum {
    const NAME: &'static str = "parts.sum";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        Ok(ctx.inputs::<u64>()?.iter().sum())
    }
}

/// Writes the fixture into `$TASKSPOOL_WRITE_FIXTURE` and exits midway through storing a
/// chord: `TASKSPOOL_WRITE_FIXTURE=/tmp/fx cargo test --test lib -- --ignored --exact
/// suite::format_parts::write_parts_fixture`. Run once, by the build that introduced format 7.
#[test]
#[ignore = "writes a format fixture; run by hand only"]
fn write_parts_fixture() {
    let Some(spool) = fixture_writer() else {
        return;
    };
    spool.enqueue(PAdd { a: 2, b: 3 }).unwrap();
    WRITING.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = spool.chord((0..2_000).map(|n| PStop { n }), PSum);
    unreachable!("the process exits while the chord's second part is encoded");
}

#[test]
fn a_format_7_file_left_midway_through_a_chord_opens_without_it() {
    let (_dir, path) = copy_fixture("format-7-parts");
    let clock = ManualClock::from_unix_ms(T0 + 100_000);
    let spool = manual_spool_at(&clock, &path);
    assert_eq!(
        spool.status(TaskId::from_u64(1)).unwrap().state,
        TaskState::Ready
    );
    for id in [2, 3, 1025, 1026, 2002] {
        assert!(
            matches!(spool.status(TaskId::from_u64(id)), Err(Error::NotFound(_))),
            "task {id} of the unsealed chord is gone"
        );
    }
    assert_eq!(spool.stats().unwrap().total(), 1);
    let report = spool
        .worker()
        .register::<PAdd>()
        .register::<PStop>()
        .register::<PSum>()
        .drain()
        .unwrap();
    assert_eq!(report.attempts, 1, "only the task before the chord runs");
    // The reserved ids are not given again.
    let next = spool.enqueue(PAdd { a: 1, b: 1 }).unwrap();
    assert!(next.id().as_u64() > 2002, "{}", next.id());
    // And a chord stored now is whole.
    let chord = spool.chord((0..2_000).map(|n| PStop { n }), PSum).unwrap();
    spool
        .worker()
        .register::<PAdd>()
        .register::<PStop>()
        .register::<PSum>()
        .drain()
        .unwrap();
    assert_eq!(chord.body.wait(WAIT).unwrap(), 1_999 * 2_000 / 2);
}
