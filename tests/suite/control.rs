//! Execution control: revoke (before a task runs, or while it runs), snooze, retry and forget
//! of finished tasks, progress. Each change is durable when its call returns, and exactly one
//! final state comes out of a revoke racing an attempt's end.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskspool::{
    AttemptErrorKind, Context, Error, ErrorKind, Options, RetryPolicy, Revoke, Spool, Task,
    TaskError, TaskFilter, TaskId, TaskState,
};

use super::common::*;

/// Enters its gate, then sleeps a minute unless asked to stop; returns 1 if it slept it all.
#[derive(Serialize, Deserialize)]
struct Patient {
    gate: String,
}

impl Task for Patient {
    const NAME: &'static str = "control.patient";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        gate(&self.gate).enter();
        ctx.sleep(Duration::from_secs(60))?;
        Ok(1)
    }
}

/// Enters its gate, waits for it to open, and returns 7 whatever happened meanwhile.
#[derive(Serialize, Deserialize)]
struct Ignorer {
    gate: String,
}

impl Task for Ignorer {
    const NAME: &'static str = "control.ignorer";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        let g = gate(&self.gate);
        g.enter();
        g.pass();
        log_push(&self.gate, u64::from(ctx.is_cancelled()));
        Ok(7)
    }
}

fn worker_for<T: Task>(spool: &Spool) -> taskspool::Worker {
    spool
        .worker()
        .concurrency(1)
        .register::<T>()
        .start()
        .unwrap()
}

#[test]
fn a_waiting_task_revoked_is_revoked_at_once_and_never_runs() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("revoke-waiting");
    let ready = spool.enqueue(Record::to(&log)).unwrap();
    let scheduled = spool
        .enqueue_with(
            Record::to(&log),
            Options::new().countdown(Duration::from_secs(60)),
        )
        .unwrap();
    let retrying = spool
        .enqueue(Scripted::new(&log, [Step::Retry, Step::Succeed]))
        .unwrap();
    spool.worker().register::<Scripted>().drain().unwrap();
    assert_eq!(state_of(&spool, retrying.id()), TaskState::Retrying);

    for id in [ready.id(), scheduled.id(), retrying.id()] {
        assert_eq!(spool.revoke(id).unwrap(), Revoke::Revoked);
        let status = spool.status(id).unwrap();
        assert_eq!(status.state, TaskState::Revoked);
        let last = status.errors.last().unwrap();
        assert_eq!(
            (last.kind, last.message.as_str()),
            (AttemptErrorKind::Revoked, "revoked before it ran")
        );
        assert!(status.finished_at.is_some());
    }
    assert!(matches!(ready.wait(WAIT), Err(Error::TaskRevoked(id)) if id == ready.id()));
    assert_eq!(
        Error::TaskRevoked(ready.id()).kind(),
        ErrorKind::TaskUnsuccessful
    );
    // Nothing runs them, now or when their time comes.
    clock.advance(Duration::from_secs(3600));
    let report = spool
        .worker()
        .register::<Record>()
        .register::<Scripted>()
        .drain()
        .unwrap();
    assert_eq!(report.attempts, 0);
    assert!(
        logged(&log).len() == 1,
        "only the first scripted attempt ran"
    );
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Revoked), 3);
    assert_eq!(stats.count(TaskState::Scheduled), 0);
}

#[test]
fn revoking_a_finished_or_unknown_task_changes_nothing() {
    let spool = fresh_spool();
    let done = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(
        spool.revoke(done.id()).unwrap(),
        Revoke::AlreadyFinal(TaskState::Succeeded)
    );
    assert_eq!(done.wait(WAIT).unwrap(), 3);
    let err = spool.revoke(TaskId::from_u64(999)).unwrap_err();
    assert!(
        matches!(err, Error::NotFound(id) if id.as_u64() == 999),
        "{err:?}"
    );
    // A revoke of an unknown id fails alone: the spool goes on.
    spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let revoked = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
    assert_eq!(spool.revoke(revoked.id()).unwrap(), Revoke::Revoked);
    assert_eq!(
        spool.revoke(revoked.id()).unwrap(),
        Revoke::AlreadyFinal(TaskState::Revoked)
    );
}

/// A running handler sees the revoke, `ctx.sleep` returns early, and the task ends
/// `Revoked`.
#[test]
fn a_running_task_revoked_sees_the_cancel_and_ends_revoked() {
    let spool = fresh_spool();
    let key = unique("revoke-running");
    let worker = worker_for::<Patient>(&spool);
    let h = spool.enqueue(Patient { gate: key.clone() }).unwrap();
    gate(&key).wait_started(1);
    assert_eq!(spool.revoke(h.id()).unwrap(), Revoke::Cancelling);
    assert!(matches!(h.wait(WAIT), Err(Error::TaskRevoked(_))));
    let status = h.status().unwrap();
    assert_eq!((status.state, status.attempts), (TaskState::Revoked, 1));
    let last = status.errors.last().unwrap();
    assert_eq!(last.kind, AttemptErrorKind::Revoked);
    assert!(
        last.message.starts_with(
            "revoked while attempt 1 ran; what it returned (an error: the task was revoked)"
        ),
        "{}",
        last.message
    );
    worker.shutdown(WAIT).unwrap();
}

/// Whatever a revoked attempt returns — here a success — is discarded.
#[test]
fn a_revoked_attempt_that_succeeds_anyway_still_ends_revoked() {
    let spool = fresh_spool();
    let key = unique("revoke-ignored");
    let worker = worker_for::<Ignorer>(&spool);
    let h = spool.enqueue(Ignorer { gate: key.clone() }).unwrap();
    gate(&key).wait_started(1);
    assert_eq!(spool.revoke(h.id()).unwrap(), Revoke::Cancelling);
    // Asking again while it runs says the same and changes nothing.
    assert_eq!(spool.revoke(h.id()).unwrap(), Revoke::Cancelling);
    // The handler saw the cancel (revoke returns once the request is durable, and the flag
    // is set right after), then returned 7 all the same.
    gate(&key).open();
    assert!(matches!(h.wait(WAIT), Err(Error::TaskRevoked(_))));
    assert_eq!(logged(&key), [1]);
    let status = h.status().unwrap();
    assert_eq!(status.state, TaskState::Revoked);
    assert_eq!(status.output, None);
    assert!(
        status.errors[0]
            .message
            .contains("what it returned (a success) was discarded"),
        "{}",
        status.errors[0].message
    );
    worker.shutdown(WAIT).unwrap();
}

/// A running task revoked in a drain: the handler's `ctx.check()` ends the attempt.
#[test]
fn a_revoke_from_inside_the_handler_ends_the_task_revoked() {
    let spool = fresh_spool();
    let h = spool.enqueue(SelfRevoker).unwrap();
    spool.worker().register::<SelfRevoker>().drain().unwrap();
    assert!(matches!(h.wait(WAIT), Err(Error::TaskRevoked(_))));
}

/// Revokes itself through its context, then checks.
#[derive(Serialize, Deserialize)]
struct SelfRevoker;

impl Task for SelfRevoker {
    const NAME: &'static str = "control.self_revoker";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        assert!(!ctx.is_cancelled());
        assert_eq!(ctx.spool()?.revoke(ctx.id())?, Revoke::Cancelling);
        assert!(ctx.is_cancelled(), "the flag is set once revoke returns");
        ctx.check()?;
        unreachable!("check returns an error once revoked")
    }
}

/// Snoozes on its first attempt, for `secs` seconds; succeeds on the next.
#[derive(Serialize, Deserialize)]
struct Snoozer {
    secs: u64,
}

impl Task for Snoozer {
    const NAME: &'static str = "control.snoozer";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            return Err(TaskError::snooze(
                Duration::from_secs(self.secs),
                "upstream not ready",
            ));
        }
        Ok(ctx.attempt())
    }
}

#[test]
fn a_snooze_runs_the_task_again_later_without_using_a_retry() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let h = spool
        .enqueue_with(Snoozer { secs: 30 }, Options::new().max_retries(0))
        .unwrap();
    let drain = spool.worker().register::<Snoozer>();
    drain.drain().unwrap();
    let status = h.status().unwrap();
    assert_eq!(status.state, TaskState::Scheduled);
    assert_eq!(status.due_at, status.errors[0].at + Duration::from_secs(30));
    // No retry was used: with max_retries(0) it may still run once more.
    assert_eq!((status.attempts, status.max_retries), (1, 1));
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Snoozed);
    assert_eq!(
        status.errors[0].message,
        "snoozed for 30s: upstream not ready"
    );
    clock.advance(Duration::from_secs(29));
    assert_eq!(drain.drain().unwrap().attempts, 0, "not before its time");
    clock.advance(Duration::from_secs(1));
    drain.drain().unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), 2);
}

#[test]
fn a_snooze_of_zero_fails_the_attempt_with_a_reason() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let h = spool
        .enqueue_with(Snoozer { secs: 0 }, Options::new().max_retries(0))
        .unwrap();
    spool.worker().register::<Snoozer>().drain().unwrap();
    let Err(Error::TaskFailed(f)) = h.wait(WAIT) else {
        panic!("a zero snooze fails the attempt");
    };
    assert_eq!(f.errors[0].kind, AttemptErrorKind::Error);
    assert!(
        f.message.contains("is not a delay a task can snooze for"),
        "{}",
        f.message
    );
}

#[test]
fn a_failed_task_retried_by_hand_runs_again_with_a_fresh_budget() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("retry-by-hand");
    let h = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry, Step::Retry, Step::Retry, Step::Succeed]),
            Options::new()
                .max_retries(1)
                .retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    let drain = spool.worker().register::<Scripted>();
    drain.drain().unwrap();
    assert!(matches!(h.wait(WAIT), Err(Error::TaskFailed(_))));
    assert_eq!(logged(&log), [1, 2]);

    spool.retry(h.id()).unwrap();
    let status = h.status().unwrap();
    assert_eq!(status.state, TaskState::Ready);
    assert_eq!(status.finished_at, None);
    assert_eq!(status.errors.len(), 2, "the history is kept");
    // One retry again, as it was enqueued with: attempt 3, then attempt 4 succeeds.
    assert_eq!((status.attempts, status.max_retries), (2, 3));
    drain.drain().unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), 4);
    assert_eq!(logged(&log), [1, 2, 3, 4]);
}

#[test]
fn revoked_and_expired_tasks_can_be_retried_and_others_cannot() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let revoked = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    spool.revoke(revoked.id()).unwrap();
    let expired = spool
        .enqueue_with(
            Add { a: 2, b: 2 },
            Options::new().expires(Duration::from_secs(1)),
        )
        .unwrap();
    clock.advance(Duration::from_secs(2));
    eventually("the task expires", || {
        state_of(&spool, expired.id()) == TaskState::Expired
    });
    let ready = spool.enqueue(Add { a: 3, b: 3 }).unwrap();
    for id in [revoked.id(), expired.id()] {
        spool.retry(id).unwrap();
    }
    let err = spool.retry(ready.id()).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WrongState {
                state: TaskState::Ready,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.to_string(),
        format!(
            "task {} is ready; only a failed, expired or revoked task can be retried",
            ready.id()
        )
    );
    assert!(matches!(
        spool.retry(TaskId::from_u64(404)),
        Err(Error::NotFound(_))
    ));
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(revoked.wait(WAIT).unwrap(), 2);
    assert_eq!(
        expired.wait(WAIT).unwrap(),
        4,
        "the passed expiry no longer applies"
    );
    let err = spool.retry(ready.id()).unwrap_err();
    assert!(matches!(
        err,
        Error::WrongState {
            state: TaskState::Succeeded,
            ..
        }
    ));
}

#[test]
fn a_forgotten_task_is_gone_and_an_unfinished_one_cannot_be_forgotten() {
    let spool = fresh_spool();
    let done = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    let waiting = spool
        .enqueue_with(Add { a: 1, b: 2 }, Options::new().queue("later"))
        .unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    spool.forget(done.id()).unwrap();
    assert!(is_not_found(&spool, done.id()));
    assert!(matches!(done.try_get(), Err(Error::NotFound(_))));
    assert_eq!(spool.stats().unwrap().count(TaskState::Succeeded), 0);
    assert!(matches!(spool.forget(done.id()), Err(Error::NotFound(_))));
    let err = spool.forget(waiting.id()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongState {
                state: TaskState::Ready,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("only a finished task"), "{err}");
    assert_eq!(state_of(&spool, waiting.id()), TaskState::Ready);
}

/// Reports progress, waits for its gate, reports again and returns.
#[derive(Serialize, Deserialize)]
struct Stepper {
    gate: String,
}

impl Task for Stepper {
    const NAME: &'static str = "control.stepper";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        ctx.set_progress(&json!({ "done": 1, "of": 3 }))?;
        let too_big = "x".repeat(taskspool::MAX_PROGRESS_BYTES);
        let err = ctx.set_progress(&too_big).unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
        let g = gate(&self.gate);
        g.enter();
        g.pass();
        ctx.set_progress(&json!({ "done": 3, "of": 3 }))?;
        Ok(())
    }
}

#[test]
fn progress_shows_while_the_task_runs_and_is_kept_after() {
    let place = fresh_place();
    let spool = place.open(Spool::builder()).unwrap();
    let key = unique("progress");
    let worker = worker_for::<Stepper>(&spool);
    let h = spool.enqueue(Stepper { gate: key.clone() }).unwrap();
    gate(&key).wait_started(1);
    let running = h.status().unwrap();
    assert_eq!(running.state, TaskState::Running);
    assert_eq!(running.progress, Some(json!({ "done": 1, "of": 3 })));
    gate(&key).open();
    h.wait(WAIT).unwrap();
    assert_eq!(
        h.status().unwrap().progress,
        Some(json!({ "done": 3, "of": 3 }))
    );
    worker.shutdown(WAIT).unwrap();
    drop((worker, h, spool));
    // Kept in the file.
    let spool = place.open(Spool::builder()).unwrap();
    let status = spool.status(TaskId::from_u64(1)).unwrap();
    assert_eq!(status.progress, Some(json!({ "done": 3, "of": 3 })));
}

#[test]
fn bulk_revoke_and_retry_follow_the_filter() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let on = |queue: &str| Options::new().queue(queue).max_retries(0);
    let mail: Vec<_> = (0..3)
        .map(|a| spool.enqueue_with(Add { a, b: 0 }, on("mail")).unwrap())
        .collect();
    let later = spool
        .enqueue_with(
            Add { a: 9, b: 0 },
            on("mail").countdown(Duration::from_secs(60)),
        )
        .unwrap();
    let other = spool.enqueue_with(Add { a: 5, b: 0 }, on("other")).unwrap();
    let log = unique("bulk");
    let failed = spool
        .enqueue_with(Scripted::new(&log, [Step::Fail, Step::Succeed]), on("mail"))
        .unwrap();
    spool
        .worker()
        .queue("mail")
        .register::<Scripted>()
        .drain()
        .unwrap();
    assert!(matches!(failed.wait(WAIT), Err(Error::TaskFailed(_))));

    // Only the ready `test.add` tasks of `mail`: not the scheduled one, not `other`.
    let done = spool
        .revoke_where(
            TaskFilter::new()
                .queue("mail")
                .name("test.add")
                .state(TaskState::Ready),
        )
        .unwrap();
    assert_eq!((done.revoked, done.cancelling), (3, 0));
    for h in &mail {
        assert_eq!(state_of(&spool, h.id()), TaskState::Revoked);
    }
    assert_eq!(state_of(&spool, later.id()), TaskState::Scheduled);
    assert_eq!(state_of(&spool, other.id()), TaskState::Ready);

    // Retry everything retryable on `mail`: the revoked ones and the failed one.
    assert_eq!(
        spool.retry_where(TaskFilter::new().queue("mail")).unwrap(),
        4
    );
    spool
        .worker()
        .queue("mail")
        .register::<Add>()
        .register::<Scripted>()
        .drain()
        .unwrap();
    for (a, h) in (0..3).zip(&mail) {
        assert_eq!(h.wait(WAIT).unwrap(), a);
    }
    assert_eq!(failed.wait(WAIT).unwrap(), 2);
    // Nothing left to do: a second call changes nothing.
    assert_eq!(spool.retry_where(TaskFilter::new()).unwrap(), 0);
    let none = spool
        .revoke_where(TaskFilter::new().name("no.such.task"))
        .unwrap();
    assert_eq!((none.revoked, none.cancelling), (0, 0));
}

/// Ids that are not in this file — never used, another file's, pruned — are `NotFound` for
/// every request, and nothing is written.
#[test]
fn requests_about_ids_not_in_the_file_are_not_found() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(10))
        .open_fresh()
        .unwrap();
    let other = fresh_spool();
    for _ in 0..5 {
        other.enqueue(Add { a: 0, b: 0 }).unwrap();
    }
    let pruned = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    pruned.wait(WAIT).unwrap();
    clock.advance(Duration::from_secs(11));
    eventually("the result is pruned", || is_not_found(&spool, pruned.id()));
    let before = spool.stats().unwrap();
    let from_other = TaskId::from_u64(5);
    for id in [
        TaskId::from_u64(0),
        from_other,
        pruned.id(),
        TaskId::from_u64(u64::MAX),
    ] {
        assert!(matches!(spool.revoke(id), Err(Error::NotFound(found)) if found == id));
        assert!(matches!(spool.retry(id), Err(Error::NotFound(found)) if found == id));
        assert!(matches!(spool.forget(id), Err(Error::NotFound(found)) if found == id));
    }
    assert_eq!(spool.stats().unwrap(), before);
}

#[test]
fn a_snooze_beyond_max_delay_fails_the_attempt_with_a_reason() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let h = spool
        .enqueue_with(Snoozer { secs: u64::MAX }, Options::new().max_retries(0))
        .unwrap();
    spool.worker().register::<Snoozer>().drain().unwrap();
    let Err(Error::TaskFailed(f)) = h.wait(WAIT) else {
        panic!("an absurd snooze fails the attempt");
    };
    assert!(f.message.contains("at most MAX_DELAY"), "{}", f.message);
}
