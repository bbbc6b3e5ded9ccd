//! Lifecycle: enqueue → a worker runs it → `wait` returns the output; `status` tells the
//! truth about state, times and attempts; unknown ids are `NotFound`, never pending.

use std::time::{Duration, SystemTime};

use taskspool::{Error, ErrorKind, TaskId, TaskState};

use super::common::*;

#[test]
fn enqueue_run_wait_returns_the_output() {
    let spool = fresh_spool();
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
    let spool = fresh_spool();
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
    let spool = fresh_spool();
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
    let spool = fresh_spool();
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
    assert_eq!(stats.pools.len(), 1);
    assert_eq!((stats.pools[0].concurrency, stats.pools[0].threads), (3, 3));
    worker.shutdown(WAIT).unwrap();
    let stats = spool.stats().unwrap();
    assert!(stats.pools.is_empty(), "a stopped pool is not listed");

    // An empty batch is fine and writes nothing.
    let none = spool.enqueue_many(Vec::<Add>::new()).unwrap();
    assert!(none.is_empty());
    assert_eq!(spool.stats().unwrap(), stats);
}

#[test]
fn enqueue_is_visible_to_status_as_soon_as_it_returns() {
    let spool = fresh_spool();
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

#[test]
fn the_handler_is_told_its_id_name_queue_and_attempt() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let enqueued_at = clock.now_ms();
    let handle = spool
        .enqueue_with(
            Introspect,
            taskspool::Options::new()
                .queue("inspect")
                .max_retries(2)
                .retry_policy(taskspool::RetryPolicy::immediate()),
        )
        .unwrap();
    // Introspect retries until `is_last_attempt`, so it runs attempts 1, 2 and 3.
    let report = spool
        .worker()
        .queue("inspect")
        .register::<Introspect>()
        .drain()
        .unwrap();
    assert_eq!((report.attempts, report.succeeded), (3, 1));
    let seen = handle.try_get().unwrap().unwrap();
    assert_eq!(
        seen,
        Seen {
            id: handle.id().as_u64(),
            name: "test.introspect".into(),
            queue: "inspect".into(),
            attempt: 3,
            max_retries: 2,
            last: true,
            enqueued_at_ms: enqueued_at,
        }
    );
    let status = handle.status().unwrap();
    assert!(status.errors[0].message.contains("attempt: 1"));
    assert!(status.errors[0].message.contains("last: false"));
    assert!(status.errors[1].message.contains("attempt: 2"));
}

/// Its output cannot be written as JSON (a map with non-string keys).
#[derive(serde::Serialize, serde::Deserialize)]
struct BadOutput;

impl taskspool::Task for BadOutput {
    const NAME: &'static str = "test.bad_output";
    type Output = std::collections::BTreeMap<(u8, u8), u8>;
    fn run(self, _ctx: &taskspool::Context) -> Result<Self::Output, taskspool::TaskError> {
        Ok([((1, 2), 3)].into_iter().collect())
    }
}

#[test]
fn an_output_that_cannot_be_stored_fails_the_task_without_retrying() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let handle = spool.enqueue(BadOutput).unwrap();
    let report = spool.worker().register::<BadOutput>().drain().unwrap();
    assert_eq!((report.attempts, report.succeeded), (1, 0));
    let Err(Error::TaskFailed(f)) = handle.try_get() else {
        panic!("expected TaskFailed");
    };
    assert_eq!(f.attempts, 1);
    assert_eq!(f.errors[0].kind, taskspool::AttemptErrorKind::Fatal);
    assert!(f.message.contains("test.bad_output"), "{}", f.message);
}

/// Returns a float that JSON cannot hold (serde_json writes NaN as `null`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Ratio {
    num: f64,
    den: f64,
}

impl taskspool::Task for Ratio {
    const NAME: &'static str = "test.ratio";
    type Output = f64;
    fn run(self, _ctx: &taskspool::Context) -> Result<f64, taskspool::TaskError> {
        Ok(self.num / self.den)
    }
}

/// An output that would not read back is never stored as a success: the attempt fails, with
/// a message that says why, and every later read says `TaskFailed` (not a decode error).
#[test]
fn an_output_that_would_not_read_back_fails_the_attempt() {
    let spool = fresh_spool();
    let nan = spool.enqueue(Ratio { num: 0.0, den: 0.0 }).unwrap();
    let half = spool.enqueue(Ratio { num: 1.0, den: 2.0 }).unwrap();
    spool.worker().register::<Ratio>().drain().unwrap();
    assert_eq!(half.wait(WAIT).unwrap(), 0.5);
    let Err(Error::TaskFailed(f)) = nan.wait(WAIT) else {
        panic!("a NaN output must fail the task");
    };
    assert_eq!(f.errors.len(), 1, "a permanent failure, not retried");
    assert_eq!(f.errors[0].kind, taskspool::AttemptErrorKind::Fatal);
    for part in ["test.ratio", "does not read back", "`f64`", "null", "NaN"] {
        assert!(f.message.contains(part), "{part:?} not in {}", f.message);
    }
    assert!(matches!(nan.try_get(), Err(Error::TaskFailed(_))));
}

/// Arguments that would not read back are refused at enqueue, and a batch holding one
/// stores nothing.
#[test]
fn arguments_that_would_not_read_back_are_refused_at_enqueue() {
    let spool = fresh_spool();
    let err = spool
        .enqueue(Ratio {
            num: f64::NAN,
            den: 1.0,
        })
        .unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    for part in ["test.ratio", "do not read back", "`num`", "NaN"] {
        assert!(err.to_string().contains(part), "{part:?} not in {err}");
    }
    let batch = [1.0, f64::INFINITY].map(|den| Ratio { num: 1.0, den });
    assert!(matches!(spool.enqueue_many(batch), Err(Error::Json(_))));
    assert_eq!(spool.stats().unwrap().total(), 0);
    // A `null` that reads back is fine.
    spool.enqueue(MaybeNull { value: None }).unwrap();
}

/// Arguments whose JSON holds a `null` that reads back.
#[derive(serde::Serialize, serde::Deserialize)]
struct MaybeNull {
    value: Option<f64>,
}

impl taskspool::Task for MaybeNull {
    const NAME: &'static str = "test.maybe_null";
    type Output = ();
    fn run(self, _ctx: &taskspool::Context) -> Result<(), taskspool::TaskError> {
        Ok(())
    }
}

/// Another view of `test.add`: the same name, a narrower output type.
#[derive(serde::Serialize, serde::Deserialize)]
struct AddAsU32;

impl taskspool::Task for AddAsU32 {
    const NAME: &'static str = "test.add";
    type Output = u32;
    fn run(self, _ctx: &taskspool::Context) -> Result<u32, taskspool::TaskError> {
        Ok(0)
    }
}

#[test]
fn a_handle_whose_output_type_does_not_fit_reports_a_json_error() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let id = spool.enqueue(Add { a: -5, b: 0 }).unwrap().id();
    spool.worker().register::<Add>().drain().unwrap();
    // The same task name, but an output of u32; -5 does not fit.
    let err = spool.handle::<AddAsU32>(id).try_get().unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // The right type still reads it.
    assert_eq!(spool.handle::<Add>(id).try_get().unwrap(), Some(-5));
}

/// A handle built for another task type names both task names instead of failing to decode
/// (or worse, decoding a result that happens to fit).
#[test]
fn a_handle_for_another_task_type_names_both_tasks() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let id = spool.enqueue(Add { a: 5, b: 0 }).unwrap().id();
    let wrong = spool.handle::<Ghost>(id);
    for err in [
        wrong.try_get().unwrap_err(),
        wrong.wait(Duration::ZERO).unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::WrongTask { id: found, requested, stored }
                if *found == id && requested == "test.ghost" && stored == "test.add"),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.to_string()
                .contains("is a `test.add` task, not a `test.ghost` one"),
            "{err}"
        );
    }
    // Also once the task has succeeded, with an output Ghost's type could decode.
    spool.worker().register::<Add>().drain().unwrap();
    assert!(matches!(wrong.try_get(), Err(Error::WrongTask { .. })));
}

/// Echoes its (large) argument back.
#[derive(serde::Serialize, serde::Deserialize)]
struct Echo {
    text: String,
}

impl taskspool::Task for Echo {
    const NAME: &'static str = "test.echo";
    type Output = String;
    fn run(self, _ctx: &taskspool::Context) -> Result<String, taskspool::TaskError> {
        Ok(self.text)
    }
}

#[test]
fn large_arguments_and_results_round_trip() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let text: String = (0..1_000_000u32)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()))
        .chain("ünïcødé ✓".chars())
        .collect();
    let handle = spool.enqueue(Echo { text: text.clone() }).unwrap();
    spool.worker().register::<Echo>().drain().unwrap();
    assert_eq!(handle.try_get().unwrap().as_deref(), Some(text.as_str()));
}

#[test]
fn many_concurrent_waiters_all_see_their_results() {
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(4)
        .register::<Add>()
        .start()
        .unwrap();
    let handles = spool
        .enqueue_many((0..200).map(|a| Add { a, b: 0 }))
        .unwrap();
    let expected: Vec<(i64, _)> = (0..200).zip(handles).collect();
    std::thread::scope(|s| {
        for chunk in expected.chunks(50) {
            s.spawn(move || {
                for (value, h) in chunk {
                    assert_eq!(h.wait(WAIT).unwrap(), *value);
                }
            });
        }
    });
    worker.shutdown(WAIT).unwrap();
}

/// Read-your-writes under concurrency: the writer keeps acknowledged groups in its open
/// transaction until a reader needs them, so every thread that enqueues and at once reads its
/// task back (while other threads enqueue, workers complete tasks and `stats` is polled) must
/// find it, never `NotFound`; and every result a `wait` returns is readable with `try_get`.
#[test]
fn every_acknowledged_task_is_readable_at_once_while_others_write() {
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(2)
        .register::<Add>()
        .start()
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..4i64 {
            let spool = spool.clone();
            s.spawn(move || {
                for i in 0..150i64 {
                    let handle = spool.enqueue(Add { a: t, b: i }).unwrap();
                    let status = spool.status(handle.id()).unwrap();
                    assert_eq!(status.id, handle.id());
                    if i % 10 == 0 {
                        assert_eq!(handle.wait(WAIT).unwrap(), t + i);
                        assert_eq!(handle.try_get().unwrap(), Some(t + i));
                    }
                }
            });
        }
        let spool = spool.clone();
        s.spawn(move || {
            for _ in 0..200 {
                let stats = spool.stats().unwrap();
                assert!(stats.total() <= 600);
            }
        });
    });
    let total = spool.stats().unwrap().total();
    assert_eq!(total, 600);
    worker.shutdown(WAIT).unwrap();
}

/// `stats` shows how many of a pool's threads run an attempt now.
#[test]
fn pool_stats_count_busy_threads() {
    let key = unique("busy");
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(3)
        .register::<Gated>()
        .start()
        .unwrap();
    assert_eq!(spool.stats().unwrap().pools[0].busy, 0);
    let handles: Vec<_> = (0..2)
        .map(|value| {
            spool
                .enqueue(Gated {
                    gate: key.clone(),
                    wait: true,
                    work_ms: 0,
                    value,
                })
                .unwrap()
        })
        .collect();
    gate(&key).wait_started(2);
    let pool = &spool.stats().unwrap().pools[0];
    assert_eq!((pool.concurrency, pool.busy), (3, 2));
    gate(&key).open();
    for h in handles {
        h.wait(WAIT).unwrap();
    }
    eventually("the threads are idle again", || {
        spool.stats().unwrap().pools[0].busy == 0
    });
    worker.shutdown(WAIT).unwrap();
}
