//! Invalid options are refused with `InvalidOption` before anything is written.

use std::time::{Duration, SystemTime};

use taskspool::{Error, ErrorKind, Options};

use super::common::*;

fn assert_invalid<T>(result: Result<T, Error>, what: &str) {
    match result {
        Err(e @ Error::InvalidOption(_)) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
        Err(other) => panic!("{what}: expected InvalidOption, got {other:?}"),
        Ok(_) => panic!("{what}: expected InvalidOption, got Ok"),
    }
}

#[test]
fn invalid_enqueue_options_write_nothing() {
    let spool = fresh_spool();
    let first = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
    let before = spool.stats().unwrap();

    let bad = [
        ("priority 10", Options::new().priority(10)),
        ("priority 255", Options::new().priority(255)),
        ("empty queue", Options::new().queue("")),
        ("huge queue name", Options::new().queue("q".repeat(201))),
        ("expiry of zero", Options::new().expires(Duration::ZERO)),
        (
            "expiry in the past",
            Options::new().expires(SystemTime::now() - Duration::from_secs(60)),
        ),
        (
            "expires before due",
            Options::new()
                .countdown(Duration::from_secs(60))
                .expires(Duration::from_secs(30)),
        ),
    ];
    for (what, opts) in bad {
        assert_invalid(spool.enqueue_with(Add { a: 1, b: 1 }, opts.clone()), what);
        assert_invalid(
            spool.enqueue_many_with((0..3).map(|a| Add { a, b: 0 }), opts),
            what,
        );
        assert_eq!(
            spool.stats().unwrap(),
            before,
            "{what}: something was written"
        );
    }
    // No id was used up: the next task gets the next id.
    let next = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
    assert_eq!(next.id().as_u64(), first.id().as_u64() + 1);
    // The queue named in a refused enqueue was not created.
    assert!(spool.stats().unwrap().queue("").is_none());
}

/// What used to be accepted silently (a whitespace queue name, `Duration::MAX` capped as a
/// countdown) is refused, and the message says what is wrong.
#[test]
fn silent_mistakes_are_refused_with_a_reason() {
    let spool = fresh_spool();
    let before = spool.stats().unwrap();
    let far = SystemTime::now() + taskspool::MAX_DELAY + Duration::from_secs(86_400);
    let bad = [
        (
            "queue of spaces",
            Options::new().queue("   "),
            "only whitespace",
        ),
        (
            "queue with a trailing space",
            Options::new().queue("mail "),
            "ends with whitespace",
        ),
        (
            "queue with a newline",
            Options::new().queue("ma\nil"),
            "control character",
        ),
        (
            "countdown of Duration::MAX",
            Options::new().countdown(Duration::MAX),
            "longest accepted delay (MAX_DELAY",
        ),
        (
            "countdown just over MAX_DELAY",
            Options::new().countdown(taskspool::MAX_DELAY + Duration::from_secs(1)),
            "longest accepted delay (MAX_DELAY",
        ),
        (
            "eta beyond MAX_DELAY",
            Options::new().eta(far),
            "eta is more than MAX_DELAY",
        ),
        (
            "expiry beyond MAX_DELAY",
            Options::new().expires(far),
            "leave the expiry out",
        ),
        (
            "relative expiry beyond MAX_DELAY",
            Options::new().expires(Duration::MAX),
            "longest accepted delay",
        ),
        (
            "retry cap beyond MAX_DELAY",
            Options::new().retry_policy(taskspool::RetryPolicy::fixed(Duration::MAX)),
            "retry policy's base",
        ),
    ];
    for (what, opts, says) in bad {
        let err = spool.enqueue_with(Add { a: 1, b: 1 }, opts).unwrap_err();
        assert!(matches!(err, Error::InvalidOption(_)), "{what}: {err:?}");
        assert!(err.to_string().contains(says), "{what}: {err}");
    }
    assert_eq!(spool.stats().unwrap(), before, "something was written");
    // MAX_DELAY itself is accepted.
    spool
        .enqueue_with(
            Add { a: 1, b: 1 },
            Options::new().countdown(taskspool::MAX_DELAY),
        )
        .unwrap();

    // A worker with no queue, or a queue name of spaces.
    let err = spool
        .worker()
        .queues(Vec::<String>::new())
        .register::<Add>()
        .start()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
    assert!(
        err.to_string().contains("queues([]) names no queue"),
        "{err}"
    );
    let err = spool
        .worker()
        .queues(Vec::<String>::new())
        .register::<Add>()
        .drain()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
    let err = spool
        .worker()
        .queue(" ")
        .register::<Add>()
        .drain()
        .unwrap_err();
    assert!(err.to_string().contains("only whitespace"), "{err}");
}

/// Naming one queue with `queue(..)` serves only the queues named, as Celery's `-Q` does.
#[test]
fn naming_a_queue_drops_the_default_one() {
    let spool = fresh_spool();
    let default = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let mail = spool
        .enqueue_with(Add { a: 2, b: 2 }, Options::new().queue("mail"))
        .unwrap();
    let report = spool
        .worker()
        .queue("mail")
        .register::<Add>()
        .drain()
        .unwrap();
    assert_eq!(report.attempts, 1);
    assert_eq!(mail.try_get().unwrap(), Some(4));
    assert_eq!(default.try_get().unwrap(), None);
    spool
        .worker()
        .queue("mail")
        .queue("default")
        .register::<Add>()
        .drain()
        .unwrap();
    assert_eq!(default.try_get().unwrap(), Some(2));
}

#[test]
fn edge_values_are_accepted() {
    let spool = fresh_spool();
    let opts = Options::new()
        .priority(taskspool::MAX_PRIORITY)
        .queue("q".repeat(200))
        .expires(Duration::from_secs(60));
    let h = spool.enqueue_with(Add { a: 1, b: 1 }, opts).unwrap();
    let status = h.status().unwrap();
    assert_eq!(status.priority, 9);
    assert_eq!(status.queue.len(), 200);
    assert!(status.expires_at.is_some());
}

#[test]
fn invalid_worker_settings_are_refused() {
    let spool = fresh_spool();
    assert_invalid(
        spool.worker().concurrency(0).register::<Add>().start(),
        "zero concurrency",
    );
    assert_invalid(spool.worker().start(), "no task types");
    assert_invalid(
        spool.worker().queue("").register::<Add>().start(),
        "empty queue",
    );
    assert_invalid(spool.worker().drain(), "drain without task types");
}

/// A worker's queue names are checked by the same rule as an enqueue's: a name no task could
/// be enqueued under is refused, for a pool and a drain alike.
#[test]
fn a_worker_queue_name_is_checked_like_an_enqueues() {
    let spool = fresh_spool();
    let long = "q".repeat(201);
    assert_invalid(
        spool.enqueue_with(Add { a: 0, b: 0 }, Options::new().queue(long.clone())),
        "enqueue on a 201-byte queue",
    );
    assert_invalid(
        spool.worker().queue(long.clone()).register::<Add>().start(),
        "a pool on a 201-byte queue",
    );
    assert_invalid(
        spool.worker().queue(long).register::<Add>().drain(),
        "a drain of a 201-byte queue",
    );
    let longest = "q".repeat(200);
    let h = spool
        .enqueue_with(Add { a: 1, b: 2 }, Options::new().queue(longest.clone()))
        .unwrap();
    spool
        .worker()
        .queue(longest)
        .register::<Add>()
        .drain()
        .unwrap();
    assert_eq!(h.try_get().unwrap(), Some(3));
}

/// Arguments that cannot be written as JSON when `bad` (a map with non-string keys).
#[derive(serde::Serialize, serde::Deserialize)]
struct MaybeUnencodable {
    bad: bool,
    map: std::collections::BTreeMap<(u8, u8), u8>,
}

impl taskspool::Task for MaybeUnencodable {
    const NAME: &'static str = "test.maybe_unencodable";
    type Output = ();
    fn run(self, _ctx: &taskspool::Context) -> Result<(), taskspool::TaskError> {
        Ok(())
    }
}

impl MaybeUnencodable {
    fn new(bad: bool) -> Self {
        let map = if bad {
            [((1, 2), 3)].into_iter().collect()
        } else {
            Default::default()
        };
        MaybeUnencodable { bad, map }
    }
}

#[test]
fn a_batch_with_one_unencodable_task_stores_none_of_it() {
    let spool = fresh_spool();
    let before = spool.stats().unwrap();
    let err = spool
        .enqueue_many([false, false, true, false].map(MaybeUnencodable::new))
        .unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(spool.stats().unwrap(), before);
    let ok = spool.enqueue(MaybeUnencodable::new(false)).unwrap();
    assert_eq!(ok.id().as_u64(), 1, "no id was used by the refused batch");
}

/// A type whose own defaults put it on a queue, with a priority and no retries.
#[derive(serde::Serialize, serde::Deserialize)]
struct Mail;

impl taskspool::Task for Mail {
    const NAME: &'static str = "test.mail";
    type Output = ();
    fn run(self, _ctx: &taskspool::Context) -> Result<(), taskspool::TaskError> {
        Ok(())
    }
    fn defaults() -> Options {
        Options::new().queue("mail").priority(7).max_retries(0)
    }
}

/// A type whose defaults are invalid.
#[derive(serde::Serialize, serde::Deserialize)]
struct BadDefaults;

impl taskspool::Task for BadDefaults {
    const NAME: &'static str = "test.bad_defaults";
    type Output = ();
    fn run(self, _ctx: &taskspool::Context) -> Result<(), taskspool::TaskError> {
        Ok(())
    }
    fn defaults() -> Options {
        Options::new().priority(12)
    }
}

#[test]
fn type_defaults_apply_and_call_options_override_them_field_by_field() {
    let spool = fresh_spool();
    let plain = spool.enqueue(Mail).unwrap().status().unwrap();
    assert_eq!(
        (plain.queue.as_str(), plain.priority, plain.max_retries),
        ("mail", 7, 0)
    );
    let over = spool
        .enqueue_with(Mail, Options::new().priority(2))
        .unwrap()
        .status()
        .unwrap();
    assert_eq!(
        (over.queue.as_str(), over.priority, over.max_retries),
        ("mail", 2, 0)
    );
    let before = spool.stats().unwrap();
    assert_invalid(spool.enqueue(BadDefaults), "invalid type defaults");
    // A valid call option fixes it.
    assert_eq!(spool.stats().unwrap(), before);
    spool
        .enqueue_with(BadDefaults, Options::new().priority(1))
        .unwrap();
}
