//! Lifecycle: enqueue → a worker runs it → `wait` returns the output; `status` tells the
//! truth about state, times and attempts; unknown ids are `NotFound`, never pending.

use std::time::{Duration, SystemTime};

use taskspool::{Error, ErrorKind, Spool, TaskId, TaskState};

use super::common::*;

#[test]
fn enqueue_run_wait_returns_the_output() {
    let spool = Spool::temporary().unwrap();
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Add>()
        .start()
        .unwrap();
    let before = SystemTime::now();
    let handle = spool.enqueue(Add { a: 40, b: 2 }).unwrap();
    assert_eq!(handle.wait(WAIT).unwrap(), 42);
    // A finished task's output stays readable without waiting.
    assert_eq!(handle.try_get().unwrap(), Some(42));

    let status = spool.status(handle.id()).unwrap();
    assert_eq!(status.id, handle.id());
    assert_eq!(status.name, "test.add");
    assert_eq!(status.queue, "default");
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(status.attempts, 1);
    assert!(status.errors.is_empty());
    assert!(!status.unregistered);
    let started = status.started_at.expect("started_at set");
    let finished = status.finished_at.expect("finished_at set");
    // Millisecond resolution: compare with one millisecond of slack below `before`.
    assert!(status.enqueued_at + Duration::from_millis(1) >= before);
    assert!(started >= status.enqueued_at);
    assert!(finished >= started);
    assert!(finished <= SystemTime::now() + Duration::from_millis(1));
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn status_before_a_worker_runs_it_is_ready() {
    let spool = Spool::temporary().unwrap();
    let handle = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let status = handle.status().unwrap();
    assert_eq!(status.state, TaskState::Ready);
    assert_eq!(status.attempts, 0);
    assert_eq!(status.started_at, None);
    assert_eq!(status.finished_at, None);
    assert_eq!(handle.try_get().unwrap(), None);
    // `wait` without a worker times out and leaves the task alone.
    let err = handle.wait(Duration::from_millis(20)).unwrap_err();
    assert!(
        matches!(err, Error::Timeout(id) if id == handle.id()),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(handle.status().unwrap().state, TaskState::Ready);
}

#[test]
fn unknown_id_is_not_found_never_pending() {
    let spool = Spool::temporary().unwrap();
    let missing = TaskId::from_u64(12_345);
    let err = spool.status(missing).unwrap_err();
    assert!(
        matches!(err, Error::NotFound(id) if id == missing),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // Also after some tasks exist, and through a typed handle.
    let real = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    let next = TaskId::from_u64(real.id().as_u64() + 1);
    assert!(is_not_found(&spool, next));
    let handle = spool.handle::<Add>(next);
    assert!(matches!(handle.try_get(), Err(Error::NotFound(_))));
    assert!(matches!(handle.wait(WAIT), Err(Error::NotFound(_))));
}

#[test]
fn enqueue_many_returns_handles_in_order_and_all_complete() {
    let spool = Spool::temporary().unwrap();
    let handles = spool
        .enqueue_many((0..50).map(|i| Add { a: i, b: 1000 }))
        .unwrap();
    assert_eq!(handles.len(), 50);
    // Ids increase in the order given.
    for pair in handles.windows(2) {
        assert!(pair[0].id() < pair[1].id());
    }
    let worker = spool
        .worker()
        .concurrency(3)
        .register::<Add>()
        .start()
        .unwrap();
    for (i, handle) in (0..50).zip(&handles) {
        assert_eq!(handle.wait(WAIT).unwrap(), i + 1000);
    }
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Succeeded), 50);
    assert_eq!(stats.queue("default").unwrap().total(), 50);
    worker.shutdown(WAIT).unwrap();

    // An empty batch is fine and writes nothing.
    let none = spool.enqueue_many(Vec::<Add>::new()).unwrap();
    assert!(none.is_empty());
    assert_eq!(spool.stats().unwrap(), stats);
}

#[test]
fn enqueue_is_visible_to_status_as_soon_as_it_returns() {
    let spool = Spool::temporary().unwrap();
    let ids: Vec<TaskId> = (0..20)
        .map(|i| spool.enqueue(Add { a: i, b: i }).unwrap().id())
        .collect();
    for id in &ids {
        assert_eq!(state_of(&spool, *id), TaskState::Ready);
    }
    assert_eq!(spool.stats().unwrap().count(TaskState::Ready), 20);
}

#[test]
fn drain_runs_everything_due_and_reports_it() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let handles = spool
        .enqueue_many((0..70).map(|i| Add { a: i, b: 0 }))
        .unwrap();
    let report = spool.worker().register::<Add>().drain().unwrap();
    assert_eq!((report.attempts, report.succeeded), (70, 70));
    for (i, h) in (0..70).zip(&handles) {
        assert_eq!(h.try_get().unwrap(), Some(i));
    }
    let again = spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(again.attempts, 0);
}

#[test]
fn scheduled_task_waits_for_its_countdown() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let handle = spool
        .enqueue_with(
            Add { a: 3, b: 4 },
            taskspool::Options::new().countdown(Duration::from_secs(30)),
        )
        .unwrap();
    assert_eq!(handle.status().unwrap().state, TaskState::Scheduled);
    assert_eq!(
        spool.worker().register::<Add>().drain().unwrap().attempts,
        0
    );
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        spool.worker().register::<Add>().drain().unwrap().attempts,
        0
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        spool.worker().register::<Add>().drain().unwrap().succeeded,
        1
    );
    assert_eq!(handle.try_get().unwrap(), Some(7));
}
