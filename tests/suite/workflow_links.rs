//! Callbacks (`Spool::enqueue_linked`, Celery's `link` and `link_error`): enqueued in the
//! transaction that ends their task — on success with its output, on any other end with its
//! failure — and never for a retry.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, Options, Revoke, Spool, Task, TaskError, TaskState};

use super::common::*;
use super::workflows::{Maybe, add};

/// Logs what it was given: the linked task's output, or its failure's message.
#[derive(Serialize, Deserialize)]
struct OnDone {
    log: String,
    failure: bool,
}

impl Task for OnDone {
    const NAME: &'static str = "wf.on_done";
    type Output = String;
    fn run(self, ctx: &Context) -> Result<String, TaskError> {
        let seen = if self.failure {
            let f = ctx.input::<taskspool::Failure>()?;
            format!("failed {} after {}: {}", f.id, f.attempts, f.message)
        } else {
            format!("got {}", ctx.input::<i64>()?)
        };
        log_push(&self.log, 1);
        Ok(seen)
    }
}

fn links(log: &str) -> [taskspool::Link; 2] {
    [
        taskspool::Link::on_success(OnDone {
            log: log.to_string(),
            failure: false,
        }),
        taskspool::Link::on_failure(OnDone {
            log: log.to_string(),
            failure: true,
        }),
    ]
}

fn run_links(spool: &Spool) -> taskspool::DrainReport {
    spool
        .worker()
        .register::<Add>()
        .register::<Maybe>()
        .register::<OnDone>()
        .drain()
        .unwrap()
}

#[test]
fn a_success_link_runs_with_the_output_and_the_failure_link_never_exists() {
    let spool = fresh_spool();
    let log = unique("link-ok");
    let task = spool
        .enqueue_linked(add(20, 22), Options::new(), links(&log))
        .unwrap();
    assert_eq!(
        spool.stats().unwrap().total(),
        1,
        "callbacks wait inside the task"
    );
    run_links(&spool);
    assert_eq!(task.wait(WAIT).unwrap(), 42);
    let children = spool.status(task.id()).unwrap().children;
    assert_eq!(children.len(), 1, "one callback, the success one");
    let callback = spool.handle::<OnDone>(children[0]);
    assert_eq!(callback.wait(WAIT).unwrap(), "got 42");
    assert_eq!(logged(&log).len(), 1);
    assert_eq!(spool.stats().unwrap().total(), 2);
}

#[test]
fn a_failure_link_runs_once_with_the_failure_after_the_last_retry() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("link-fail");
    let task = spool
        .enqueue_linked(
            Maybe { n: 7, fail: 7 },
            Options::new().max_retries(0),
            links(&log),
        )
        .unwrap();
    run_links(&spool);
    assert!(matches!(task.wait(WAIT), Err(Error::TaskFailed(_))));
    let children = spool.status(task.id()).unwrap().children;
    assert_eq!(children.len(), 1);
    let seen = spool.handle::<OnDone>(children[0]).wait(WAIT).unwrap();
    assert_eq!(
        seen,
        format!("failed {} after 1: member 7 failed", task.id())
    );

    // A revoked task's failure link runs too; a retry never fires one.
    let log2 = unique("link-revoke");
    let revoked = spool
        .enqueue_linked(
            add(1, 1),
            Options::new().countdown(Duration::from_secs(60)),
            links(&log2),
        )
        .unwrap();
    assert_eq!(spool.revoke(revoked.id()).unwrap(), Revoke::Revoked);
    run_links(&spool);
    assert_eq!(logged(&log2).len(), 1);
    let retrying = spool
        .enqueue_linked(
            Scripted::new(&unique("link-retry"), [Step::Retry, Step::Succeed]),
            Options::new(),
            links(&unique("link-retry-cb")),
        )
        .unwrap();
    spool.worker().register::<Scripted>().drain().unwrap();
    assert_eq!(state_of(&spool, retrying.id()), TaskState::Retrying);
    assert!(spool.status(retrying.id()).unwrap().children.is_empty());
}

#[test]
fn bad_links_are_refused_and_store_nothing() {
    let spool = fresh_spool();
    let bad = taskspool::Link::on_success_with(
        OnDone {
            log: String::new(),
            failure: false,
        },
        Options::new().priority(77),
    );
    assert!(
        spool
            .enqueue_linked(add(1, 1), Options::new(), [bad])
            .is_err()
    );
    assert_eq!(spool.stats().unwrap().total(), 0);
}
