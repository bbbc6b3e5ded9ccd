//! Async handlers (feature `tokio`): `AsyncTask`s registered with `register_async` on a
//! runtime the application gives, beside sync tasks; what revokes, time limits and panics do
//! to their futures; and what happens when the runtime goes away or the worker is shut down
//! from inside it.

#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskspool::{
    AsyncTask, AttemptErrorKind, Context, Error, ErrorKind, Options, Spool, Task, TaskError,
    TaskId, TaskState,
};

const LONG: Duration = Duration::from_secs(20);

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap()
}

/// Sleeps on the runtime's timer, then doubles.
#[derive(Serialize, Deserialize)]
struct Nap {
    ms: u64,
    n: u64,
}

impl AsyncTask for Nap {
    const NAME: &'static str = "nap";
    type Output = u64;
    async fn run(self, _ctx: Context) -> Result<u64, TaskError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(self.n * 2)
    }
}

/// A sync task, to share a pool with async ones.
#[derive(Serialize, Deserialize)]
struct Square(u64);

impl Task for Square {
    const NAME: &'static str = "square";
    type Output = (u64, String);
    fn run(self, _ctx: &Context) -> Result<(u64, String), TaskError> {
        let thread = std::thread::current().name().unwrap_or("").to_string();
        Ok((self.0 * self.0, thread))
    }
}

/// How many attempts of `Gather` are in flight, and the most there were.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
}

/// Waits (asynchronously) until `target` attempts are in flight at once, or 5 s.
#[derive(Serialize, Deserialize)]
struct Gather {
    target: usize,
}

impl AsyncTask for Gather {
    const NAME: &'static str = "gather";
    type Output = bool;
    async fn run(self, ctx: Context) -> Result<bool, TaskError> {
        let flight = ctx.data::<Arc<InFlight>>()?.clone();
        let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        flight.most.fetch_max(now, Ordering::SeqCst);
        let start = Instant::now();
        let mut met = false;
        while start.elapsed() < Duration::from_secs(5) {
            if flight.now.load(Ordering::SeqCst) >= self.target {
                met = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Everyone who saw the target stays until all have seen it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        flight.now.fetch_sub(1, Ordering::SeqCst);
        Ok(met)
    }
}

#[test]
fn concurrency_bounds_the_attempts_in_flight_not_threads() {
    let rt = runtime(2);
    let spool = Spool::temporary().unwrap();
    let flight = Arc::new(InFlight::default());
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .concurrency(50)
        .data(flight.clone())
        .register_async::<Gather>()
        .start()
        .unwrap();
    let handles = spool
        .enqueue_many((0..100).map(|_| Gather { target: 50 }))
        .unwrap();
    for h in &handles {
        assert!(h.wait(LONG).unwrap(), "50 attempts were in flight at once");
    }
    assert_eq!(
        flight.most.load(Ordering::SeqCst),
        50,
        "50 in flight on a 2-thread runtime, and never more than the concurrency"
    );
    worker.shutdown(LONG).unwrap();
}

#[test]
fn sync_and_async_tasks_share_a_pool() {
    let rt = runtime(1);
    let spool = Spool::temporary().unwrap();
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .concurrency(4)
        .register_async::<Nap>()
        .register::<Square>()
        .start()
        .unwrap();
    let nap = spool.enqueue(Nap { ms: 10, n: 21 }).unwrap();
    let square = spool.enqueue(Square(12)).unwrap();
    assert_eq!(nap.wait(LONG).unwrap(), 42);
    let (value, thread) = square.wait(LONG).unwrap();
    assert_eq!(value, 144);
    assert!(
        !thread.starts_with("taskspool"),
        "a sync task of a runtime's pool runs on the runtime's blocking threads, not ours: \
         {thread:?}"
    );
    // Awaited from the runtime as well.
    let again = spool.enqueue(Nap { ms: 1, n: 5 }).unwrap();
    assert_eq!(rt.block_on(again.wait_async(LONG)).unwrap(), 10);
    worker.shutdown(LONG).unwrap();
}

/// Runs until dropped; says when it started and when its future was dropped.
#[derive(Serialize, Deserialize)]
struct Forever;

#[derive(Default)]
struct Seen {
    started: AtomicUsize,
    dropped: AtomicUsize,
}

struct OnDrop(Arc<Seen>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl AsyncTask for Forever {
    const NAME: &'static str = "forever";
    type Output = ();
    async fn run(self, ctx: Context) -> Result<(), TaskError> {
        let seen = ctx.data::<Arc<Seen>>()?.clone();
        let _guard = OnDrop(seen.clone());
        seen.started.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LONG, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A spool with a pool of one place on `rt` that runs `Forever` and `Nap`, and what
/// `Forever` reports.
fn one_place(rt: &tokio::runtime::Runtime) -> (Spool, Arc<Seen>, taskspool::Worker) {
    let spool = Spool::temporary().unwrap();
    let seen = Arc::new(Seen::default());
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .concurrency(1)
        .data(seen.clone())
        .register_async::<Forever>()
        .register_async::<Nap>()
        .start()
        .unwrap();
    (spool, seen, worker)
}

#[test]
fn a_revoke_drops_the_running_future_and_frees_its_place() {
    let rt = runtime(1);
    let (spool, seen, worker) = one_place(&rt);
    let forever = spool.enqueue(Forever).unwrap();
    until("it runs", || seen.started.load(Ordering::SeqCst) == 1);
    assert_eq!(worker.running_tasks(), vec![forever.id()]);
    spool.revoke(forever.id()).unwrap();
    assert!(matches!(forever.wait(LONG), Err(Error::TaskRevoked(_))));
    assert_eq!(
        seen.dropped.load(Ordering::SeqCst),
        1,
        "its future was dropped"
    );
    // The pool's one place is free again.
    assert_eq!(
        spool
            .enqueue(Nap { ms: 1, n: 1 })
            .unwrap()
            .wait(LONG)
            .unwrap(),
        2
    );
    worker.shutdown(LONG).unwrap();
}

#[test]
fn the_hard_time_limit_drops_the_future() {
    let rt = runtime(1);
    let (spool, seen, worker) = one_place(&rt);
    let options = Options::new()
        .time_limit(Duration::from_millis(100))
        .max_retries(0);
    let forever = spool.enqueue_with(Forever, options).unwrap();
    let Err(Error::TaskFailed(failure)) = forever.wait(LONG) else {
        panic!("the attempt ends at its limit");
    };
    assert_eq!(failure.errors[0].kind, AttemptErrorKind::TimeLimit);
    until("its future is dropped", || {
        seen.dropped.load(Ordering::SeqCst) == 1
    });
    assert_eq!(
        spool
            .enqueue(Nap { ms: 1, n: 4 })
            .unwrap()
            .wait(LONG)
            .unwrap(),
        8
    );
    worker.shutdown(LONG).unwrap();
}

/// Stops cleanly at the soft time limit, returning how far it got.
#[derive(Serialize, Deserialize)]
struct Steps;

impl AsyncTask for Steps {
    const NAME: &'static str = "steps";
    type Output = String;
    async fn run(self, ctx: Context) -> Result<String, TaskError> {
        let mut steps = 0u32;
        loop {
            tokio::select! {
                _ = ctx.cancelled() => return Ok(format!("stopped after {steps} steps")),
                _ = tokio::time::sleep(Duration::from_millis(5)) => steps += 1,
            }
        }
    }
}

#[test]
fn the_soft_time_limit_is_seen_by_awaiting_cancelled() {
    let rt = runtime(1);
    let spool = Spool::temporary().unwrap();
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .register_async::<Steps>()
        .start()
        .unwrap();
    let options = Options::new().soft_time_limit(Duration::from_millis(60));
    let out = spool
        .enqueue_with(Steps, options)
        .unwrap()
        .wait(LONG)
        .unwrap();
    assert!(out.starts_with("stopped after "), "{out}");
    worker.shutdown(LONG).unwrap();
}

/// Panics while polled on its first attempt; succeeds on the second. Enqueues a follow-up.
#[derive(Serialize, Deserialize)]
struct Flaky;

impl AsyncTask for Flaky {
    const NAME: &'static str = "flaky";
    type Output = u32;
    async fn run(self, ctx: Context) -> Result<u32, TaskError> {
        tokio::task::yield_now().await;
        if ctx.attempt() == 1 {
            panic!("first attempt of flaky");
        }
        ctx.enqueue(Nap { ms: 0, n: 50 })?;
        Ok(ctx.attempt())
    }
}

#[test]
fn a_panic_in_a_future_is_caught_and_retried_and_a_success_keeps_its_follow_ups() {
    let rt = runtime(2);
    let spool = Spool::temporary().unwrap();
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .register_async::<Flaky>()
        .register_async::<Nap>()
        .start()
        .unwrap();
    let options = Options::new().retry_policy(taskspool::RetryPolicy::immediate());
    let flaky = spool.enqueue_with(Flaky, options).unwrap();
    assert_eq!(flaky.wait(LONG).unwrap(), 2);
    let status = spool.status(flaky.id()).unwrap();
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Panic);
    assert!(status.errors[0].message.contains("first attempt of flaky"));
    until("the follow-up ran", || {
        spool.stats().unwrap().count(TaskState::Succeeded) == 2
    });
    worker.shutdown(LONG).unwrap();
}

#[test]
fn an_async_task_needs_register_async_and_a_runtime() {
    let rt = runtime(1);
    let spool = Spool::temporary().unwrap();
    let err = spool.worker().register::<Nap>().start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("register_async"), "{err}");
    let err = spool.worker().register_async::<Nap>().start().unwrap_err();
    assert!(err.to_string().contains(".runtime(handle)"), "{err}");
    // Enqueueing needs neither: an async task is enqueued like any task.
    let handle = spool.enqueue(Nap { ms: 0, n: 3 }).unwrap();
    let report = spool
        .worker()
        .runtime(rt.handle().clone())
        .register_async::<Nap>()
        .drain()
        .unwrap();
    assert_eq!((report.attempts, report.succeeded), (1, 1));
    assert_eq!(handle.wait(LONG).unwrap(), 6);
}

#[test]
fn dropping_the_runtime_fails_the_running_attempt_and_the_pool_stops_claiming() {
    let rt = runtime(1);
    let (spool, seen, worker) = one_place(&rt);
    let fixed = taskspool::RetryPolicy::immediate();
    let forever = spool
        .enqueue_with(Forever, Options::new().retry_policy(fixed))
        .unwrap();
    until("it runs", || seen.started.load(Ordering::SeqCst) == 1);
    drop(rt);
    assert_eq!(seen.dropped.load(Ordering::SeqCst), 1);
    let status = |id: TaskId| spool.status(id).unwrap();
    until("the attempt is reported", || {
        !status(forever.id()).errors.is_empty()
    });
    let errors = status(forever.id()).errors;
    assert!(
        errors[0].message.contains("runtime shut down"),
        "{errors:?}"
    );
    // Nothing more runs on the pool: the task waits, and so does a new one.
    let nap = spool.enqueue(Nap { ms: 0, n: 1 }).unwrap();
    until("the pool stopped", || worker.running_tasks().is_empty());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status(nap.id()).state, TaskState::Ready);
    assert_eq!(
        status(forever.id()).attempts,
        1,
        "not claimed again by the dead pool"
    );
    worker.shutdown(LONG).unwrap();
    // A pool on a live runtime runs both.
    let rt = runtime(1);
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .data(seen.clone())
        .register_async::<Nap>()
        .start()
        .unwrap();
    assert_eq!(nap.wait(LONG).unwrap(), 2);
    worker.shutdown(LONG).unwrap();
}

/// A task held until the test lets it go.
#[derive(Serialize, Deserialize)]
struct Gate;

impl AsyncTask for Gate {
    const NAME: &'static str = "gate";
    type Output = ();
    async fn run(self, ctx: Context) -> Result<(), TaskError> {
        let open = ctx.data::<Arc<tokio::sync::Notify>>()?.clone();
        ctx.data::<Arc<AtomicBool>>()?.store(true, Ordering::SeqCst);
        open.notified().await;
        Ok(())
    }
}

#[test]
fn shutdown_on_the_runtimes_own_thread_says_to_await_shutdown_async() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spool = Spool::temporary().unwrap();
    let open = Arc::new(tokio::sync::Notify::new());
    let started = Arc::new(AtomicBool::new(false));
    let worker = spool
        .worker()
        .runtime(rt.handle().clone())
        .data(open.clone())
        .data(started.clone())
        .register_async::<Gate>()
        .start()
        .unwrap();
    let gate = spool.enqueue(Gate).unwrap();
    rt.block_on(async {
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let err = worker.shutdown(LONG).unwrap_err();
        let Error::WouldDeadlock(message) = &err else {
            panic!("{err}");
        };
        assert!(message.contains("shutdown_async"), "{message}");
        assert!(message.contains(&gate.id().to_string()), "{message}");
        // The awaited form lets the attempt finish on this thread meanwhile.
        open.notify_one();
        worker.shutdown_async(LONG).await.unwrap();
    });
    assert_eq!(spool.status(gate.id()).unwrap().state, TaskState::Succeeded);
    // A drain on that thread is refused the same way.
    spool.enqueue(Nap { ms: 0, n: 1 }).unwrap();
    let builder = spool
        .worker()
        .runtime(rt.handle().clone())
        .register_async::<Nap>();
    let err = rt.block_on(async { builder.drain() }).unwrap_err();
    assert!(matches!(err, Error::WouldDeadlock(_)), "{err}");
}
