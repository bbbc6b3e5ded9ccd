//! A workflow's results are kept a TTL past the end of the whole workflow, not of each task:
//! a chain's first output lives as long as its last step's, a chord's members as long as
//! its body — however long the workflow takes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Spool, Task, TaskError, TaskId, TaskState};

use super::common::*;
use super::workflows::{AddTo, Maybe, XSum, add};

/// Doubles the step before's output.
#[derive(Serialize, Deserialize)]
struct Twice;

impl Task for Twice {
    const NAME: &'static str = "wf.twice";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        Ok(ctx.input::<i64>()? * 2)
    }
}

const TTL: Duration = Duration::from_secs(60);

fn spool_with_ttl(clock: &taskspool::ManualClock) -> Spool {
    Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(TTL)
        .open_fresh()
        .unwrap()
}

fn exists(spool: &Spool, id: TaskId) -> bool {
    !is_not_found(spool, id)
}

#[test]
fn a_chains_first_result_is_kept_a_ttl_past_its_last_step() {
    let clock = manual_clock();
    let spool = spool_with_ttl(&clock);
    let last = spool
        .chain(add(1, 2))
        .then(AddTo { b: 1 })
        .then(Twice)
        .enqueue()
        .unwrap();
    let first = spool.status(last.id()).unwrap().workflow.unwrap();
    let second = TaskId::from_u64(first.as_u64() + 1);

    // Each step runs 100 s (more than a TTL) after the one before.
    spool.worker().register::<Add>().drain().unwrap();
    clock.advance(Duration::from_secs(100));
    spool.worker().register::<AddTo>().drain().unwrap();
    clock.advance(Duration::from_secs(100));
    assert!(exists(&spool, first), "the workflow has not ended");
    spool.worker().register::<Twice>().drain().unwrap();
    assert_eq!(last.wait(WAIT).unwrap(), 8);

    // A TTL after the last step: everything is still there just before it, gone after.
    clock.advance(TTL - Duration::from_secs(1));
    spool.worker().register::<Add>().drain().unwrap();
    for id in [first, second, last.id()] {
        assert!(
            exists(&spool, id),
            "task {id} is kept until the workflow's end + TTL"
        );
    }
    clock.advance(Duration::from_secs(2));
    eventually("the workflow pruned", || {
        [first, second, last.id()]
            .into_iter()
            .all(|id| is_not_found(&spool, id))
    });
    assert_eq!(spool.stats().unwrap().total(), 0);
}

#[test]
fn a_chords_members_are_kept_until_its_body_ends_and_a_ttl_more() {
    let clock = manual_clock();
    let spool = spool_with_ttl(&clock);
    let chord = spool.chord((0..4).map(|i| add(i, i)), XSum).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    // The body's type is registered only 10 TTLs later.
    for _ in 0..10 {
        clock.advance(TTL);
        spool.worker().register::<Add>().drain().unwrap();
    }
    let member = chord.members.member(0).unwrap();
    assert_eq!(member.status().unwrap().state, TaskState::Succeeded);
    spool.worker().register::<XSum>().drain().unwrap();
    assert_eq!(chord.body.wait(WAIT).unwrap(), 12);
    clock.advance(TTL - Duration::from_secs(1));
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(member.wait(WAIT).unwrap(), 0);
    clock.advance(Duration::from_secs(2));
    eventually("the chord pruned", || spool.stats().unwrap().total() == 0);
}

/// A workflow that fails ends when its last task is failed by the cascade; one retried by
/// hand has not ended until it ends again.
#[test]
fn a_failed_workflow_ends_with_its_cascade_and_a_retry_opens_it_again() {
    let clock = manual_clock();
    let spool = spool_with_ttl(&clock);
    let last = spool
        .chain(Maybe { n: 1, fail: 1 })
        .then(AddTo { b: 1 })
        .enqueue()
        .unwrap();
    let first = spool.status(last.id()).unwrap().workflow.unwrap();
    spool.worker().register::<Maybe>().drain().unwrap();
    assert_eq!(spool.status(last.id()).unwrap().state, TaskState::Failed);

    // Retried by hand half a TTL later: the workflow is running again.
    clock.advance(TTL / 2);
    spool.retry(first).unwrap();
    clock.advance(TTL);
    spool.worker().register::<AddTo>().drain().unwrap();
    assert!(exists(&spool, first), "the retried task is not final");
    assert!(exists(&spool, last.id()), "its workflow has a task left");
    // It fails again and ends; a TTL later it is pruned.
    spool.worker().register::<Maybe>().drain().unwrap();
    clock.advance(TTL - Duration::from_secs(1));
    spool.worker().register::<AddTo>().drain().unwrap();
    assert!(exists(&spool, last.id()));
    clock.advance(Duration::from_secs(2));
    eventually("the workflow pruned", || {
        spool.stats().unwrap().total() == 0
    });
}
