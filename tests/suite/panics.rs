//! Panics: a panicking handler is an attempt error of kind `Panic` with the message; it is
//! retried like any retryable error, and the pool keeps working afterwards.

use taskspool::{AttemptErrorKind, Error, Options, RetryPolicy, TaskState};

use super::common::*;

#[test]
fn panic_is_recorded_retried_and_the_pool_survives() {
    let spool = fresh_spool();
    // One thread: if a panic killed it, nothing after the panicking task could run.
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Scripted>()
        .register::<Add>()
        .start()
        .unwrap();
    let log = unique("panic");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Panic]),
            Options::new()
                .max_retries(2)
                .retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let Err(Error::TaskFailed(failure)) = handle.wait(WAIT) else {
        panic!("expected the panicking task to fail");
    };
    assert_eq!(failure.attempts, 3);
    assert_eq!(failure.errors.len(), 3);
    for (i, e) in failure.errors.iter().enumerate() {
        assert_eq!(e.kind, AttemptErrorKind::Panic);
        assert!(
            e.message.contains(&format!("boom on attempt {}", i + 1)),
            "panic message missing: {:?}",
            e.message
        );
    }
    assert_eq!(logged(&log), vec![1, 2, 3]);

    // The same single thread still runs tasks.
    let after: Vec<_> = (0..10)
        .map(|i| spool.enqueue(Add { a: i, b: i }).unwrap())
        .collect();
    for (i, h) in (0..10).zip(&after) {
        assert_eq!(h.wait(WAIT).unwrap(), 2 * i);
    }
    assert_eq!(worker.busy(), 0);
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_panic_then_success_succeeds_with_the_panic_in_history() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("panic-then-ok");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Panic, Step::Succeed]),
            Options::new().retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let report = spool.worker().register::<Scripted>().drain().unwrap();
    assert_eq!((report.attempts, report.succeeded), (2, 1));
    let status = handle.status().unwrap();
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Panic);
    assert!(status.errors[0].message.contains("boom on attempt 1"));
}
