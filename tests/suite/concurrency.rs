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
    let spool = fresh_spool();
    let key = unique("concurrency");
    let handles: Vec<_> = (0..7)
        .map(|v| spool.enqueue(gated(&key, v)).unwrap())
        .collect();
    let worker = spool
        .worker()
        .concurrency(3)
        .prefetch(0)
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

/// A one-thread pool warmed up with quick tasks, so that adaptive prefetch (which claims
/// ahead only what the threads finish during one commit) has seen fast tasks.
fn warmed_up(spool: &Spool, prefetch: usize) -> taskspool::Worker {
    let worker = spool
        .worker()
        .concurrency(1)
        .prefetch(prefetch)
        .register::<Gated>()
        .start()
        .unwrap();
    let warm = unique("warm-up");
    for h in spool
        .enqueue_many((0..20).map(|value| Gated {
            gate: warm.clone(),
            wait: false,
            work_ms: 0,
            value,
        }))
        .unwrap()
    {
        h.wait(WAIT).unwrap();
    }
    worker
}

/// Enqueues, in one transaction, a blocker (which holds the worker's only thread) and then
/// `n` tasks behind gate `key`; returns once the blocker runs. Then opens both gates and
/// waits for every task when the caller's `check` is done.
fn behind_a_blocker(
    spool: &Spool,
    worker: taskspool::Worker,
    key: &str,
    n: u64,
    check: impl FnOnce(),
) {
    let blocker = unique(&format!("blocker-{key}"));
    let handles = spool
        .enqueue_many(
            std::iter::once(Gated {
                gate: blocker.clone(),
                wait: true,
                work_ms: 0,
                value: 0,
            })
            .chain((1..=n).map(|v| gated(key, v))),
        )
        .unwrap();
    gate(&blocker).wait_started(1);
    check();
    gate(&blocker).open();
    gate(key).open();
    for h in &handles {
        h.wait(WAIT).unwrap();
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn prefetch_zero_never_claims_ahead() {
    let spool = fresh_spool();
    let key = unique("prefetch-zero");
    let worker = warmed_up(&spool, 0);
    behind_a_blocker(&spool, worker, &key, 5, || {
        let stats = spool.stats().unwrap();
        assert_eq!(stats.count(TaskState::Running), 1);
        assert_eq!(stats.count(TaskState::Ready), 5);
    });
}

#[test]
fn prefetch_claims_at_most_its_limit_ahead() {
    let spool = fresh_spool();
    let key = unique("prefetch-limit");
    let worker = warmed_up(&spool, 2);
    behind_a_blocker(&spool, worker, &key, 6, || {
        let running = spool.stats().unwrap().count(TaskState::Running);
        assert!(
            (1..=3).contains(&running),
            "{running} claimed by one thread with prefetch 2"
        );
        assert_eq!(gate(&key).started(), 0);
    });
}

#[test]
fn pools_with_different_task_types_share_a_queue() {
    let spool = fresh_spool();
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
        // Neither pool's tasks are flagged as unknown: another pool of the queue knows them.
        assert!(!h.status().unwrap().unregistered);
    }
    assert!(spool.stats().unwrap().unregistered.is_empty());
    assert_eq!(logged(&log).len(), 10);
    add_pool.shutdown(WAIT).unwrap();
    record_pool.shutdown(WAIT).unwrap();
}

/// Two pools share a queue: one's task sits behind a long backlog of the other's type. The
/// ready index is keyed by task name within a queue, so the idle pool finds its task at once
/// instead of wading through the backlog.
#[test]
fn an_idle_pool_finds_its_task_behind_a_long_backlog_of_another_pools_type() {
    let spool = fresh_spool();
    let key = unique("skip-budget");
    let busy = spool
        .worker()
        .concurrency(1)
        .prefetch(0)
        .register::<Gated>()
        .start()
        .unwrap();
    let first = spool.enqueue(gated(&key, 0)).unwrap();
    gate(&key).wait_started(1);
    spool
        .enqueue_many((1..=1500).map(|v| gated(&key, v)))
        .unwrap();
    let add = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let idle = spool
        .worker()
        .concurrency(1)
        .register::<Add>()
        .start()
        .unwrap();
    let result = add.wait(std::time::Duration::from_secs(2));
    gate(&key).open();
    first.wait(WAIT).unwrap();
    idle.shutdown(WAIT).unwrap();
    drop(busy);
    assert_eq!(result.unwrap(), 2);
}
