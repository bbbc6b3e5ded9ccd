//! Worker pools: `concurrency` attempts run at once and no more are claimed than there are
//! free slots (plus `prefetch`); pools with different task types share a queue, each running
//! only its own types.

use taskspool::{Spool, TaskState};

use super::common::*;

fn gated(key: &str, value: u64) -> Gated {
    Gated {
        gate: key.to_string(),
        wait: true,
        work_ms: 0,
        value,
    }
}

#[test]
fn concurrency_bounds_running_attempts_and_claims() {
    let spool = Spool::temporary().unwrap();
    let key = unique("concurrency");
    let handles: Vec<_> = (0..7)
        .map(|v| spool.enqueue(gated(&key, v)).unwrap())
        .collect();
    let worker = spool
        .worker()
        .concurrency(3)
        .register::<Gated>()
        .start()
        .unwrap();
    // Three run at once...
    gate(&key).wait_started(3);
    assert_eq!(worker.busy(), 3);
    // ...and only three were claimed: the rest are still ready, not held in memory.
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Running), 3);
    assert_eq!(stats.count(TaskState::Ready), 4);
    assert_eq!(gate(&key).started(), 3);
    gate(&key).open();
    for (v, h) in (0..7).zip(&handles) {
        assert_eq!(h.wait(WAIT).unwrap(), v);
    }
    assert_eq!(gate(&key).started(), 7);
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn prefetch_claims_ahead_of_free_threads() {
    let spool = Spool::temporary().unwrap();
    let key = unique("prefetch");
    let handles: Vec<_> = (0..6)
        .map(|v| spool.enqueue(gated(&key, v)).unwrap())
        .collect();
    let worker = spool
        .worker()
        .concurrency(1)
        .prefetch(2)
        .register::<Gated>()
        .start()
        .unwrap();
    gate(&key).wait_started(1);
    let stats = spool.stats().unwrap();
    assert_eq!(
        stats.count(TaskState::Running),
        3,
        "one running, two prefetched"
    );
    assert_eq!(stats.count(TaskState::Ready), 3);
    assert_eq!(gate(&key).started(), 1);
    gate(&key).open();
    for h in &handles {
        h.wait(WAIT).unwrap();
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn pools_with_different_task_types_share_a_queue() {
    let spool = Spool::temporary().unwrap();
    let log = unique("shared-queue");
    let adds = spool
        .enqueue_many((0..10).map(|a| Add { a, b: 1 }))
        .unwrap();
    let records: Vec<_> = (0..10)
        .map(|_| spool.enqueue(Record::to(&log)).unwrap())
        .collect();
    let add_pool = spool
        .worker()
        .concurrency(1)
        .register::<Add>()
        .start()
        .unwrap();
    let record_pool = spool
        .worker()
        .concurrency(1)
        .register::<Record>()
        .start()
        .unwrap();
    for (a, h) in (0..10).zip(&adds) {
        assert_eq!(h.wait(WAIT).unwrap(), a + 1);
    }
    for h in &records {
        h.wait(WAIT).unwrap();
        // Neither pool parked the other's tasks as unknown.
        assert!(!h.status().unwrap().unregistered);
    }
    assert!(spool.stats().unwrap().unregistered.is_empty());
    assert_eq!(logged(&log).len(), 10);
    add_pool.shutdown(WAIT).unwrap();
    record_pool.shutdown(WAIT).unwrap();
}
