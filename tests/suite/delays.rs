//! Countdown, ETA and expiry (issue #3): delayed tasks wait in the `scheduled` index, the
//! writer wakes when the (manual) clock reaches their due time, and expiry ends a task that
//! has not started — with no worker involved and no test sleeping for time to pass.

use std::time::{Duration, SystemTime};

use taskspool::{AttemptErrorKind, Error, Options, Spool, TaskState};

use super::common::*;

#[test]
fn countdowns_run_in_due_order_only_when_due() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("countdown");
    let late = spool
        .enqueue_with(
            Record::to(&key),
            Options::new().countdown(Duration::from_secs(30)),
        )
        .unwrap();
    let soon = spool
        .enqueue_with(
            Record::to(&key),
            Options::new().countdown(Duration::from_secs(10)),
        )
        .unwrap();
    let now = spool.enqueue(Record::to(&key)).unwrap();
    assert_eq!(state_of(&spool, late.id()), TaskState::Scheduled);
    assert_eq!(state_of(&spool, soon.id()), TaskState::Scheduled);

    let drain = || spool.worker().register::<Record>().drain().unwrap();
    assert_eq!(drain().attempts, 1);
    assert_eq!(logged(&key), vec![now.id().as_u64()]);

    clock.advance(Duration::from_secs(9));
    assert_eq!(
        drain().attempts,
        0,
        "nothing is due 1 s before the countdown"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(drain().attempts, 1);
    clock.advance(Duration::from_secs(25));
    assert_eq!(drain().attempts, 1);
    assert_eq!(
        logged(&key),
        vec![now.id().as_u64(), soon.id().as_u64(), late.id().as_u64()]
    );
    let status = spool.status(late.id()).unwrap();
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(
        status.due_at,
        SystemTime::UNIX_EPOCH + Duration::from_millis(clock.now_ms() - 35_000 + 30_000)
    );
}

#[test]
fn eta_in_the_past_is_ready_at_once() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("eta-past");
    let past = SystemTime::UNIX_EPOCH + Duration::from_millis(clock.now_ms() - 3_600_000);
    let handle = spool
        .enqueue_with(Record::to(&key), Options::new().eta(past))
        .unwrap();
    assert_eq!(state_of(&spool, handle.id()), TaskState::Ready);
    let future = SystemTime::UNIX_EPOCH + Duration::from_millis(clock.now_ms() + 60_000);
    let later = spool
        .enqueue_with(Record::to(&key), Options::new().eta(future))
        .unwrap();
    assert_eq!(state_of(&spool, later.id()), TaskState::Scheduled);
    spool.worker().register::<Record>().drain().unwrap();
    assert_eq!(logged(&key), vec![handle.id().as_u64()]);
}

#[test]
fn a_running_worker_wakes_when_the_clock_reaches_the_due_time() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Add>()
        .start()
        .unwrap();
    let handle = spool
        .enqueue_with(
            Add { a: 1, b: 2 },
            Options::new().countdown(Duration::from_secs(3600)),
        )
        .unwrap();
    assert!(matches!(
        handle.wait(Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    clock.advance(Duration::from_secs(3600));
    assert_eq!(handle.wait(WAIT).unwrap(), 3);
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn expiry_ends_an_unstarted_task_without_any_worker() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let key = unique("expiry");
    let doomed = spool
        .enqueue_with(
            Record::to(&key),
            Options::new().expires(Duration::from_secs(10)),
        )
        .unwrap();
    let delayed = spool
        .enqueue_with(
            Record::to(&key),
            Options::new()
                .countdown(Duration::from_secs(5))
                .expires(Duration::from_secs(10)),
        )
        .unwrap();
    clock.advance(Duration::from_secs(10));
    // No worker and no drain: the writer itself expires them when the clock passes.
    eventually("both tasks expire", || {
        state_of(&spool, doomed.id()) == TaskState::Expired
            && state_of(&spool, delayed.id()) == TaskState::Expired
    });
    let status = spool.status(doomed.id()).unwrap();
    assert_eq!(status.errors.len(), 1);
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Expired);
    assert!(status.errors[0].message.contains("expired"));
    assert!(matches!(doomed.wait(WAIT), Err(Error::TaskExpired(_))));
    assert_eq!(
        spool
            .worker()
            .register::<Record>()
            .drain()
            .unwrap()
            .attempts,
        0
    );
    assert!(logged(&key).is_empty(), "an expired task never runs");
}

#[test]
fn expiry_in_the_past_is_refused_and_nothing_is_written() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let past = SystemTime::UNIX_EPOCH + Duration::from_millis(clock.now_ms() - 1);
    let err = spool
        .enqueue_with(Add { a: 1, b: 1 }, Options::new().expires(past))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert_eq!(spool.stats().unwrap().queues.len(), 0);
}

#[test]
fn delayed_tasks_survive_reopen_and_fire_after_it() {
    let place = fresh_place();
    let clock = manual_clock();
    let open = || {
        place
            .open(Spool::builder().manual_clock(clock.clone()))
            .unwrap()
    };
    let key = unique("reopen-delay");
    let id = {
        let spool = open();
        spool
            .enqueue_with(
                Record::to(&key),
                Options::new().countdown(Duration::from_secs(60)),
            )
            .unwrap()
            .id()
    };
    clock.advance(Duration::from_secs(120));
    let spool = open();
    spool.worker().register::<Record>().drain().unwrap();
    assert_eq!(logged(&key), vec![id.as_u64()]);
}
