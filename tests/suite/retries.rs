//! Retries: retryable errors run again up to `max_retries`, then the task ends `Failed` with
//! one error per attempt; backoff delays are honoured (on a manual clock, nothing runs before
//! its time); `retry_after` overrides the backoff; `fail` stops at once; `?` retries.

use std::time::Duration;

use taskspool::{AttemptErrorKind, Error, ErrorKind, Options, RetryPolicy, Spool, TaskState};

use super::common::*;

fn drain(spool: &Spool) -> taskspool::DrainReport {
    spool.worker().register::<Scripted>().drain().unwrap()
}

#[test]
fn retry_runs_max_retries_plus_one_times_then_fails_with_full_history() {
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Scripted>()
        .start()
        .unwrap();
    let log = unique("retry-exhaust");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry]),
            Options::new()
                .max_retries(3)
                .retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let err = handle.wait(WAIT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TaskUnsuccessful);
    let Error::TaskFailed(failure) = err else {
        panic!("expected TaskFailed, got {err:?}");
    };
    assert_eq!(failure.id, handle.id());
    assert_eq!(failure.name, "test.scripted");
    assert_eq!(failure.attempts, 4);
    assert_eq!(failure.errors.len(), 4);
    for (i, e) in failure.errors.iter().enumerate() {
        let attempt = u32::try_from(i).unwrap() + 1;
        assert_eq!(e.attempt, attempt);
        assert_eq!(e.kind, AttemptErrorKind::Error);
        assert_eq!(e.message, format!("try again (attempt {attempt})"));
    }
    assert_eq!(failure.message, "try again (attempt 4)");
    assert_eq!(logged(&log), vec![1, 2, 3, 4]);
    let status = handle.status().unwrap();
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.attempts, 4);
    assert_eq!(status.errors, failure.errors);
    assert!(status.finished_at.is_some());
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_retry_that_then_succeeds_keeps_the_earlier_errors() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("retry-then-ok");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry, Step::Retry, Step::Succeed]),
            Options::new().retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let report = drain(&spool);
    assert_eq!((report.attempts, report.succeeded), (3, 1));
    assert_eq!(handle.try_get().unwrap(), Some(3));
    let status = handle.status().unwrap();
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(status.attempts, 3);
    assert_eq!(status.errors.len(), 2);
}

#[test]
fn backoff_is_not_run_by_drain_until_the_clock_passes_it() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("retry-backoff");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry, Step::Succeed]),
            Options::new().retry_policy(RetryPolicy::fixed(Duration::from_secs(60))),
        )
        .unwrap();
    let t0 = clock.now_ms();
    assert_eq!(drain(&spool).attempts, 1);
    let status = handle.status().unwrap();
    assert_eq!(status.state, TaskState::Retrying);
    assert_eq!(
        status.due_at,
        std::time::UNIX_EPOCH + Duration::from_millis(t0 + 60_000)
    );
    assert_eq!(drain(&spool).attempts, 0);
    clock.advance(Duration::from_secs(59));
    assert_eq!(drain(&spool).attempts, 0);
    assert_eq!(handle.status().unwrap().state, TaskState::Retrying);
    clock.advance(Duration::from_millis(999));
    assert_eq!(drain(&spool).attempts, 0);
    clock.advance(Duration::from_millis(1));
    let report = drain(&spool);
    assert_eq!((report.attempts, report.succeeded), (1, 1));
    assert_eq!(handle.try_get().unwrap(), Some(2));
    assert_eq!(logged(&log), vec![1, 2]);
}

#[test]
fn backoff_with_a_live_worker_waits_for_the_clock() {
    // The same with a running worker: nothing happens until the manual clock moves, then the
    // writer wakes on its own (no drain) and the worker runs the retry.
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("retry-backoff-worker");
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Scripted>()
        .start()
        .unwrap();
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry, Step::Succeed]),
            Options::new().retry_policy(RetryPolicy::fixed(Duration::from_secs(60))),
        )
        .unwrap();
    eventually("first attempt recorded", || {
        handle.status().unwrap().state == TaskState::Retrying
    });
    // Another task runs meanwhile, proving the worker is idle and able, not stuck.
    spool
        .enqueue(Scripted::new(&unique("other"), [Step::Succeed]))
        .unwrap()
        .wait(WAIT)
        .unwrap();
    assert_eq!(logged(&log), vec![1]);
    assert!(matches!(
        handle.wait(Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    clock.advance(Duration::from_secs(61));
    assert_eq!(handle.wait(WAIT).unwrap(), 2);
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn retry_after_overrides_the_backoff() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("retry-after");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::RetryAfterSecs(30), Step::Succeed]),
            // The policy alone would wait an hour.
            Options::new().retry_policy(RetryPolicy::fixed(Duration::from_secs(3600))),
        )
        .unwrap();
    assert_eq!(drain(&spool).attempts, 1);
    let status = handle.status().unwrap();
    assert_eq!(status.state, TaskState::Retrying);
    assert_eq!(status.errors[0].message, "come back in 30s");
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Error);
    clock.advance(Duration::from_secs(29));
    assert_eq!(drain(&spool).attempts, 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(drain(&spool).succeeded, 1);
    assert_eq!(handle.try_get().unwrap(), Some(2));
}

#[test]
fn retry_after_counts_toward_max_retries() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("retry-after-max");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::RetryAfterSecs(1)]),
            Options::new().max_retries(1),
        )
        .unwrap();
    assert_eq!(drain(&spool).attempts, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(drain(&spool).attempts, 1);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(drain(&spool).attempts, 0);
    let Err(Error::TaskFailed(f)) = handle.try_get() else {
        panic!("expected failure");
    };
    assert_eq!(f.attempts, 2);
}

#[test]
fn fail_stops_at_once_whatever_retries_remain() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("fail");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Fail, Step::Succeed]),
            Options::new()
                .max_retries(5)
                .retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let report = drain(&spool);
    assert_eq!((report.attempts, report.succeeded), (1, 0));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(drain(&spool).attempts, 0);
    let Err(Error::TaskFailed(f)) = handle.try_get() else {
        panic!("expected failure");
    };
    assert_eq!(f.attempts, 1);
    assert_eq!(f.errors.len(), 1);
    assert_eq!(f.errors[0].kind, AttemptErrorKind::Fatal);
    assert_eq!(f.message, "gave up on attempt 1");
    assert_eq!(logged(&log), vec![1]);
}

#[test]
fn question_mark_on_a_std_error_retries() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("std-error");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::ParseError, Step::Succeed]),
            Options::new().retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let report = drain(&spool);
    assert_eq!((report.attempts, report.succeeded), (2, 1));
    let status = handle.status().unwrap();
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Error);
    assert_eq!(status.errors[0].message, "invalid digit found in string");
    assert_eq!(handle.try_get().unwrap(), Some(2));
}

#[test]
fn zero_retries_means_one_attempt() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("zero-retries");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry]),
            Options::new()
                .max_retries(0)
                .retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    assert_eq!(drain(&spool).attempts, 1);
    assert!(matches!(handle.try_get(), Err(Error::TaskFailed(f)) if f.attempts == 1));
}

#[test]
fn default_policy_retries_three_times_with_bounded_exponential_backoff() {
    // Defaults: 3 retries; exponential with full jitter, 1 s base, so retry n is due within
    // 2^(n-1) s of the failure. Advancing by the ceiling each time must be enough.
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("default-policy");
    let handle = spool.enqueue(Scripted::new(&log, [Step::Retry])).unwrap();
    let mut attempts = 0;
    for ceiling_s in [0u64, 1, 2, 4] {
        clock.advance(Duration::from_secs(ceiling_s));
        attempts += drain(&spool).attempts;
    }
    assert_eq!(attempts, 4);
    assert!(matches!(handle.try_get(), Err(Error::TaskFailed(f)) if f.attempts == 4));
}

#[test]
fn with_the_system_clock_the_writer_wakes_itself_for_a_retry() {
    // No manual clock: the writer must sleep until the retry is due and wake on its own.
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Scripted>()
        .start()
        .unwrap();
    let log = unique("retry-system-clock");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry, Step::Succeed]),
            Options::new().retry_policy(RetryPolicy::fixed(Duration::from_millis(80))),
        )
        .unwrap();
    assert_eq!(handle.wait(WAIT).unwrap(), 2);
    let status = handle.status().unwrap();
    let failed_at = status.errors[0].at;
    let restarted = status.started_at.unwrap();
    // The backoff was honoured (millisecond timestamps: allow 1 ms of rounding).
    assert!(
        restarted + Duration::from_millis(1) >= failed_at + Duration::from_millis(80),
        "retry started {:?} after the failure",
        restarted.duration_since(failed_at)
    );
    worker.shutdown(WAIT).unwrap();
}
