//! Async entry points (feature `tokio`): enqueues awaited on a runtime, and `wait_async`,
//! woken by the writer without a thread per waiter.

#![cfg(feature = "tokio")]

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, Options, Spool, Task, TaskError, TaskState};

#[derive(Debug, Serialize, Deserialize)]
struct Double {
    n: u64,
}

impl Task for Double {
    const NAME: &'static str = "double";
    type Output = u64;
    fn run(self, _ctx: &Context) -> Result<u64, TaskError> {
        Ok(self.n * 2)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_awaited_enqueue_is_durable_and_its_result_is_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.redb");
    let spool = Spool::open(&path).unwrap();
    let worker = spool.worker().register::<Double>().start().unwrap();
    let (one, many) = runtime().block_on(async {
        let one = spool.enqueue_async(Double { n: 21 }).await.unwrap();
        let many = spool
            .enqueue_many_with_async((0..100).map(|n| Double { n }), Options::new().priority(3))
            .await
            .unwrap();
        assert_eq!(one.wait_async(Duration::from_secs(10)).await.unwrap(), 42);
        for (n, handle) in (0..100).zip(&many) {
            assert_eq!(
                handle.wait_async(Duration::from_secs(10)).await.unwrap(),
                n * 2
            );
        }
        (one.id(), many.iter().map(|h| h.id()).collect::<Vec<_>>())
    });
    assert!(many.windows(2).all(|w| w[0] < w[1]), "ids in order");
    assert_eq!(spool.status(many[0]).unwrap().priority, 3);
    worker.shutdown(Duration::from_secs(10)).unwrap();
    drop((worker, spool));
    // Acknowledged means durable: the file has them after a reopen.
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.status(one).unwrap().state, TaskState::Succeeded);
    assert_eq!(
        spool.stats().unwrap().count(TaskState::Succeeded),
        101,
        "every awaited enqueue is in the file"
    );
}

/// Ten thousand waits on one runtime thread, all woken by the writer as their tasks finish.
#[test]
fn many_waits_on_one_thread_are_all_woken() {
    let spool = Spool::temporary().unwrap();
    let handles = spool
        .enqueue_many((0..10_000).map(|n| Double { n }))
        .unwrap();
    let rt = runtime();
    let joined = rt.block_on(async {
        let waits: Vec<_> = handles
            .into_iter()
            .map(|h| tokio::spawn(async move { h.wait_async(Duration::from_secs(60)).await }))
            .collect();
        // Every wait is registered before anything runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let worker = spool
            .worker()
            .concurrency(2)
            .register::<Double>()
            .start()
            .unwrap();
        let mut sum = 0;
        for w in waits {
            sum += w.await.unwrap().unwrap();
        }
        worker.shutdown(Duration::from_secs(10)).unwrap();
        sum
    });
    assert_eq!(joined, (0..10_000u64).map(|n| n * 2).sum::<u64>());
}

#[test]
fn an_awaited_wait_times_out_and_hears_the_spool_close() {
    let spool = Spool::temporary().unwrap();
    let handle = spool.enqueue(Double { n: 1 }).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let started = Instant::now();
        let timed_out = handle.wait_async(Duration::from_millis(100)).await;
        assert!(
            matches!(timed_out, Err(Error::Timeout(id)) if id == handle.id()),
            "{timed_out:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(90));

        // A wait in progress hears the close (nothing else will finish the task).
        let waiting = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.wait_async(Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(spool);
        let closed = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the close")
            .unwrap();
        assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
    });
}

/// A wait whose future is dropped (a `select!` that went the other way) leaves nothing
/// registered: the task's completion later wakes no one and nothing leaks.
#[test]
fn a_dropped_wait_leaves_nothing_behind() {
    let spool = Spool::temporary().unwrap();
    let handle = spool.enqueue(Double { n: 5 }).unwrap();
    let rt = runtime();
    rt.block_on(async {
        for _ in 0..1_000 {
            let wait = handle.wait_async(Duration::from_secs(60));
            let _ = tokio::time::timeout(Duration::from_micros(1), wait).await;
        }
    });
    spool.worker().register::<Double>().drain().unwrap();
    let value = rt.block_on(handle.wait_async(Duration::from_secs(10)));
    assert_eq!(value.unwrap(), 10);
}
