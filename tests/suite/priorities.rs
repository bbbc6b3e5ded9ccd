//! Priorities: higher priority runs first, within one queue and across the queues one worker
//! serves; within a priority, tasks run in enqueue order.

use taskspool::{Options, Spool, TaskId};

use super::common::*;

fn ids(handles: &[TaskId]) -> Vec<u64> {
    handles.iter().map(|id| id.as_u64()).collect()
}

/// Enqueues `(queue, priority)` pairs as `Record` tasks; returns their ids.
fn enqueue_all(spool: &Spool, log: &str, plan: &[(&str, u8)]) -> Vec<TaskId> {
    plan.iter()
        .map(|&(queue, priority)| {
            spool
                .enqueue_with(
                    Record::to(log),
                    Options::new().queue(queue).priority(priority),
                )
                .unwrap()
                .id()
        })
        .collect()
}

#[test]
fn higher_priority_first_fifo_within_priority_in_one_queue_drain() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("prio-one-queue");
    let plan = [
        ("default", 0),
        ("default", 5),
        ("default", 9),
        ("default", 0),
        ("default", 5),
        ("default", 9),
        ("default", 3),
    ];
    let t = enqueue_all(&spool, &log, &plan);
    let report = spool.worker().register::<Record>().drain().unwrap();
    assert_eq!(report.succeeded, plan.len());
    let expected = vec![t[2], t[5], t[1], t[4], t[6], t[0], t[3]];
    assert_eq!(logged(&log), ids(&expected));
}

#[test]
fn higher_priority_first_across_queues_served_by_one_worker() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("prio-across");
    let plan = [
        ("a", 1),
        ("b", 1),
        ("c", 7),
        ("a", 7),
        ("b", 9),
        ("a", 0),
        ("c", 1),
        ("b", 7),
    ];
    let t = enqueue_all(&spool, &log, &plan);
    let report = spool
        .worker()
        .queues(["a", "b", "c"])
        .register::<Record>()
        .drain()
        .unwrap();
    assert_eq!(report.succeeded, plan.len());
    // 9; then the 7s in enqueue order (c, a, b); then the 1s in enqueue order; then 0.
    let expected = vec![t[4], t[2], t[3], t[7], t[0], t[1], t[6], t[5]];
    assert_eq!(logged(&log), ids(&expected));
}

#[test]
fn a_single_threaded_worker_runs_in_priority_then_fifo_order() {
    let spool = fresh_spool();
    let log = unique("prio-worker");
    let plan: Vec<(&str, u8)> = (0..30u8)
        .map(|i| (if i % 2 == 0 { "x" } else { "y" }, i % 3 * 4))
        .collect();
    let t = enqueue_all(&spool, &log, &plan);
    let worker = spool
        .worker()
        .concurrency(1)
        .queues(["x", "y"])
        .register::<Record>()
        .start()
        .unwrap();
    for id in &t {
        spool.handle::<Record>(*id).wait(WAIT).unwrap();
    }
    worker.shutdown(WAIT).unwrap();
    let mut expected: Vec<(u8, usize)> = plan.iter().enumerate().map(|(i, p)| (p.1, i)).collect();
    // Stable sort: descending priority, ties keep enqueue order.
    expected.sort_by_key(|&(priority, _)| std::cmp::Reverse(priority));
    let expected: Vec<TaskId> = expected.into_iter().map(|(_, i)| t[i]).collect();
    assert_eq!(logged(&log), ids(&expected));
}

/// Claims ahead follow how long tasks run: a pool that has seen its tasks run long holds at
/// most one ahead of its thread, so an urgent task enqueued while a long one runs goes next
/// (after at most that one) rather than behind the whole backlog.
#[test]
fn an_urgent_task_does_not_wait_behind_a_backlog_held_by_a_busy_pool() {
    let spool = fresh_spool();
    let warm = unique("prio-held-warm");
    let blocker = unique("prio-held-blocker");
    let log = unique("prio-held");
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Gated>()
        .register::<Record>()
        .start()
        .unwrap();
    // Tasks that run long next to one claim: the pool learns that claiming ahead gains
    // little.
    let long = Gated {
        gate: warm,
        wait: false,
        work_ms: 200,
        value: 0,
    };
    spool.enqueue(long).unwrap().wait(WAIT).unwrap();
    let held = spool
        .enqueue(Gated {
            gate: blocker.clone(),
            wait: true,
            work_ms: 0,
            value: 1,
        })
        .unwrap();
    gate(&blocker).wait_started(1);
    let backlog = enqueue_all(&spool, &log, &[("default", 0); 5]);
    // Let a claim that would take the backlog happen before the urgent task exists.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let urgent = enqueue_all(&spool, &log, &[("default", 9)]);
    gate(&blocker).open();
    held.wait(WAIT).unwrap();
    for id in backlog.iter().chain(&urgent) {
        spool.handle::<Record>(*id).wait(WAIT).unwrap();
    }
    worker.shutdown(WAIT).unwrap();
    let order = logged(&log);
    let at = order.iter().position(|&id| id == urgent[0].as_u64());
    assert!(
        at.is_some_and(|at| at <= 1),
        "the urgent task ran at {at:?} in {order:?} (backlog {:?})",
        ids(&backlog)
    );
}
