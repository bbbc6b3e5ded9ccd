//! Unknown task names: a task no worker can run is neither lost nor failed. While a pool
//! serves its queue without knowing its name, it is flagged (`unregistered`, listed in
//! `stats`), and it runs as soon as a worker registering its name starts — also after a
//! restart.

use taskspool::{Spool, TaskState};

use super::common::*;

#[test]
fn unknown_name_waits_visibly_until_a_worker_registers_it() {
    let spool = fresh_spool();
    let ghosts: Vec<_> = (0..3)
        .map(|n| spool.enqueue(Ghost { n }).unwrap())
        .collect();
    let known = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    // Before anyone looked, it is just ready.
    assert!(!ghosts[0].status().unwrap().unregistered);

    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Add>()
        .start()
        .unwrap();
    assert_eq!(known.wait(WAIT).unwrap(), 2);
    // The ghosts were examined in the same claim that started `known` (they are older).
    for g in &ghosts {
        let status = g.status().unwrap();
        assert_eq!(status.state, TaskState::Ready, "not failed, not running");
        assert!(status.unregistered);
        assert_eq!(status.attempts, 0);
        assert!(status.errors.is_empty());
    }
    let stats = spool.stats().unwrap();
    assert_eq!(stats.unregistered, vec![("test.ghost".to_string(), 3)]);
    assert_eq!(stats.count(TaskState::Ready), 3);

    // More work for the running worker does not disturb them.
    spool
        .enqueue(Add { a: 2, b: 2 })
        .unwrap()
        .wait(WAIT)
        .unwrap();
    assert_eq!(spool.stats().unwrap().unregistered.len(), 1);

    // A worker that knows the name starts: they run.
    let ghost_worker = spool.worker().register::<Ghost>().start().unwrap();
    for (n, g) in (0..3).zip(&ghosts) {
        assert_eq!(g.wait(WAIT).unwrap(), n * 2);
        assert!(!g.status().unwrap().unregistered);
    }
    assert!(spool.stats().unwrap().unregistered.is_empty());
    ghost_worker.shutdown(WAIT).unwrap();
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_drain_leaves_unknown_names_alone_and_a_drain_that_knows_them_runs_them() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let ghost = spool.enqueue(Ghost { n: 21 }).unwrap();
    let report = spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(report.attempts, 0);
    let status = ghost.status().unwrap();
    assert_eq!(status.state, TaskState::Ready);
    assert_eq!(status.attempts, 0);
    assert!(status.errors.is_empty());
    // No pool is running, so it is waiting for a worker, not flagged.
    assert!(!status.unregistered);
    assert!(spool.stats().unwrap().unregistered.is_empty());
    let report = spool.worker().register::<Ghost>().drain().unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(ghost.try_get().unwrap(), Some(42));
}

#[test]
fn unregistered_tasks_survive_a_restart_and_run_when_registered() {
    let place = fresh_place();
    let id = {
        let spool = place.open(Spool::builder()).unwrap();
        let ghost = spool.enqueue(Ghost { n: 4 }).unwrap();
        let known = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
        let worker = spool.worker().register::<Add>().start().unwrap();
        known.wait(WAIT).unwrap();
        assert!(ghost.status().unwrap().unregistered);
        worker.shutdown(WAIT).unwrap();
        assert!(
            !ghost.status().unwrap().unregistered,
            "no pool serves the queue any more"
        );
        ghost.id()
    };
    let spool = place.open(Spool::builder()).unwrap();
    let status = spool.status(id).unwrap();
    assert_eq!(status.state, TaskState::Ready);
    let adder = spool.worker().register::<Add>().start().unwrap();
    assert!(spool.status(id).unwrap().unregistered);
    let worker = spool.worker().register::<Ghost>().start().unwrap();
    assert_eq!(spool.handle::<Ghost>(id).wait(WAIT).unwrap(), 8);
    worker.shutdown(WAIT).unwrap();
    adder.shutdown(WAIT).unwrap();
}

/// A task whose name only a pool serving *another* queue knows is flagged: no pool of its own
/// queue can run it.
#[test]
fn a_name_known_only_to_a_pool_of_another_queue_is_flagged_unregistered() {
    let spool = fresh_spool();
    let stranded = spool
        .enqueue_with(Ghost { n: 1 }, taskspool::Options::new().queue("q1"))
        .unwrap();
    let known = spool
        .enqueue_with(Add { a: 1, b: 1 }, taskspool::Options::new().queue("q1"))
        .unwrap();
    let q1 = spool
        .worker()
        .queue("q1")
        .register::<Add>()
        .start()
        .unwrap();
    let q2 = spool
        .worker()
        .queue("q2")
        .register::<Ghost>()
        .start()
        .unwrap();
    // A claim for q1 after q2's pool exists examines the ghost again.
    spool
        .enqueue_with(Add { a: 2, b: 2 }, taskspool::Options::new().queue("q1"))
        .unwrap()
        .wait(WAIT)
        .unwrap();
    known.wait(WAIT).unwrap();
    let status = stranded.status().unwrap();
    q1.shutdown(WAIT).unwrap();
    q2.shutdown(WAIT).unwrap();
    assert_eq!(status.state, TaskState::Ready);
    assert!(
        status.unregistered,
        "no pool serving q1 can run it, yet it is not flagged"
    );
}
