//! Follow-ups from a handler (`Context::enqueue`): stored in the same transaction as the
//! attempt's success, and only with it — a failed, retried, panicking or revoked attempt
//! enqueues nothing, and a retried handler never enqueues twice.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, Options, Revoke, Spool, Task, TaskError, TaskState};

use super::common::*;

/// Logs its parent to its log.
#[derive(Serialize, Deserialize)]
struct Child {
    log: String,
    parent: u64,
}

impl Task for Child {
    const NAME: &'static str = "follow.child";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        log_push(&self.log, self.parent);
        Ok(())
    }
}

/// What a `Parent` attempt does after enqueueing its child.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Then {
    Succeed,
    Retry,
    Fail,
    Panic,
    /// Waits at its gate (named by the log), then succeeds.
    Wait,
}

/// Enqueues a `Child` as a follow-up, then does `script[attempt - 1]`.
#[derive(Serialize, Deserialize)]
struct Parent {
    log: String,
    script: Vec<Then>,
}

impl Task for Parent {
    const NAME: &'static str = "follow.parent";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        ctx.enqueue(Child {
            log: self.log.clone(),
            parent: ctx.id().as_u64(),
        })?;
        let step = self.script[(ctx.attempt() as usize - 1).min(self.script.len() - 1)];
        match step {
            Then::Succeed => Ok(ctx.attempt()),
            Then::Retry => Err(TaskError::retry("again")),
            Then::Fail => Err(TaskError::fail("no")),
            Then::Panic => panic!("after enqueueing"),
            Then::Wait => {
                let g = gate(&self.log);
                g.enter();
                g.pass();
                ctx.check()?;
                Ok(ctx.attempt())
            }
        }
    }
}

fn parent(log: &str, script: impl Into<Vec<Then>>) -> Parent {
    Parent {
        log: log.to_string(),
        script: script.into(),
    }
}

fn children(spool: &Spool) -> usize {
    spool
        .worker()
        .register::<Child>()
        .drain()
        .unwrap()
        .succeeded
}

#[test]
fn a_follow_up_exists_only_once_the_attempt_succeeded() {
    let spool = fresh_spool();
    let log = unique("follow-wait");
    let p = spool.enqueue(parent(&log, [Then::Wait])).unwrap();
    let w = spool
        .worker()
        .concurrency(1)
        .register::<Parent>()
        .start()
        .unwrap();
    gate(&log).wait_started(1);
    // The handler has enqueued its child and waits: nothing is stored yet.
    assert_eq!(spool.stats().unwrap().total(), 1);
    gate(&log).open();
    assert_eq!(p.wait(WAIT).unwrap(), 1);
    assert_eq!(
        spool.stats().unwrap().total(),
        2,
        "the child came with the success"
    );
    w.shutdown(WAIT).unwrap();
    assert_eq!(children(&spool), 1);
    assert_eq!(logged(&log), vec![p.id().as_u64()]);
}

#[test]
fn failed_retried_and_panicking_attempts_enqueue_nothing() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("follow-retry");
    let retried = spool
        .enqueue_with(
            parent(&log, [Then::Retry, Then::Panic, Then::Succeed]),
            Options::new()
                .max_retries(3)
                .retry_policy(taskspool::RetryPolicy::fixed(Duration::from_secs(1))),
        )
        .unwrap();
    let failed = spool.enqueue(parent(&log, [Then::Fail])).unwrap();
    let drain = || spool.worker().register::<Parent>().drain().unwrap();
    for _ in 0..3 {
        drain();
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(retried.wait(WAIT).unwrap(), 3);
    assert_eq!(state_of(&spool, failed.id()), TaskState::Failed);
    // Three attempts of one, one of the other: one child, from the success.
    assert_eq!(children(&spool), 1);
    assert_eq!(logged(&log), vec![retried.id().as_u64()]);
}

#[test]
fn a_task_revoked_while_it_runs_enqueues_nothing() {
    let spool = fresh_spool();
    let log = unique("follow-revoke");
    let p = spool.enqueue(parent(&log, [Then::Wait])).unwrap();
    let w = spool
        .worker()
        .concurrency(1)
        .register::<Parent>()
        .start()
        .unwrap();
    gate(&log).wait_started(1);
    assert_eq!(spool.revoke(p.id()).unwrap(), Revoke::Cancelling);
    gate(&log).open();
    assert!(matches!(p.wait(WAIT), Err(Error::TaskRevoked(_))));
    w.shutdown(WAIT).unwrap();
    assert_eq!(spool.stats().unwrap().total(), 1);
    assert_eq!(children(&spool), 0);
}

/// Kept by a handler past its return.
static KEPT: Mutex<Option<Context>> = Mutex::new(None);

#[derive(Serialize, Deserialize)]
struct Keeper;

impl Task for Keeper {
    const NAME: &'static str = "follow.keeper";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        *KEPT.lock().unwrap() = Some(ctx.clone());
        Ok(())
    }
}

/// Enqueues a follow-up with a bad option: the call's error, which fails the attempt.
#[derive(Serialize, Deserialize)]
struct BadFollowUp;

impl Task for BadFollowUp {
    const NAME: &'static str = "follow.bad";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        ctx.enqueue_with(Add { a: 1, b: 1 }, Options::new().priority(42))?;
        Ok(())
    }
}

#[test]
fn bad_follow_ups_and_late_ones_are_errors_and_enqueue_nothing() {
    let spool = fresh_spool();
    spool.enqueue(Keeper).unwrap();
    spool.worker().register::<Keeper>().drain().unwrap();
    let kept = KEPT.lock().unwrap().take().unwrap();
    let err = kept.enqueue(Add { a: 1, b: 2 }).unwrap_err();
    assert!(matches!(err, Error::AttemptEnded(_)), "{err}");
    assert!(err.to_string().contains("ctx.spool()"), "{err}");

    let bad = spool
        .enqueue_with(BadFollowUp, Options::new().max_retries(0))
        .unwrap();
    spool.worker().register::<BadFollowUp>().drain().unwrap();
    let err = match bad.wait(WAIT) {
        Err(Error::TaskFailed(f)) => f.message,
        other => panic!("{other:?}"),
    };
    assert!(err.contains("priority 42"), "{err}");
    assert_eq!(spool.stats().unwrap().total(), 2, "no follow-up was stored");
}

/// A follow-up with a unique key is a duplicate like any enqueue: two parents, one child.
#[derive(Serialize, Deserialize)]
struct UniqueParent {
    log: String,
}

impl Task for UniqueParent {
    const NAME: &'static str = "follow.unique_parent";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        let child = Child {
            log: self.log,
            parent: ctx.id().as_u64(),
        };
        ctx.enqueue_with(child, Options::new().unique("digest"))?;
        Ok(())
    }
}

#[test]
fn follow_ups_honour_unique_keys() {
    let spool = fresh_spool();
    let log = unique("follow-unique");
    for _ in 0..2 {
        spool.enqueue(UniqueParent { log: log.clone() }).unwrap();
    }
    spool.worker().register::<UniqueParent>().drain().unwrap();
    assert_eq!(children(&spool), 1);
}
