//! Format 7's chord stored in parts, as a process left it when it died before the seal.
//! `tests/fixtures/format-7-parts/` was written by [`write_parts_fixture`], by the build that
//! introduced format 7; the test opens a copy and checks that the open deleted the chord.
//!
//! | id | task | how it was left |
//! |---|---|---|
//! | 1 | `PStop(7)` | ready |
//! | 2, 3 | a chain of `PAdd(1, 1)` then `PAdd(2, 2)` | succeeded: the first step at the fixture's time `T0`, the second an hour later, when the workflow ended (its `workflows` row) |
//! | 4..=2004 | a chord of 2,000 `PStop` members and a `PSum` body | ids reserved; members 4..=1027 (the first part) stored unindexed; the process exited while it encoded the second part |

use serde::{Deserialize, Serialize, Serializer};
use taskspool::{Context, Error, ManualClock, Task, TaskError, TaskId, TaskState};

use super::common::*;

/// Runs every task of the fixture's types; returns how many attempts ran.
fn drain(spool: &taskspool::Spool) -> usize {
    spool
        .worker()
        .register::<PAdd>()
        .register::<PStop>()
        .register::<PSecond>()
        .register::<PSum>()
        .drain()
        .unwrap()
        .attempts
}

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

/// A chain's second step: its parent's output plus two.
#[derive(Serialize, Deserialize)]
struct PSecond;

impl Task for PSecond {
    const NAME: &'static str = "parts.second";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.input::<i64>()? + 2)
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
    let Ok(dir) = std::env::var(WRITE_ENV) else {
        return;
    };
    let clock = manual_clock();
    let spool = manual_spool_at(&clock, &std::path::Path::new(&dir).join("queue.redb"));
    spool.enqueue(PStop { n: 7 }).unwrap();
    let chain = spool
        .chain(PAdd { a: 1, b: 1 })
        .then(PSecond)
        .enqueue()
        .unwrap();
    spool.worker().register::<PAdd>().drain().unwrap();
    clock.advance(std::time::Duration::from_secs(3_600));
    spool.worker().register::<PSecond>().drain().unwrap();
    assert_eq!(chain.wait(WAIT).unwrap(), 4);
    WRITING.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = spool.chord((0..2_000).map(|n| PStop { n }), PSum);
    unreachable!("the process exits while the chord's second part is encoded");
}

#[test]
fn a_format_7_file_left_midway_through_a_chord_opens_without_it() {
    let (_dir, path) = copy_fixture("format-7-parts");
    // Half an hour past the first step's TTL (a day): kept, since its workflow ended only an
    // hour after it.
    let hour = std::time::Duration::from_secs(3_600);
    let clock = ManualClock::from_unix_ms(T0 + 24 * 3_600_000 + 1_800_000);
    let spool = manual_spool_at(&clock, &path);
    assert_eq!(
        spool.status(TaskId::from_u64(1)).unwrap().state,
        TaskState::Ready
    );
    // The upgrade indexed its tasks, not the held members of the unsealed chord.
    assert_listed_as_counted(&spool);
    spool.worker().register::<PAdd>().drain().unwrap();
    let (step1, step2) = (TaskId::from_u64(2), TaskId::from_u64(3));
    assert_eq!(spool.status(step1).unwrap().state, TaskState::Succeeded);
    // A TTL past the workflow's end, both steps go.
    clock.advance(hour);
    eventually("the ended chain pruned", || {
        is_not_found(&spool, step1) && is_not_found(&spool, step2)
    });
    // The writer deletes the unsealed chord's part after the open.
    eventually("the unsealed chord is gone", || {
        [4, 5, 1027, 1028, 2004]
            .into_iter()
            .all(|id| matches!(spool.status(TaskId::from_u64(id)), Err(Error::NotFound(_))))
    });
    assert_eq!(spool.stats().unwrap().total(), 1);
    assert_listed_as_counted(&spool);
    assert_eq!(drain(&spool), 1, "only the task before the chord runs");
    // The reserved ids are not given again.
    let next = spool.enqueue(PAdd { a: 1, b: 1 }).unwrap();
    assert!(next.id().as_u64() > 2004, "{}", next.id());
    // And a chord stored now is whole.
    let chord = spool.chord((0..2_000).map(|n| PStop { n }), PSum).unwrap();
    drain(&spool);
    assert_eq!(chord.body.wait(WAIT).unwrap(), 1_999 * 2_000 / 2);
}
