//! Unique tasks: while a task holds its key, enqueueing another of the same type with that
//! key creates nothing and returns the holder, marked as a duplicate — exactly, under racing
//! producers, within a batch, for schedule fires — and the key is free again once the holder
//! is final, started, or its period is over, or once the holder is pruned or forgotten.

use std::time::Duration;

use taskspool::{Options, Schedule, Spool, TaskState, Unique};

use super::common::*;

fn add(n: i64) -> Add {
    Add { a: n, b: 0 }
}

#[test]
fn a_second_enqueue_with_a_held_key_returns_the_first_task_as_a_duplicate() {
    let spool = fresh_spool();
    let first = spool
        .enqueue_with(add(1), Options::new().unique("report:42"))
        .unwrap();
    assert!(!first.is_duplicate());
    let second = spool
        .enqueue_with(add(2), Options::new().unique("report:42"))
        .unwrap();
    assert!(second.is_duplicate());
    assert_eq!(second.id(), first.id());
    // Another key, or no key, is another task; the same key on another type too.
    let other = spool
        .enqueue_with(add(3), Options::new().unique("report:43"))
        .unwrap();
    assert!(!other.is_duplicate());
    let log = unique("unique-type");
    let record = spool
        .enqueue_with(Record::to(&log), Options::new().unique("report:42"))
        .unwrap();
    assert!(!record.is_duplicate());
    assert_eq!(spool.stats().unwrap().total(), 3);

    // Once the holder is final, the key is free.
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(
        second.wait(WAIT).unwrap(),
        1,
        "the handle is the first task's"
    );
    let third = spool
        .enqueue_with(add(4), Options::new().unique("report:42"))
        .unwrap();
    assert!(!third.is_duplicate());
    assert_ne!(third.id(), first.id());
}

#[test]
fn enqueue_many_deduplicates_within_the_batch_and_against_the_file() {
    let spool = fresh_spool();
    let held = spool
        .enqueue_with(add(0), Options::new().unique("b"))
        .unwrap();
    let handles = spool
        .enqueue_many_with(
            (0..3).map(add),
            // Every task of the batch gets the same options: one key for all three.
            Options::new().unique("a"),
        )
        .unwrap();
    assert_eq!(
        handles.iter().map(|h| h.is_duplicate()).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert!(handles.iter().all(|h| h.id() == handles[0].id()));
    let again = spool
        .enqueue_many_with((0..2).map(add), Options::new().unique("b"))
        .unwrap();
    assert!(
        again
            .iter()
            .all(|h| h.is_duplicate() && h.id() == held.id())
    );
    assert_eq!(spool.stats().unwrap().total(), 2);
}

/// Eight threads enqueue one key at once, many times: exactly one task.
#[test]
fn eight_racing_producers_create_exactly_one_task_per_key() {
    let spool = fresh_spool();
    let barrier = std::sync::Barrier::new(8);
    let ids: Vec<Vec<(u64, bool)>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..50)
                        .map(|_| {
                            let h = spool
                                .enqueue_with(add(1), Options::new().unique("race"))
                                .unwrap();
                            (h.id().as_u64(), h.is_duplicate())
                        })
                        .collect()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let all: Vec<(u64, bool)> = ids.into_iter().flatten().collect();
    assert_eq!(all.iter().filter(|(_, dup)| !dup).count(), 1);
    assert!(all.iter().all(|(id, _)| *id == all[0].0));
    assert_eq!(spool.stats().unwrap().total(), 1);
}

/// `UntilStarted`: a task enqueued while the holder runs is a new task. A worker's claim is
/// the start: a task a pool prefetched is `Running` and frees its key, so this pool takes
/// no prefetch and the third task waits, `Ready`, holding the key.
#[test]
fn until_started_frees_the_key_when_the_first_attempt_starts() {
    let spool = fresh_spool();
    let g = unique("until-started");
    let opts = || Options::new().unique_with("sync", Unique::UntilStarted);
    let gated = |value| Gated {
        gate: g.clone(),
        wait: true,
        work_ms: 0,
        value,
    };
    let first = spool.enqueue_with(gated(1), opts()).unwrap();
    assert!(spool.enqueue_with(gated(2), opts()).unwrap().is_duplicate());
    let w = spool
        .worker()
        .concurrency(1)
        .prefetch(0)
        .register::<Gated>()
        .start()
        .unwrap();
    gate(&g).wait_started(1);
    let second = spool.enqueue_with(gated(3), opts()).unwrap();
    assert!(!second.is_duplicate(), "the holder has started");
    assert!(spool.enqueue_with(gated(4), opts()).unwrap().is_duplicate());
    gate(&g).open();
    assert_eq!(first.wait(WAIT).unwrap(), 1);
    assert_eq!(second.wait(WAIT).unwrap(), 3);
    w.shutdown(WAIT).unwrap();
}

/// `For(period)`: the key holds for the period after the enqueue, whatever the task's state.
#[test]
fn a_unique_period_holds_after_the_task_finished_and_ends_on_time() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let opts = || Options::new().unique_with("digest", Unique::For(Duration::from_secs(60)));
    let first = spool.enqueue_with(add(1), opts()).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(
        spool.status(first.id()).unwrap().state,
        TaskState::Succeeded
    );
    clock.advance(Duration::from_secs(59));
    assert!(spool.enqueue_with(add(2), opts()).unwrap().is_duplicate());
    clock.advance(Duration::from_secs(1));
    let next = spool.enqueue_with(add(3), opts()).unwrap();
    assert!(!next.is_duplicate(), "the period is over");
}

/// A schedule's fires honour the key: while the first fire's task waits, later fires create
/// nothing.
#[test]
fn schedule_fires_honour_a_unique_key() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    spool
        .schedule_with(
            "cleanup",
            Schedule::every(Duration::from_secs(60)),
            add(5),
            Options::new().unique("cleanup"),
        )
        .unwrap();
    let t0 = clock.now();
    for i in 1..=3 {
        clock.advance(Duration::from_secs(60));
        // Each fire on its own: no catch-up folds them into one.
        let at = t0 + Duration::from_secs(60 * i);
        eventually("the fire", || {
            spool.schedules().unwrap()[0].last_fire == Some(at)
        });
    }
    // Let the writer run its due fires (the drain's claim sees everything due).
    let ran = spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(ran.attempts, 1, "one task for three fires");
    clock.advance(Duration::from_secs(60));
    eventually("a fire after the holder finished", || {
        spool.stats().unwrap().count(TaskState::Ready) == 1
    });
}

/// Forgetting or pruning the holder leaves no key behind.
#[test]
fn a_forgotten_or_pruned_holder_leaves_no_key_behind() {
    let clock = manual_clock();
    let spool = Spool::builder()
        .manual_clock(clock.clone())
        .result_ttl(Duration::from_secs(10))
        .open_fresh()
        .unwrap();
    let period = || Options::new().unique_with("p", Unique::For(Duration::from_secs(3600)));
    let held = spool.enqueue_with(add(1), period()).unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    assert!(spool.enqueue_with(add(2), period()).unwrap().is_duplicate());
    spool.forget(held.id()).unwrap();
    let next = spool.enqueue_with(add(3), period()).unwrap();
    assert!(!next.is_duplicate(), "the forgotten holder's key is free");

    spool.worker().register::<Add>().drain().unwrap();
    clock.advance(Duration::from_secs(11));
    eventually("pruned", || is_not_found(&spool, next.id()));
    assert!(!spool.enqueue_with(add(4), period()).unwrap().is_duplicate());
}
