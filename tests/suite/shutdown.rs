//! Shutdown: graceful shutdown waits for running tasks and their results are durable; a
//! second shutdown is harmless; dropping the worker shuts it down too; tasks claimed but not
//! started go back to the queue untouched (Ready, no attempt used).

use std::time::Duration;

use taskspool::{Error, ErrorKind, Spool, TaskId, TaskState, Worker};

use super::common::*;

fn gated(key: &str, wait: bool, work_ms: u64, value: u64) -> Gated {
    Gated {
        gate: key.to_string(),
        wait,
        work_ms,
        value,
    }
}

/// A one-thread worker allowed 3 tasks ahead, warmed up with quick tasks: prefetch is
/// adaptive (it claims ahead only what the threads finish during one commit), so it claims
/// ahead only once it has seen tasks run much faster than a commit.
fn warmed_up_worker(spool: &Spool) -> taskspool::Worker {
    let worker = spool
        .worker()
        .concurrency(1)
        .prefetch(3)
        .register::<Gated>()
        .start()
        .unwrap();
    let warm = unique("shutdown-warm-up");
    let handles = spool
        .enqueue_many((0..20).map(|v| gated(&warm, false, 0, v)))
        .unwrap();
    for h in handles {
        h.wait(WAIT).unwrap();
    }
    worker
}

/// Enqueues a blocker that waits on `blocker_key` and three quick tasks in one transaction,
/// so one claim takes all four: one to run, three ahead.
fn blocker_and_three(
    spool: &Spool,
    blocker_key: &str,
    key: &str,
) -> (taskspool::TaskHandle<u64>, Vec<taskspool::TaskHandle<u64>>) {
    let mut all = spool
        .enqueue_many(
            std::iter::once(gated(blocker_key, true, 0, 0))
                .chain((1..=3).map(|v| gated(key, false, 0, v))),
        )
        .unwrap();
    let rest = all.split_off(1);
    (all.remove(0), rest)
}

#[test]
fn shutdown_waits_for_the_running_task_and_its_result_is_durable() {
    let place = fresh_place();
    let key = unique("shutdown-waits");
    let id = {
        let spool = place.open(Spool::builder()).unwrap();
        let worker = spool
            .worker()
            .concurrency(1)
            .register::<Gated>()
            .start()
            .unwrap();
        let handle = spool.enqueue(gated(&key, false, 150, 77)).unwrap();
        gate(&key).wait_started(1);
        assert_eq!(gate(&key).finished(), 0);
        worker.shutdown(WAIT).unwrap();
        // Shutdown returned only after the task finished and its outcome was committed.
        assert_eq!(gate(&key).finished(), 1);
        assert_eq!(handle.status().unwrap().state, TaskState::Succeeded);
        // A second shutdown does nothing and succeeds.
        worker.shutdown(WAIT).unwrap();
        assert_eq!(worker.busy(), 0);
        handle.id()
    };
    let spool = place.open(Spool::builder()).unwrap();
    let status = spool.status(id).unwrap();
    assert_eq!(status.state, TaskState::Succeeded);
    assert_eq!(status.attempts, 1);
    assert!(status.errors.is_empty(), "the attempt was not lost");
    assert_eq!(spool.handle::<Gated>(id).try_get().unwrap(), Some(77));
}

#[test]
fn dropping_the_worker_shuts_it_down_gracefully() {
    let spool = fresh_spool();
    let key = unique("shutdown-drop");
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Gated>()
        .start()
        .unwrap();
    let handle = spool.enqueue(gated(&key, false, 150, 5)).unwrap();
    gate(&key).wait_started(1);
    drop(worker);
    assert_eq!(gate(&key).finished(), 1);
    assert_eq!(handle.status().unwrap().state, TaskState::Succeeded);
    // No worker any more: new tasks wait.
    let later = spool.enqueue(gated(&key, false, 0, 6)).unwrap();
    assert!(matches!(
        later.wait(Duration::from_millis(50)),
        Err(Error::Timeout(_))
    ));
    assert_eq!(later.status().unwrap().state, TaskState::Ready);
    assert_eq!(gate(&key).started(), 1);
}

#[test]
fn after_shutdown_tasks_stay_ready_and_a_new_worker_runs_them() {
    let spool = fresh_spool();
    let key = unique("shutdown-then-enqueue");
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Gated>()
        .start()
        .unwrap();
    worker.shutdown(WAIT).unwrap();
    let h = spool.enqueue(gated(&key, false, 0, 1)).unwrap();
    // The writer is idle and the stopped worker claims nothing: a drain that only serves
    // another queue runs a writer group, after which the task is still ready.
    spool
        .worker()
        .queue("elsewhere")
        .register::<Gated>()
        .drain()
        .unwrap();
    assert_eq!(h.status().unwrap().state, TaskState::Ready);
    let again = spool.worker().register::<Gated>().start().unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), 1);
    again.shutdown(WAIT).unwrap();
}

#[test]
fn claimed_but_unstarted_tasks_return_to_ready_at_shutdown() {
    let place = fresh_place();
    let key = unique("shutdown-prefetch");
    let blocker_key = unique("shutdown-blocker");
    let (blocker, rest) = {
        let spool = place.open(Spool::builder()).unwrap();
        let worker = warmed_up_worker(&spool);
        let (blocker, rest) = blocker_and_three(&spool, &blocker_key, &key);
        gate(&blocker_key).wait_started(1);
        for h in &rest {
            assert_eq!(h.status().unwrap().state, TaskState::Running, "prefetched");
        }
        // A zero deadline: the worker stops claiming (and is unregistered) before this returns,
        // but the blocked task is still running, so it reports a timeout.
        let err = worker.shutdown(Duration::ZERO).unwrap_err();
        assert!(
            matches!(&err, Error::ShutdownTimeout { running: 1, tasks } if *tasks == [blocker.id()]),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("(ids {})", blocker.id())),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Timeout);
        // Let the blocked task finish: its outcome is still recorded, and the thread hands the
        // prefetched tasks back instead of running them.
        gate(&blocker_key).open();
        assert_eq!(blocker.wait(WAIT).unwrap(), 0);
        eventually("prefetched tasks released", || {
            rest.iter()
                .all(|h| h.status().unwrap().state == TaskState::Ready)
        });
        assert_eq!(gate(&key).started(), 0, "no prefetched task ran");
        (
            blocker.id(),
            rest.iter().map(|h| h.id()).collect::<Vec<_>>(),
        )
    };
    let spool = place.open(Spool::builder()).unwrap();
    assert_eq!(spool.status(blocker).unwrap().state, TaskState::Succeeded);
    for id in &rest {
        let status = spool.status(*id).unwrap();
        assert_eq!(status.state, TaskState::Ready);
        // Released, not recovered as an orphan: no attempt was used, no error recorded.
        assert_eq!(status.attempts, 0);
        assert!(status.errors.is_empty(), "{:?}", status.errors);
        assert_eq!(status.started_at, None);
    }
    let worker = spool.worker().register::<Gated>().start().unwrap();
    for (v, id) in (1..=3).zip(&rest) {
        assert_eq!(spool.handle::<Gated>(*id).wait(WAIT).unwrap(), v);
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn graceful_shutdown_releases_prefetched_tasks() {
    // The graceful path: shutdown blocks until the running task ends; prefetched ones are
    // handed back, so right after shutdown returns they are Ready with no attempt used.
    let spool = fresh_spool();
    let key = unique("shutdown-graceful-prefetch");
    let first = unique("shutdown-graceful-first");
    let worker = warmed_up_worker(&spool);
    let (running, rest) = blocker_and_three(&spool, &first, &key);
    gate(&first).wait_started(1);
    // Claimed ahead of a free thread; the last slot of the warm-up may be freed (and
    // claimed for) a moment after its result was heard.
    eventually("the rest prefetched", || {
        rest.iter()
            .all(|h| h.status().unwrap().state == TaskState::Running)
    });
    // Let the blocker finish only after shutdown has been requested.
    let opener = {
        let first = first.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            gate(&first).open();
        })
    };
    worker.shutdown(WAIT).unwrap();
    opener.join().unwrap();
    assert_eq!(running.status().unwrap().state, TaskState::Succeeded);
    // Shutdown was requested while the blocker ran: none of the prefetched tasks may start.
    assert_eq!(gate(&key).started(), 0);
    for h in &rest {
        let status = h.status().unwrap();
        assert_eq!(status.state, TaskState::Ready);
        assert_eq!(status.attempts, 0);
    }
}

/// A shutdown that timed out has not finished: calling it again waits again for the tasks
/// still running (and times out again while they do), and returns `Ok` once they are done.
#[test]
fn a_shutdown_that_timed_out_can_be_waited_for_again() {
    let spool = fresh_spool();
    let key = unique("shutdown-again");
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Gated>()
        .start()
        .unwrap();
    let h = spool
        .enqueue(Gated {
            gate: key.clone(),
            wait: true,
            work_ms: 0,
            value: 5,
        })
        .unwrap();
    gate(&key).wait_started(1);
    for _ in 0..2 {
        let err = worker.shutdown(Duration::from_millis(20)).unwrap_err();
        assert!(
            matches!(&err, Error::ShutdownTimeout { running: 1, tasks } if *tasks == [h.id()]),
            "{err:?}"
        );
        assert_eq!(worker.running_tasks(), [h.id()]);
        assert_eq!(h.status().unwrap().state, TaskState::Running);
    }
    gate(&key).open();
    worker.shutdown(WAIT).unwrap();
    assert_eq!(h.status().unwrap().state, TaskState::Succeeded);
    assert_eq!(worker.busy(), 0);
    worker.shutdown(Duration::ZERO).unwrap();
}

/// Several pools shut down together share one deadline: every pool stops claiming at once,
/// and the call takes about one timeout, not one per pool; the timeout names every pool's
/// running task.
#[test]
fn pools_shut_down_together_within_one_deadline() {
    let spool = fresh_spool();
    let keys = [unique("together-a"), unique("together-b")];
    let start = |queue: &str| {
        spool
            .worker()
            .concurrency(1)
            .queue(queue)
            .register::<Gated>()
            .start()
            .unwrap()
    };
    let workers = [start("a"), start("b")];
    let handles: Vec<_> = ["a", "b"]
        .iter()
        .zip(&keys)
        .map(|(queue, key)| {
            spool
                .enqueue_with(
                    Gated {
                        gate: key.clone(),
                        wait: true,
                        work_ms: 0,
                        value: 1,
                    },
                    taskspool::Options::new().queue(*queue),
                )
                .unwrap()
        })
        .collect();
    for key in &keys {
        gate(key).wait_started(1);
    }
    let timeout = Duration::from_secs(1);
    let began = std::time::Instant::now();
    let err = Worker::shutdown_all(&workers, timeout).unwrap_err();
    let took = began.elapsed();
    let mut ids: Vec<TaskId> = handles.iter().map(|h| h.id()).collect();
    ids.sort();
    assert!(
        matches!(&err, Error::ShutdownTimeout { running: 2, tasks } if *tasks == ids),
        "{err:?}"
    );
    // One deadline for both: a wait per pool would take at least two timeouts. (Not a speed
    // check: the bound is the behaviour, with most of a timeout of slack.)
    assert!(took < timeout * 9 / 5, "took {took:?}");
    for key in &keys {
        gate(key).open();
    }
    Worker::shutdown_all(&workers, WAIT).unwrap();
    for h in &handles {
        assert_eq!(h.status().unwrap().state, TaskState::Succeeded);
    }
}
