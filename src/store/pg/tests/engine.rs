//! The first cut of the PostgreSQL engine under the public API, against a real server: a
//! spool on it enqueues, a worker pool runs the tasks, a failure retries, and a second
//! spool on the same schema — another process, as far as the database can tell — runs
//! what the first enqueued.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Scratch, server};
use crate::context::Context;
use crate::error::Error;
use crate::model::TaskState;
use crate::options::Options;
use crate::retry::RetryPolicy;
use crate::shared::Spool;
use crate::task::Task;
use crate::task_error::TaskError;

/// A spool on the scratch schema, as a user opens one.
fn spool(scratch: &Scratch) -> Spool {
    Spool::builder()
        .postgres_schema(scratch.schema.as_str())
        .lease(Duration::from_secs(10))
        .connect_postgres(&scratch.url)
        .unwrap()
}

#[derive(Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
    /// Fails its first attempt.
    flaky: bool,
}

impl Task for Add {
    const NAME: &'static str = "pg.add";
    type Output = i64;
    fn run(self, ctx: &Context) -> Result<i64, TaskError> {
        if self.flaky && ctx.attempt() == 1 {
            return Err(TaskError::retry("the first attempt fails"));
        }
        Ok(self.a + self.b)
    }
}

#[test]
fn a_spool_on_postgres_enqueues_runs_retries_and_waits_across_processes() {
    let Some(url) = server("a_spool_on_postgres_enqueues_runs_retries_and_waits") else {
        return;
    };
    let scratch = Scratch::migrated(url, "engine");
    let producer = spool(&scratch);
    let handles: Vec<_> = (0..50)
        .map(|n| {
            producer
                .enqueue(Add {
                    a: n,
                    b: 1,
                    flaky: false,
                })
                .unwrap()
        })
        .collect();
    let flaky = producer
        .enqueue_with(
            Add {
                a: 40,
                b: 2,
                flaky: true,
            },
            Options::new().retry_policy(RetryPolicy::immediate()),
        )
        .unwrap();
    // Another process runs them: a spool of its own on the same schema.
    let consumer = spool(&scratch);
    let worker = consumer
        .worker()
        .concurrency(4)
        .register::<Add>()
        .start()
        .unwrap();
    for (n, handle) in (0..50).zip(&handles) {
        assert_eq!(handle.wait(Duration::from_secs(30)).unwrap(), n + 1);
    }
    assert_eq!(flaky.wait(Duration::from_secs(30)).unwrap(), 42);
    let status = producer.status(flaky.id()).unwrap();
    assert_eq!((status.state, status.attempts), (TaskState::Succeeded, 2));
    assert_eq!(status.errors[0].message, "the first attempt fails");
    // A task that fails for good is a typed failure for its waiter.
    let doomed = producer
        .enqueue_with(
            Add {
                a: 0,
                b: 0,
                flaky: true,
            },
            Options::new().max_retries(0),
        )
        .unwrap();
    let Err(Error::TaskFailed(failure)) = doomed.wait(Duration::from_secs(30)) else {
        panic!("its only attempt failed");
    };
    assert_eq!(failure.attempts, 1);
    // Counts per queue and state, and the consumer's pool — in the producer's stats too.
    let stats = consumer.stats().unwrap();
    assert_eq!(stats.count(TaskState::Succeeded), 51);
    assert_eq!(stats.count(TaskState::Failed), 1);
    assert_eq!(stats.queue("default").map(|q| q.total()), Some(52));
    assert_eq!(stats.pools.len(), 1);
    assert_eq!((stats.pools[0].concurrency, stats.pools[0].threads), (4, 4));
    let seen = producer.stats().unwrap().pools;
    assert_eq!(
        seen.len(),
        1,
        "the producer runs none; it sees the consumer's"
    );
    assert_eq!(
        (seen[0].concurrency, seen[0].queues.as_slice()),
        (4, &["default".to_string()][..])
    );
    worker.shutdown(Duration::from_secs(30)).unwrap();
    assert!(
        producer.stats().unwrap().pools.is_empty(),
        "a stopped pool leaves the table"
    );
    // With no worker to run it before its expiry, a task ends expired, and its waiter says so.
    let stale = producer
        .enqueue_with(
            Add {
                a: 0,
                b: 0,
                flaky: false,
            },
            Options::new().expires(Duration::from_millis(50)),
        )
        .unwrap();
    assert!(matches!(
        stale.wait(Duration::from_secs(30)),
        Err(Error::TaskExpired(_))
    ));
}

#[test]
fn a_schedule_declared_by_two_processes_fires_once_per_tick() {
    let Some(url) = server("a_schedule_declared_by_two_processes_fires_once_per_tick") else {
        return;
    };
    let scratch = Scratch::migrated(url, "engine_beat");
    let (a, b) = (spool(&scratch), spool(&scratch));
    let tick = crate::schedule::Schedule::every(Duration::from_millis(100));
    let task = || Add {
        a: 1,
        b: 1,
        flaky: false,
    };
    // Both processes declare it at start, and both run workers.
    a.schedule("tick", tick.clone(), task()).unwrap();
    b.schedule("tick", tick, task()).unwrap();
    let workers = [
        a.worker().register::<Add>().start().unwrap(),
        b.worker().register::<Add>().start().unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(1_000));
    let infos = a.schedules().unwrap();
    assert_eq!(infos.len(), 1);
    assert!(infos[0].last_fire.is_some(), "it fired: {infos:?}");
    for w in &workers {
        w.shutdown(Duration::from_secs(30)).unwrap();
    }
    drop(workers);
    let mut db = scratch.client();
    let q = scratch.schema.quoted();
    let fires: Vec<i64> = db
        .query(
            &format!("SELECT fire_ms FROM {q}.schedule_fires ORDER BY fire_ms"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let tasks: i64 = db
        .query_one(&format!("SELECT count(*) FROM {q}.tasks"), &[])
        .unwrap()
        .get(0);
    assert!(fires.len() >= 5, "about ten ticks in a second: {fires:?}");
    assert_eq!(tasks as usize, fires.len(), "one task per fire");
    // On the interval's grid, each fire time once (a late tick may be skipped under the
    // default misfire policy, never made twice).
    assert!(
        fires
            .windows(2)
            .all(|w| w[1] > w[0] && (w[1] - w[0]) % 100 == 0),
        "every tick at most once: {fires:?}"
    );
}
