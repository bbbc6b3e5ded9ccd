//! Large chords: a chord of more members than one transaction stores (1,024) is stored in
//! parts, and a user sees no difference — every member exists when the call returns, with
//! consecutive ids, the body reads every output in order, the workflow is seen and revoked
//! whole — and a chord whose storing fails midway leaves nothing behind.

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, Options, Spool, Task, TaskError, TaskId, TaskState};

use super::common::*;
use super::workflows::{Maybe, XSum, add};

/// More members than one part (1,024), and not a multiple of it.
const N: i64 = 2_500;

fn drain(spool: &Spool) -> usize {
    spool
        .worker()
        .register::<Add>()
        .register::<XSum>()
        .register::<Maybe>()
        .register::<Settle>()
        .register::<Half>()
        .drain()
        .unwrap()
        .attempts
}

#[test]
fn a_chord_larger_than_a_part_runs_as_one() {
    let spool = fresh_spool();
    let before = spool.enqueue(add(1, 1)).unwrap();
    let chord = spool.chord((0..N).map(|i| add(i, i)), XSum).unwrap();
    assert_eq!(chord.members.len(), N as usize);

    // Every member is there, in order, with consecutive ids, and the body after them.
    let first = chord.members.member(0).unwrap().id();
    assert_eq!(first.as_u64(), before.id().as_u64() + 1);
    let ids: Vec<u64> = chord.members.members().map(|m| m.id().as_u64()).collect();
    let expected: Vec<u64> = (first.as_u64()..first.as_u64() + N as u64).collect();
    assert_eq!(ids, expected);
    assert_eq!(chord.body.id().as_u64(), first.as_u64() + N as u64);
    let stats = spool.stats().unwrap();
    assert_eq!(
        (
            stats.count(TaskState::Ready),
            stats.count(TaskState::Waiting)
        ),
        (N as u64 + 1, 1)
    );
    assert_listed_as_counted(&spool);
    let last = spool
        .status(chord.members.member(N as usize - 1).unwrap().id())
        .unwrap();
    assert_eq!(last.workflow, Some(first));
    assert_eq!(last.children, vec![chord.body.id()]);
    let body = spool.status(chord.body.id()).unwrap();
    assert_eq!(body.parents.len(), N as usize);
    assert_eq!(body.parents.first(), Some(&first));
    assert_eq!(spool.workflow_status(first).unwrap().total(), N as u64 + 1);

    assert_eq!(drain(&spool), N as usize + 2);
    assert_eq!(
        chord.body.wait(WAIT).unwrap(),
        (0..N).map(|i| 2 * i).sum::<i64>()
    );
    assert_eq!(chord.members.member(7).unwrap().wait(WAIT).unwrap(), 14);
    assert!(spool.workflow_status(first).unwrap().is_finished());
    assert_listed_as_counted(&spool);
}

#[test]
fn a_large_chord_whose_member_fails_fails_its_body_and_a_settled_one_runs() {
    let spool = fresh_spool();
    let chord = spool
        .chord((0..N).map(|n| Maybe { n, fail: 1_500 }), XSum)
        .unwrap();
    let settled = spool
        .chord_settled((0..N).map(|n| Maybe { n, fail: 2 }), Settle)
        .unwrap();
    drain(&spool);
    let Err(Error::TaskFailed(f)) = chord.body.wait(WAIT) else {
        panic!("the body must fail");
    };
    let member = chord.members.member(1_500).unwrap().id();
    assert!(
        f.message.contains(&format!("task {member}")),
        "{}",
        f.message
    );
    assert_eq!(settled.body.wait(WAIT).unwrap(), (N as usize - 1, 1));
}

#[test]
fn revoking_a_large_chord_revokes_every_member() {
    let spool = fresh_spool();
    let chord = spool.chord((0..N).map(|i| add(i, 0)), XSum).unwrap();
    let first = chord.members.member(0).unwrap().id();
    let revoked = spool.revoke_workflow(first).unwrap();
    assert_eq!(revoked.revoked, N as u64 + 1);
    assert_eq!(drain(&spool), 0);
    assert_eq!(
        spool.stats().unwrap().count(TaskState::Revoked),
        N as u64 + 1
    );
    assert_listed_as_counted(&spool);
}

/// A member whose arguments do not encode, after more than a part of good ones: the call
/// fails, and nothing of the chord is left — no task, no count, nothing a worker runs.
#[test]
fn a_large_chord_that_fails_midway_leaves_nothing() {
    let place = fresh_place();
    let spool = place.open(Spool::builder()).unwrap();
    let members = (0..N).map(|n| Half {
        n: if n == 2_000 { f64::NAN } else { n as f64 },
    });
    let err = spool.chord(members, XSum).unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    assert_eq!(spool.stats().unwrap().total(), 0);
    assert_listed_as_counted(&spool);
    assert_eq!(drain(&spool), 0);
    // The spool goes on; the ids the chord had reserved are simply not used.
    let after = spool.enqueue_with(add(2, 3), Options::new()).unwrap();
    assert!(after.id().as_u64() > N as u64);
    assert!(matches!(
        spool.status(TaskId::from_u64(1)),
        Err(Error::NotFound(_))
    ));
    drop(spool);
    // And the reopened queue has nothing of it either.
    let spool = place.open(Spool::builder()).unwrap();
    assert_eq!(spool.stats().unwrap().total(), 1);
    assert_eq!(drain(&spool), 1);
    assert_eq!(after.id(), spool.handle::<Add>(after.id()).id());
}

/// Counts its parents' results: (succeeded, failed).
#[derive(Serialize, Deserialize)]
struct Settle;

impl Task for Settle {
    const NAME: &'static str = "parts.settle";
    type Output = (usize, usize);
    fn run(self, ctx: &Context) -> Result<(usize, usize), TaskError> {
        let results = ctx.results::<i64>()?;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        Ok((ok, results.len() - ok))
    }
}

/// Halves `n` (whose NaN does not encode).
#[derive(Serialize, Deserialize)]
struct Half {
    n: f64,
}

impl Task for Half {
    const NAME: &'static str = "parts.half";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        Ok((self.n / 2.0) as i64)
    }
}
