//! Named queues: a worker only runs tasks from the queues it serves.

use taskspool::{Options, TaskState};

use super::common::*;

#[test]
fn worker_serving_a_does_not_run_b() {
    let spool = fresh_spool();
    let log = unique("queues");
    let in_b: Vec<_> = (0..5)
        .map(|_| {
            spool
                .enqueue_with(Record::to(&log), Options::new().queue("b"))
                .unwrap()
        })
        .collect();
    let in_a: Vec<_> = (0..5)
        .map(|_| {
            spool
                .enqueue_with(Record::to(&log), Options::new().queue("a"))
                .unwrap()
        })
        .collect();
    let worker_a = spool
        .worker()
        .concurrency(2)
        .queue("a")
        .register::<Record>()
        .start()
        .unwrap();
    for h in &in_a {
        h.wait(WAIT).unwrap();
    }
    // One more task in "a", enqueued after the "b" tasks, also runs: the worker has looked
    // at its queue several times by now.
    spool
        .enqueue_with(Record::to(&log), Options::new().queue("a"))
        .unwrap()
        .wait(WAIT)
        .unwrap();
    worker_a.shutdown(WAIT).unwrap();
    for h in &in_b {
        let status = h.status().unwrap();
        assert_eq!(status.state, TaskState::Ready);
        assert_eq!(status.queue, "b");
        assert_eq!(status.attempts, 0);
    }
    let stats = spool.stats().unwrap();
    assert_eq!(stats.queue("a").unwrap().count(TaskState::Succeeded), 6);
    assert_eq!(stats.queue("b").unwrap().count(TaskState::Ready), 5);
    assert!(
        logged(&log)
            .iter()
            .all(|id| in_b.iter().all(|h| h.id().as_u64() != *id))
    );

    // A worker for "b" picks them up.
    let worker_b = spool
        .worker()
        .queue("b")
        .register::<Record>()
        .start()
        .unwrap();
    for h in &in_b {
        h.wait(WAIT).unwrap();
    }
    worker_b.shutdown(WAIT).unwrap();
}

#[test]
fn drain_serving_a_does_not_run_b_and_default_is_default() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("queues-drain");
    let b = spool
        .enqueue_with(Record::to(&log), Options::new().queue("b"))
        .unwrap();
    let dflt = spool.enqueue(Record::to(&log)).unwrap();
    let a = spool
        .enqueue_with(Record::to(&log), Options::new().queue("a"))
        .unwrap();
    let report = spool
        .worker()
        .queue("a")
        .register::<Record>()
        .drain()
        .unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(logged(&log), vec![a.id().as_u64()]);
    assert_eq!(state_of(&spool, b.id()), TaskState::Ready);
    assert_eq!(state_of(&spool, dflt.id()), TaskState::Ready);
    // No queues named: the worker serves "default" only.
    let report = spool.worker().register::<Record>().drain().unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(logged(&log), vec![a.id().as_u64(), dflt.id().as_u64()]);
    assert_eq!(state_of(&spool, b.id()), TaskState::Ready);
}

#[test]
fn a_worker_serves_a_queue_that_did_not_exist_when_it_started() {
    let spool = fresh_spool();
    let log = unique("late-queue");
    let worker = spool
        .worker()
        .queues(["late", "default"])
        .register::<Record>()
        .start()
        .unwrap();
    let h = spool
        .enqueue_with(Record::to(&log), Options::new().queue("late"))
        .unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), h.id().as_u64());
    worker.shutdown(WAIT).unwrap();
}
