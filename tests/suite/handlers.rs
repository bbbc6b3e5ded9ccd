//! What a handler can reach: the app data its worker was given, and the spool it runs in (to
//! enqueue follow-ups and read statuses) — without either keeping the file open on its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, ErrorKind, Spool, Task, TaskError, TaskId, TaskState};

use super::common::*;

/// App data: a "database" of greetings, and a counter of attempts.
struct Greetings(Vec<(String, String)>);

#[derive(Default)]
struct Attempts(AtomicU32);

/// Looks its language up in the worker's `Greetings` and counts itself in `Attempts`.
#[derive(Serialize, Deserialize)]
struct Greet {
    lang: String,
}

impl Task for Greet {
    const NAME: &'static str = "handlers.greet";
    type Output = String;
    fn run(self, ctx: &Context) -> Result<String, TaskError> {
        ctx.data::<Attempts>()?.0.fetch_add(1, Ordering::SeqCst);
        let greetings = ctx.data::<Greetings>()?;
        greetings
            .0
            .iter()
            .find(|(lang, _)| *lang == self.lang)
            .map(|(_, text)| text.clone())
            .ok_or_else(|| TaskError::fail(format!("no greeting in {}", self.lang)))
    }
}

fn greetings() -> Greetings {
    Greetings(vec![
        ("en".into(), "hello".into()),
        ("fr".into(), "bonjour".into()),
    ])
}

#[test]
fn a_handler_reads_the_app_data_its_worker_was_given() {
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(2)
        .data(greetings())
        .data(Attempts::default())
        .register::<Greet>()
        .start()
        .unwrap();
    let en = spool.enqueue(Greet { lang: "en".into() }).unwrap();
    let fr = spool.enqueue(Greet { lang: "fr".into() }).unwrap();
    assert_eq!(en.wait(WAIT).unwrap(), "hello");
    assert_eq!(fr.wait(WAIT).unwrap(), "bonjour");
    worker.shutdown(WAIT).unwrap();

    // The same in a drain, which can be run again with the same builder and data.
    let drainer = spool
        .worker()
        .data(greetings())
        .data(Attempts::default())
        .register::<Greet>();
    let h = spool.enqueue(Greet { lang: "fr".into() }).unwrap();
    drainer.drain().unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), "bonjour");
    let h = spool.enqueue(Greet { lang: "en".into() }).unwrap();
    drainer.drain().unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), "hello");
}

/// Asking for a type the worker was not given is a retryable error that names the type
/// asked for and the types the worker has: a worker started again with the data still runs
/// the task.
#[test]
fn missing_app_data_is_a_retryable_error_naming_the_type() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let h = spool.enqueue(Greet { lang: "en".into() }).unwrap();
    spool
        .worker()
        .data(Attempts::default())
        .register::<Greet>()
        .drain()
        .unwrap();
    let status = h.status().unwrap();
    assert_eq!(status.state, TaskState::Retrying);
    let message = &status.errors[0].message;
    for part in [
        "handlers.greet",
        "Greetings",
        "which its worker was not given",
        "Attempts",
        "WorkerBuilder::data",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    // Given the data, the retry succeeds.
    clock.advance(Duration::from_secs(3600));
    spool
        .worker()
        .data(greetings())
        .data(Attempts::default())
        .register::<Greet>()
        .drain()
        .unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), "hello");
}

#[test]
fn giving_one_type_of_app_data_twice_is_refused() {
    let spool = fresh_spool();
    let twice = || {
        spool
            .worker()
            .data(Attempts::default())
            .data(Attempts::default())
            .register::<Greet>()
    };
    for err in [twice().drain().unwrap_err(), twice().start().unwrap_err()] {
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("Attempts") && message.contains("twice"),
            "{message}"
        );
    }
}

/// Enqueues a follow-up `Add` through its context and returns the follow-up's id; also reads
/// its own status through the spool.
#[derive(Serialize, Deserialize)]
struct Spawner {
    a: i64,
}

impl Task for Spawner {
    const NAME: &'static str = "handlers.spawner";
    type Output = u64;
    fn run(self, ctx: &Context) -> Result<u64, TaskError> {
        let spool = ctx.spool()?;
        let me = spool.status(ctx.id())?;
        if me.state != TaskState::Running {
            return Err(TaskError::fail(format!("I am {}, not running", me.state)));
        }
        let child = spool.enqueue(Add { a: self.a, b: 1 })?;
        Ok(child.id().as_u64())
    }
}

#[test]
fn a_handler_enqueues_follow_ups_through_its_context() {
    let spool = fresh_spool();
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Spawner>()
        .register::<Add>()
        .start()
        .unwrap();
    let parent = spool.enqueue(Spawner { a: 41 }).unwrap();
    let child = parent.wait(WAIT).unwrap();
    let child = spool.handle::<Add>(TaskId::from_u64(child));
    assert_eq!(child.wait(WAIT).unwrap(), 42);
    worker.shutdown(WAIT).unwrap();

    // In a drain, the follow-up is due at once and runs in the same drain.
    spool.enqueue(Spawner { a: 9 }).unwrap();
    let report = spool
        .worker()
        .register::<Spawner>()
        .register::<Add>()
        .drain()
        .unwrap();
    assert_eq!((report.attempts, report.succeeded), (2, 2));
}

/// What [`Lingerer`] saw when it asked for its spool, by gate key.
static LINGERED: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());

/// Waits for its gate, then asks for the spool.
#[derive(Serialize, Deserialize)]
struct Lingerer {
    gate: String,
}

impl Task for Lingerer {
    const NAME: &'static str = "handlers.lingerer";
    type Output = ();
    fn run(self, ctx: &Context) -> Result<(), TaskError> {
        let g = gate(&self.gate);
        g.enter();
        g.pass();
        let closed = matches!(ctx.spool(), Err(Error::Closed));
        LINGERED.lock().unwrap().push((self.gate, closed));
        Ok(())
    }
}

/// A task still running after its worker's shutdown timed out does not keep the file open:
/// once the spool is dropped, the file opens again, and the task's `ctx.spool()` says
/// `Closed`.
#[test]
fn a_running_task_does_not_keep_its_spool_open() {
    let place = fresh_place();
    let key = unique("linger");
    let spool = place.open(Spool::builder()).unwrap();
    let worker = spool
        .worker()
        .concurrency(1)
        .shutdown_timeout(Duration::ZERO)
        .register::<Lingerer>()
        .start()
        .unwrap();
    let h = spool.enqueue(Lingerer { gate: key.clone() }).unwrap();
    gate(&key).wait_started(1);
    drop(worker);
    drop(spool);
    // The file is free while the task still runs.
    let reopened = place.open(Spool::builder()).unwrap();
    gate(&key).open();
    eventually("the lingering task asked for its spool", || {
        LINGERED.lock().unwrap().iter().any(|(k, _)| *k == key)
    });
    let closed = LINGERED
        .lock()
        .unwrap()
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, closed)| *closed);
    assert_eq!(closed, Some(true));
    // Its outcome could not be reported: it runs again (a lost attempt) on the reopened file.
    assert_eq!(reopened.status(h.id()).unwrap().state, TaskState::Ready);
}

/// A thread waiting for a result wakes with `Closed` when the last spool is dropped, instead
/// of keeping the file open until its timeout.
#[test]
fn a_waiting_handle_wakes_when_its_spool_closes() {
    let place = fresh_place();
    let spool = place.open(Spool::builder()).unwrap();
    let h = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    let waiter = std::thread::spawn(move || h.wait(Duration::from_secs(60)));
    // Give the waiter time to block (if it has not yet, it sees `Closed` all the same).
    std::thread::sleep(Duration::from_millis(50));
    drop(spool);
    let waited = waiter.join().unwrap();
    assert!(matches!(waited, Err(Error::Closed)), "{waited:?}");
    assert_eq!(Error::Closed.kind(), ErrorKind::Closed);
    place.open(Spool::builder()).unwrap();
}
