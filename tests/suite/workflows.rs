//! Workflows: Celery's canvas guide as tests — a chain passes each output to the next step, a
//! chord's body runs once with every member's output in order, a group waits for all — and
//! what happens when a step does not succeed, is revoked, or the process restarts midway.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{
    AttemptErrorKind, Context, Error, Options, Revoke, Spool, Task, TaskError, TaskState,
};

use super::common::*;

/// Adds `b` to the output of the step before (Celery's `add.s(b)` in a chain).
#[derive(Serialize, Deserialize)]
pub(super) struct AddTo {
    pub(super) b: i64,
}

impl Task for AddTo {
    const NAME: &'static str = "wf.add_to";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.input::<i64>()? + self.b)
    }
}

/// Sums its inputs (Celery's `xsum`, a chord's body).
#[derive(Serialize, Deserialize)]
pub(super) struct XSum;

impl Task for XSum {
    const NAME: &'static str = "wf.xsum";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.inputs::<i64>()?.iter().sum())
    }
}

/// Fails for good when `n` is `fail`, else returns `n`.
#[derive(Serialize, Deserialize)]
pub(super) struct Maybe {
    pub(super) n: i64,
    pub(super) fail: i64,
}

impl Task for Maybe {
    const NAME: &'static str = "wf.maybe";
    type Output = i64;
    fn run(self, _ctx: &Context) -> Result<i64, TaskError> {
        if self.n == self.fail {
            return Err(TaskError::fail(format!("member {} failed", self.n)));
        }
        Ok(self.n)
    }
}

pub(super) fn add(a: i64, b: i64) -> Add {
    Add { a, b }
}

fn drain_all(spool: &Spool) -> usize {
    spool
        .worker()
        .register::<Add>()
        .register::<AddTo>()
        .register::<XSum>()
        .register::<Maybe>()
        .drain()
        .unwrap()
        .attempts
}

#[test]
fn a_chain_passes_each_output_to_the_next_step() {
    let spool = fresh_spool();
    let total = spool
        .chain(add(2, 2))
        .then(AddTo { b: 4 })
        .then(AddTo { b: 8 })
        .enqueue()
        .unwrap();
    // Stored at once: one ready, two waiting.
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Ready), 1);
    assert_eq!(stats.count(TaskState::Waiting), 2);
    assert_eq!(drain_all(&spool), 3);
    assert_eq!(total.wait(WAIT).unwrap(), 16);
}

#[test]
fn a_chord_body_runs_once_with_every_members_output_in_order() {
    let spool = fresh_spool();
    let chord = spool.chord((0..10).map(|i| add(i, i)), XSum).unwrap();
    assert_eq!(state_of(&spool, chord.body.id()), TaskState::Waiting);
    assert_eq!(drain_all(&spool), 11);
    assert_eq!(chord.body.wait(WAIT).unwrap(), 90);
    assert_eq!(
        chord.members.wait(WAIT).unwrap(),
        (0..10).map(|i| 2 * i).collect::<Vec<_>>()
    );
    assert_eq!(spool.status(chord.body.id()).unwrap().attempts, 1);
}

#[test]
fn a_group_waits_for_every_member_in_order() {
    let spool = fresh_spool();
    let group = spool.group((0..5).map(|i| add(i, 10))).unwrap();
    drain_all(&spool);
    assert_eq!(group.wait(WAIT).unwrap(), vec![10, 11, 12, 13, 14]);
    assert_eq!(group.len(), 5);
    assert_eq!(group.member(4).unwrap().wait(WAIT).unwrap(), 14);
    assert!(group.member(5).is_none());
}

#[test]
fn a_failed_member_fails_the_chord_body_which_never_runs() {
    let spool = fresh_spool();
    let chord = spool
        .chord((0..5).map(|n| Maybe { n, fail: 3 }), XSum)
        .unwrap();
    assert_eq!(drain_all(&spool), 5, "the members, not the body");
    let status = spool.status(chord.body.id()).unwrap();
    assert_eq!((status.state, status.attempts), (TaskState::Failed, 0));
    let why = &status.errors[0];
    assert_eq!(why.kind, AttemptErrorKind::Upstream);
    let member = chord.members.member(3).unwrap().id();
    assert!(
        why.message.contains(&format!("task {member} (`wf.maybe`)")),
        "{}",
        why.message
    );
    assert!(matches!(chord.body.wait(WAIT), Err(Error::TaskFailed(_))));
}

#[test]
fn a_failed_step_fails_every_step_after_it() {
    let spool = fresh_spool();
    let last = spool
        .chain_with(Maybe { n: 1, fail: 1 }, Options::new().max_retries(0))
        .then(AddTo { b: 1 })
        .then(AddTo { b: 2 })
        .enqueue()
        .unwrap();
    assert_eq!(drain_all(&spool), 1);
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Failed), 3);
    assert_eq!(stats.count(TaskState::Waiting), 0);
    let status = spool.status(last.id()).unwrap();
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Upstream);
}

/// A member that retries counts once: the body runs after its success, not before.
#[test]
fn a_retried_member_counts_once() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("wf-retry");
    let retries = Scripted::new(&log, [Step::Retry, Step::Succeed]);
    let chord = spool.chord([add(1, 1), add(2, 2)], XSum).unwrap();
    // A chord whose member fails its first attempt and is retried.
    let retried = spool.chord([retries], XSum).unwrap();
    let drain = || {
        spool
            .worker()
            .register::<Add>()
            .register::<XSum>()
            .register::<Scripted>()
            .drain()
            .unwrap()
    };
    drain();
    assert_eq!(chord.body.wait(WAIT).unwrap(), 6);
    assert_eq!(state_of(&spool, retried.body.id()), TaskState::Waiting);
    clock.advance(Duration::from_secs(60));
    drain();
    assert_eq!(
        retried.body.wait(WAIT).unwrap(),
        2,
        "the member's second attempt"
    );
    assert_eq!(spool.status(retried.body.id()).unwrap().attempts, 1);
}

#[test]
fn revoking_a_waiting_step_fails_the_steps_after_it() {
    let spool = fresh_spool();
    let last = spool
        .chain(add(1, 1))
        .then(AddTo { b: 1 })
        .then(AddTo { b: 2 })
        .enqueue()
        .unwrap();
    let middle = taskspool::TaskId::from_u64(last.id().as_u64() - 1);
    assert_eq!(spool.revoke(middle).unwrap(), Revoke::Revoked);
    assert_eq!(state_of(&spool, last.id()), TaskState::Failed);
    drain_all(&spool);
    assert_eq!(state_of(&spool, middle), TaskState::Revoked);
    assert!(
        spool.status(last.id()).unwrap().errors[0]
            .message
            .contains("ended revoked")
    );
}

/// A workflow's waiting steps and counters are stored: a reopen midway loses nothing.
#[test]
fn a_workflow_survives_a_reopen_midway() {
    let place = fresh_place();
    let spool = place.open(Spool::builder()).unwrap();
    let chord = spool.chord((0..4).map(|i| add(i, 0)), XSum).unwrap();
    let body = chord.body.id();
    // The members run (no worker knows the body's type yet), then the spool closes.
    let members = spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(members.attempts, 4);
    drop(chord);
    drop(spool);
    let spool = place.open(Spool::builder()).unwrap();
    assert_eq!(state_of(&spool, body), TaskState::Ready);
    drain_all(&spool);
    assert_eq!(spool.handle::<XSum>(body).wait(WAIT).unwrap(), 6);
}

#[test]
fn bad_workflows_are_refused_and_store_nothing() {
    let spool = fresh_spool();
    let err = spool.chord(Vec::<Add>::new(), XSum).unwrap_err();
    assert!(err.to_string().contains("at least one member"), "{err}");
    let err = spool
        .chain(add(1, 1))
        .then_with(AddTo { b: 1 }, Options::new().unique("k"))
        .enqueue()
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot have a unique key"),
        "{err}"
    );
    let err = spool
        .chain(add(1, 1))
        .then_with(AddTo { b: 1 }, Options::new().priority(99))
        .enqueue()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert_eq!(spool.stats().unwrap().total(), 0);

    // A task that is not a workflow step has no input: a permanent failure that says so.
    let lone = spool
        .enqueue_with(AddTo { b: 1 }, Options::new().max_retries(3))
        .unwrap();
    drain_all(&spool);
    match lone.wait(WAIT) {
        Err(Error::TaskFailed(f)) => {
            assert_eq!(f.attempts, 1);
            assert!(f.message.contains("has no input"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
}

/// A step's status names its workflow, parents and children; the workflow's status counts
/// its tasks by state; revoking the workflow revokes every task not yet final.
#[test]
fn a_workflow_is_seen_and_revoked_as_a_whole() {
    let spool = fresh_spool();
    let chord = spool.chord((0..3).map(|i| add(i, 1)), XSum).unwrap();
    let first = chord.members.member(0).unwrap().id();
    let body = spool.status(chord.body.id()).unwrap();
    assert_eq!(body.workflow, Some(first));
    assert_eq!(
        body.parents,
        chord.members.members().map(|m| m.id()).collect::<Vec<_>>()
    );
    assert_eq!(spool.status(first).unwrap().children, vec![chord.body.id()]);
    let wf = spool.workflow_status(first).unwrap();
    assert_eq!(
        (
            wf.total(),
            wf.count(TaskState::Ready),
            wf.count(TaskState::Waiting)
        ),
        (4, 3, 1)
    );
    assert!(!wf.is_finished());
    // Another workflow right after it is not counted with it.
    let chain = spool
        .chain(add(1, 1))
        .then(AddTo { b: 1 })
        .enqueue()
        .unwrap();

    // One member runs; revoking the workflow revokes the rest, the body included.
    spool.worker().register::<Add>().drain().unwrap();
    let revoked = spool.revoke_workflow(first).unwrap();
    assert_eq!(
        revoked.revoked, 1,
        "the members had all run; the body was waiting"
    );
    let wf = spool.workflow_status(first).unwrap();
    assert_eq!(
        (wf.count(TaskState::Succeeded), wf.count(TaskState::Revoked)),
        (3, 1)
    );
    assert!(wf.is_finished());
    assert!(matches!(chord.body.wait(WAIT), Err(Error::TaskRevoked(_))));
    // The chain next to it is untouched, and runs.
    drain_all(&spool);
    assert_eq!(chain.wait(WAIT).unwrap(), 3);

    let last = spool
        .chain(add(5, 5))
        .then(AddTo { b: 1 })
        .then(AddTo { b: 1 })
        .enqueue()
        .unwrap();
    let start = spool.status(last.id()).unwrap().workflow.unwrap();
    let revoked = spool.revoke_workflow(start).unwrap();
    assert_eq!(
        revoked.revoked, 3,
        "every step ends revoked, none failed by the cascade"
    );
    assert_eq!(
        spool
            .workflow_status(start)
            .unwrap()
            .count(TaskState::Revoked),
        3
    );
    assert!(matches!(
        spool.revoke_workflow(last.id()),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        spool.workflow_status(last.id()),
        Err(Error::NotFound(_))
    ));
}

/// Nesting, with the graph builder: a chain of groups, a group of chains, a chord inside a
/// chain — each one transaction, each ending with the result the shape gives.
#[test]
fn nested_workflows_run_in_the_order_their_shape_gives() {
    let spool = fresh_spool();

    // A chain of groups: group(add(1,1), add(2,2)) → xsum (6) → group(add_to(1), add_to(2))
    // → xsum (7 + 8).
    let mut wf = spool.workflow();
    let g1: Vec<_> = [(1, 1), (2, 2)]
        .map(|(a, b)| wf.add(add(a, b)).id())
        .to_vec();
    let s1 = wf.after(&g1, XSum);
    let g2: Vec<_> = [1, 2]
        .map(|b| wf.after(&[s1.id()], AddTo { b }).id())
        .to_vec();
    let s2 = wf.after(&g2, XSum);
    let chain_of_groups = wf.enqueue().unwrap();

    // A group of chains: three chains add(i, 0) → add_to(10), and their results in order.
    let mut wf = spool.workflow();
    let ends: Vec<_> = (0..3)
        .map(|i| {
            let first = wf.add(add(i, 0));
            wf.after(&[first.id()], AddTo { b: 10 })
        })
        .collect();
    let group_of_chains = wf.enqueue().unwrap();

    // A chord inside a chain: add(1, 1) → chord(add_to(i) for i in 1..=3) → xsum → add_to(100).
    let mut wf = spool.workflow();
    let head = wf.add(add(1, 1));
    let members: Vec<_> = (1..=3)
        .map(|i| wf.after(&[head.id()], AddTo { b: i }).id())
        .collect();
    let body = wf.after(&members, XSum);
    let tail = wf.after(&[body.id()], AddTo { b: 100 });
    let chord_in_chain = wf.enqueue().unwrap();

    drain_all(&spool);
    assert_eq!(chain_of_groups.handle(s1).wait(WAIT).unwrap(), 6);
    assert_eq!(chain_of_groups.handle(s2).wait(WAIT).unwrap(), 15);
    let outs: Vec<i64> = ends
        .iter()
        .map(|e| group_of_chains.handle(*e).wait(WAIT).unwrap())
        .collect();
    assert_eq!(outs, vec![10, 11, 12]);
    assert_eq!(
        chord_in_chain.handle(tail).wait(WAIT).unwrap(),
        3 + 4 + 5 + 100
    );
    let wf = spool.workflow_status(chord_in_chain.id()).unwrap();
    assert_eq!((wf.total(), wf.count(TaskState::Succeeded)), (6, 6));
    assert!(matches!(
        spool.workflow().enqueue(),
        Err(Error::InvalidOption(_))
    ));
}

/// Counts its parents' results: the successes' sum and how many failed.
#[derive(Serialize, Deserialize)]
struct Tally;

impl Task for Tally {
    const NAME: &'static str = "wf.tally";
    type Output = (i64, Vec<String>);
    fn run(self, ctx: &Context) -> Result<(i64, Vec<String>), TaskError> {
        let mut sum = 0;
        let mut failed = Vec::new();
        for r in ctx.results::<i64>()? {
            match r {
                Ok(n) => sum += n,
                Err(f) => failed.push(f.message),
            }
        }
        Ok((sum, failed))
    }
}

/// The opt-in body that runs anyway: it gets every member's result, failures included.
#[test]
fn a_settled_chord_body_runs_with_every_members_result() {
    let spool = fresh_spool();
    let chord = spool
        .chord_settled((0..5).map(|n| Maybe { n, fail: 2 }), Tally)
        .unwrap();
    spool
        .worker()
        .register::<Maybe>()
        .register::<Tally>()
        .drain()
        .unwrap();
    let (sum, failed) = chord.body.wait(WAIT).unwrap();
    assert_eq!(sum, 8, "0 + 1 + 3 + 4");
    assert_eq!(failed, vec!["member 2 failed".to_string()]);

    // In a graph: after_settled; and a plain step's results() says what to do instead.
    let mut wf = spool.workflow();
    let bad = wf.add(Maybe { n: 1, fail: 1 });
    let good = wf.add(add(2, 3));
    let tally = wf.after_settled(&[bad.id(), good.id()], Tally);
    let strict = wf.after(&[good.id()], Tally);
    let stored = wf.enqueue().unwrap();
    spool
        .worker()
        .register::<Add>()
        .register::<Maybe>()
        .register::<Tally>()
        .drain()
        .unwrap();
    assert_eq!(
        stored.handle(tally).wait(WAIT).unwrap(),
        (5, vec!["member 1 failed".into()])
    );
    match stored.handle(strict).wait(WAIT) {
        Err(Error::TaskFailed(f)) => assert!(f.message.contains("after_settled"), "{}", f.message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_step_of_another_workflow_cannot_be_a_parent() {
    let spool = fresh_spool();
    let mut one = spool.workflow();
    let a = one.add(add(1, 1));
    let mut two = spool.workflow();
    let _ = two.add(add(2, 2));
    two.after(&[a.id()], AddTo { b: 1 });
    let err = two.enqueue().unwrap_err();
    assert!(err.to_string().contains("another workflow"), "{err}");
    assert_eq!(spool.stats().unwrap().total(), 0);
    drop(one);
}
