//! Time limits, on a manual clock (nothing here waits for real time to pass): the soft limit
//! asks the handler to stop, the hard limit ends the attempt whatever the handler does — its
//! thread is replaced, and what it returns later is dropped — and a revoke, a time limit and
//! a late completion racing each other end in exactly one final state.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{
    AttemptErrorKind, Context, Error, ErrorKind, ManualClock, Options, RetryPolicy, Revoke, Spool,
    Task, TaskError, TaskHandle, TaskState, Worker,
};

use super::common::*;

/// Enters its gate, then sleeps a minute unless asked to stop (`ctx.sleep` returns early).
/// Logs the deadline it was told, in ms since the epoch (0 without one).
#[derive(Serialize, Deserialize)]
struct Careful {
    gate: String,
}

impl Task for Careful {
    const NAME: &'static str = "limits.careful";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        let deadline = ctx.deadline().map_or(0, |d| {
            d.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
        });
        log_push(&self.gate, deadline);
        gate(&self.gate).enter();
        ctx.sleep(Duration::from_secs(60))?;
        Ok(())
    }
}

/// Enters its gate and waits for it to open, ignoring every stop; logs and returns its
/// attempt number.
#[derive(Serialize, Deserialize)]
struct Stuck {
    gate: String,
}

impl Task for Stuck {
    const NAME: &'static str = "limits.stuck";
    type Output = u32;
    fn run(self, ctx: &Context) -> Result<u32, TaskError> {
        let g = gate(&self.gate);
        g.enter();
        g.pass();
        log_push(&self.gate, u64::from(ctx.attempt()));
        Ok(ctx.attempt())
    }
}

fn pool<T: Task>(spool: &Spool, concurrency: usize) -> Worker {
    spool
        .worker()
        .concurrency(concurrency)
        .register::<T>()
        .start()
        .unwrap()
}

/// A `Stuck` task with a hard limit of 5 s, inside its handler on a one-thread pool of a
/// spool on a manual clock.
struct Hung {
    clock: ManualClock,
    spool: Spool,
    key: String,
    worker: Worker,
    h: TaskHandle<u32>,
}

fn hung(name: &str) -> Hung {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique(name);
    let worker = pool::<Stuck>(&spool, 1);
    let h = spool
        .enqueue_with(
            Stuck { gate: key.clone() },
            later().time_limit(Duration::from_secs(5)),
        )
        .unwrap();
    gate(&key).wait_started(1);
    Hung {
        clock,
        spool,
        key,
        worker,
        h,
    }
}

/// Moves the clock to the hard limit, and waits for the attempt to be ended (retrying).
fn past_the_hard_limit(clock: &ManualClock, spool: &Spool, h: &TaskHandle<u32>) {
    clock.advance(Duration::from_secs(5));
    eventually("the hard limit ends the attempt", || {
        state_of(spool, h.id()) == TaskState::Retrying
    });
}

fn later() -> Options {
    // Retries wait a minute, so a retried attempt never starts during a test's checks.
    Options::new().retry_policy(RetryPolicy::fixed(Duration::from_secs(60)))
}

#[test]
fn the_soft_limit_asks_the_handler_to_stop_and_its_error_is_a_time_limit() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("soft");
    let worker = pool::<Careful>(&spool, 1);
    let h = spool
        .enqueue_with(
            Careful { gate: key.clone() },
            later()
                .soft_time_limit(Duration::from_secs(10))
                .time_limit(Duration::from_secs(20)),
        )
        .unwrap();
    gate(&key).wait_started(1);
    let start = clock.now_ms();
    assert_eq!(
        logged(&key),
        [start + 20_000],
        "the deadline is the hard limit's"
    );
    clock.advance(Duration::from_millis(9_999));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(state_of(&spool, h.id()), TaskState::Running);
    clock.advance(Duration::from_millis(1));
    eventually("the attempt stops and is retried", || {
        state_of(&spool, h.id()) == TaskState::Retrying
    });
    let status = h.status().unwrap();
    assert_eq!(status.errors[0].kind, AttemptErrorKind::TimeLimit);
    assert!(
        status.errors[0].message.contains("soft time limit passed"),
        "{}",
        status.errors[0].message
    );
    assert_eq!(spool.stats().unwrap().pools[0].abandoned, 0);
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn the_hard_limit_ends_the_attempt_replaces_the_thread_and_drops_the_late_outcome() {
    let Hung {
        clock,
        spool,
        key,
        worker,
        h,
    } = hung("hard");
    past_the_hard_limit(&clock, &spool, &h);
    let status = h.status().unwrap();
    assert_eq!(status.errors[0].kind, AttemptErrorKind::TimeLimit);
    assert!(
        status.errors[0]
            .message
            .starts_with("the hard time limit of 5s passed"),
        "{}",
        status.errors[0].message
    );
    let pools = spool.stats().unwrap().pools;
    assert_eq!((pools[0].threads, pools[0].abandoned), (1, 1));
    // The replacement serves the pool while the abandoned handler hangs.
    let other = unique("hard-other");
    gate(&other).open();
    let next = spool.enqueue(Stuck { gate: other }).unwrap();
    assert_eq!(next.wait(WAIT).unwrap(), 1);
    // The hung handler returns: its outcome (attempt 1 succeeded) is dropped.
    gate(&key).open();
    eventually("the hung thread exits", || {
        spool.stats().unwrap().pools[0].abandoned == 0
    });
    assert_eq!(state_of(&spool, h.id()), TaskState::Retrying);
    // The retry runs, as attempt 2.
    clock.advance(Duration::from_secs(60));
    assert_eq!(h.wait(WAIT).unwrap(), 2);
    worker.shutdown(WAIT).unwrap();
}

/// At most as many hung threads as the concurrency are replaced; past that the pool runs
/// short, and a hung thread whose handler returns takes its place again.
#[test]
fn hung_threads_are_replaced_up_to_the_concurrency() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let (a, b) = (unique("cap-a"), unique("cap-b"));
    let worker = pool::<Stuck>(&spool, 1);
    let opts = || later().time_limit(Duration::from_secs(5));
    let first = spool
        .enqueue_with(Stuck { gate: a.clone() }, opts())
        .unwrap();
    gate(&a).wait_started(1);
    clock.advance(Duration::from_secs(5));
    eventually("the first is abandoned", || {
        state_of(&spool, first.id()) == TaskState::Retrying
    });
    let second = spool
        .enqueue_with(Stuck { gate: b.clone() }, opts())
        .unwrap();
    gate(&b).wait_started(1);
    clock.advance(Duration::from_secs(5));
    eventually("the second is abandoned", || {
        state_of(&spool, second.id()) == TaskState::Retrying
    });
    let pools = spool.stats().unwrap().pools;
    assert_eq!((pools[0].threads, pools[0].abandoned), (0, 2));
    gate(&a).open();
    eventually("a hung thread takes the missing place", || {
        let p = &spool.stats().unwrap().pools[0];
        (p.threads, p.abandoned) == (1, 1)
    });
    let third = unique("cap-c");
    gate(&third).open();
    assert_eq!(
        spool
            .enqueue(Stuck { gate: third })
            .unwrap()
            .wait(WAIT)
            .unwrap(),
        1
    );
    gate(&b).open();
    worker.shutdown(WAIT).unwrap();
}

/// A revoke, the hard limit and the handler's late return race for one running attempt:
/// the task ends `Revoked`, once.
#[test]
fn a_revoke_then_the_hard_limit_then_a_late_return_end_the_task_revoked() {
    let Hung {
        clock,
        spool,
        key,
        worker,
        h,
    } = hung("race");
    assert_eq!(spool.revoke(h.id()).unwrap(), Revoke::Cancelling);
    clock.advance(Duration::from_secs(5));
    assert!(matches!(h.wait(WAIT), Err(Error::TaskRevoked(_))));
    gate(&key).open();
    eventually("the hung thread exits", || {
        spool.stats().unwrap().pools[0].abandoned == 0
    });
    let status = h.status().unwrap();
    assert_eq!((status.state, status.attempts), (TaskState::Revoked, 1));
    assert_eq!(status.errors.len(), 1, "{:?}", status.errors);
    assert!(
        status.errors[0]
            .message
            .contains("what it returned (a time limit"),
        "{}",
        status.errors[0].message
    );
    worker.shutdown(WAIT).unwrap();
}

/// The hard limit first, then a revoke: the task was waiting for its retry, so the revoke
/// ends it at once; the late return changes nothing.
#[test]
fn the_hard_limit_then_a_revoke_then_a_late_return_end_the_task_revoked() {
    let Hung {
        clock,
        spool,
        key,
        worker,
        h,
    } = hung("race-2");
    past_the_hard_limit(&clock, &spool, &h);
    assert_eq!(spool.revoke(h.id()).unwrap(), Revoke::Revoked);
    gate(&key).open();
    eventually("the hung thread exits", || {
        spool.stats().unwrap().pools[0].abandoned == 0
    });
    let status = h.status().unwrap();
    assert_eq!(status.state, TaskState::Revoked);
    let kinds: Vec<_> = status.errors.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [AttemptErrorKind::TimeLimit, AttemptErrorKind::Revoked]
    );
    worker.shutdown(WAIT).unwrap();
}

/// The handler returns exactly as its hard limit passes: one of the two ends the attempt,
/// never both (the task is `Succeeded` or `Retrying`, with one outcome recorded).
#[test]
fn a_return_at_the_hard_limit_is_either_the_outcome_or_dropped_never_both() {
    for round in 0..20 {
        let Hung {
            clock,
            spool,
            key,
            worker,
            h,
        } = hung("edge");
        let g = gate(&key);
        let opener = std::thread::spawn(move || g.open());
        clock.advance(Duration::from_secs(5));
        opener.join().unwrap();
        eventually("the attempt ends", || {
            matches!(
                state_of(&spool, h.id()),
                TaskState::Succeeded | TaskState::Retrying
            )
        });
        let status = h.status().unwrap();
        match status.state {
            TaskState::Succeeded => assert!(status.errors.is_empty(), "round {round}"),
            _ => assert_eq!(status.errors.len(), 1, "round {round}"),
        }
        worker.shutdown(WAIT).unwrap();
    }
}

#[test]
fn the_spools_default_limits_apply_to_tasks_without_their_own() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .time_limit(Duration::from_secs(30))
        .open_fresh()
        .unwrap();
    let key = unique("default-limit");
    let worker = pool::<Stuck>(&spool, 1);
    let h = spool
        .enqueue_with(Stuck { gate: key.clone() }, later())
        .unwrap();
    gate(&key).wait_started(1);
    clock.advance(Duration::from_secs(30));
    eventually("the default limit ends it", || {
        state_of(&spool, h.id()) == TaskState::Retrying
    });
    gate(&key).open();
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn invalid_limits_are_refused_before_anything_is_written() {
    let spool = fresh_spool();
    let bad = [
        (
            Options::new().time_limit(Duration::ZERO),
            "would stop every attempt at once",
        ),
        (
            Options::new().soft_time_limit(Duration::from_micros(10)),
            "would stop every attempt at once",
        ),
        (
            Options::new()
                .time_limit(Duration::from_secs(5))
                .soft_time_limit(Duration::from_secs(5)),
            "must be shorter than the time_limit",
        ),
        (
            Options::new().time_limit(Duration::MAX),
            "longest accepted delay",
        ),
    ];
    for (opts, says) in bad {
        let err = spool
            .enqueue_with(Stuck { gate: "x".into() }, opts)
            .unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains(says), "{says:?} not in {err}");
    }
    assert_eq!(spool.stats().unwrap().total(), 0);
    let err = Spool::builder()
        .soft_time_limit(Duration::from_secs(9))
        .time_limit(Duration::from_secs(3))
        .open_fresh()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
}

/// Shutdown waits for running attempts, not for handlers a hard limit already ended: a hung
/// handler does not hold it up.
#[test]
fn shutdown_does_not_wait_for_a_handler_its_hard_limit_abandoned() {
    let Hung {
        clock,
        spool,
        key,
        worker,
        h,
    } = hung("hung-shutdown");
    past_the_hard_limit(&clock, &spool, &h);
    // The handler still hangs; the shutdown returns without it.
    worker.shutdown(Duration::from_secs(5)).unwrap();
    assert!(logged(&key).is_empty(), "the hung handler is still inside");
    gate(&key).open();
    eventually("the hung handler returns", || logged(&key) == [1]);
    // What it returned was dropped.
    assert_eq!(state_of(&spool, h.id()), TaskState::Retrying);
}
