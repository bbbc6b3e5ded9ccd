//! Results TTL: finished tasks are deleted by the library after the TTL — by the writer on
//! its own when the clock passes it — and kept forever when asked.

use std::time::Duration;

use taskspool::{Error, Options, RetryPolicy, Spool, TaskState};

use super::common::*;

#[test]
fn finished_task_is_pruned_after_the_ttl_by_the_writer_itself() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(60))
        .open_fresh()
        .unwrap();
    let ok = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    let failed = spool
        .enqueue_with(
            Scripted::new(&unique("ttl-fail"), [Step::Fail]),
            Options::new(),
        )
        .unwrap();
    spool
        .worker()
        .register::<Add>()
        .register::<Scripted>()
        .drain()
        .unwrap();
    assert_eq!(ok.try_get().unwrap(), Some(3));
    assert!(matches!(failed.try_get(), Err(Error::TaskFailed(_))));

    // Just before the TTL: still there, even after the writer has run a group.
    clock.advance(Duration::from_secs(59));
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(ok.status().unwrap().state, TaskState::Succeeded);
    assert_eq!(failed.status().unwrap().state, TaskState::Failed);

    // Past the TTL: the clock's wake-up alone makes the writer prune (no drain, no enqueue).
    clock.advance(Duration::from_secs(2));
    eventually("both tasks pruned", || {
        is_not_found(&spool, ok.id()) && is_not_found(&spool, failed.id())
    });
    assert!(matches!(ok.try_get(), Err(Error::NotFound(_))));
    assert!(matches!(ok.wait(WAIT), Err(Error::NotFound(_))));
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Succeeded), 0);
    assert_eq!(stats.count(TaskState::Failed), 0);
}

#[test]
fn pruning_counts_from_when_the_task_finished() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(60))
        .open_fresh()
        .unwrap();
    let early = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    clock.advance(Duration::from_secs(40));
    let late = spool.enqueue(Add { a: 0, b: 1 }).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    clock.advance(Duration::from_secs(21)); // early: 61 s old; late: 21 s old.
    // A drain runs a writer group, which prunes what is due before it replies.
    spool.worker().register::<Add>().drain().unwrap();
    assert!(is_not_found(&spool, early.id()));
    assert_eq!(late.try_get().unwrap(), Some(1));
    clock.advance(Duration::from_secs(40));
    spool.worker().register::<Add>().drain().unwrap();
    assert!(is_not_found(&spool, late.id()));
}

#[test]
fn unfinished_tasks_are_never_pruned() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(1))
        .open_fresh()
        .unwrap();
    let waiting = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let retrying = spool
        .enqueue_with(
            Scripted::new(&unique("ttl-retrying"), [Step::Retry]),
            Options::new().retry_policy(RetryPolicy::fixed(Duration::from_secs(3600 * 24 * 7))),
        )
        .unwrap();
    spool.worker().register::<Scripted>().drain().unwrap();
    clock.advance(Duration::from_secs(3600 * 24));
    spool.worker().register::<Scripted>().drain().unwrap();
    assert_eq!(waiting.status().unwrap().state, TaskState::Ready);
    assert_eq!(retrying.status().unwrap().state, TaskState::Retrying);
}

#[test]
fn keep_results_forever_keeps_them() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .keep_results_forever()
        .open_fresh()
        .unwrap();
    let handle = spool.enqueue(Add { a: 5, b: 5 }).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(handle.try_get().unwrap(), Some(10));
    assert_eq!(handle.status().unwrap().state, TaskState::Succeeded);
}

#[test]
fn default_ttl_is_one_day() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let handle = spool.enqueue(Add { a: 5, b: 5 }).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    clock.advance(taskspool::DEFAULT_RESULT_TTL - Duration::from_secs(1));
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(handle.try_get().unwrap(), Some(10));
    clock.advance(Duration::from_secs(1));
    spool.worker().register::<Add>().drain().unwrap();
    assert!(is_not_found(&spool, handle.id()));
}

#[test]
fn with_the_system_clock_the_writer_prunes_on_its_own() {
    let spool = Spool::builder()
        .result_ttl(Duration::from_millis(100))
        .open_fresh()
        .unwrap();
    let worker = spool.worker().register::<Add>().start().unwrap();
    let handle = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    assert_eq!(handle.wait(WAIT).unwrap(), 2);
    worker.shutdown(WAIT).unwrap();
    // Nothing else happens in this spool: only the writer's own timer can prune it.
    eventually("pruned by the writer's timer", || {
        is_not_found(&spool, handle.id())
    });
}

#[test]
fn results_that_expired_while_the_file_was_closed_are_pruned_at_open() {
    let place = fresh_place();
    let clock = manual_clock();
    let builder = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(60));
    let id = {
        let spool = place.open(builder.clone()).unwrap();
        let h = spool.enqueue(Add { a: 2, b: 2 }).unwrap();
        spool.worker().register::<Add>().drain().unwrap();
        assert_eq!(h.try_get().unwrap(), Some(4));
        h.id()
    };
    clock.advance(Duration::from_secs(61));
    let spool = place.open(builder).unwrap();
    // The writer's first group runs at open, without any command or clock movement.
    eventually("pruned after reopen", || is_not_found(&spool, id));
}
