//! Lifecycle events (`Spool::events`): every change of a task's life and every schedule fire,
//! once it is durable, in the order it happened; a subscriber that does not keep up misses
//! events and hears how many, and never holds the spool back.

use std::time::Duration;

use serde_json::json;
use taskspool::{Error, Event, Events, Options, Schedule, TaskEvent};

use super::common::*;

/// The events buffered now (the writer publishes a group's events before its answers, so
/// once a call returns its events are there).
fn buffered(events: &mut Events) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv()).collect()
}

/// An event's kind and task, for comparing lives.
fn brief(event: &Event) -> (String, u64, u32) {
    let (kind, task): (&str, &TaskEvent) = match event {
        Event::Enqueued(t) => ("enqueued", t),
        Event::Started(t) => ("started", t),
        Event::Succeeded(t) => ("succeeded", t),
        Event::Failed { task, .. } => ("failed", task),
        Event::Retried { task, .. } => ("retried", task),
        Event::Expired(t) => ("expired", t),
        Event::Revoked(t) => ("revoked", t),
        other => panic!("not a task event: {other:?}"),
    };
    (kind.to_string(), task.id.as_u64(), task.attempt)
}

/// A task that fails once and then succeeds: enqueued, started, retried (with its error and
/// due time), started again, succeeded — each with its attempt.
#[test]
fn a_task_life_is_told_in_order() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let mut events = spool.events();
    let log = unique("events-life");
    let handle = spool
        .enqueue(Scripted::new(
            &log,
            [Step::RetryAfterSecs(30), Step::Succeed],
        ))
        .unwrap();
    let worker = spool.worker().register::<Scripted>();
    worker.drain().unwrap();
    clock.advance(Duration::from_secs(30));
    eventually("the retry is due", || {
        worker.drain().unwrap();
        handle.try_get().unwrap().is_some()
    });
    let seen = buffered(&mut events);
    let id = handle.id().as_u64();
    let lives: Vec<(String, u64, u32)> = seen.iter().map(brief).collect();
    let want = [
        ("enqueued", 0),
        ("started", 1),
        ("retried", 1),
        ("started", 2),
        ("succeeded", 2),
    ];
    let want: Vec<(String, u64, u32)> = want.iter().map(|&(k, a)| (k.to_string(), id, a)).collect();
    assert_eq!(lives, want);
    match &seen[2] {
        Event::Retried {
            task,
            error,
            due_at,
        } => {
            assert_eq!(error, "come back in 30s");
            assert_eq!(*due_at, task.at + Duration::from_secs(30));
            assert_eq!((&*task.name, &*task.queue), ("test.scripted", "default"));
        }
        other => panic!("{other:?}"),
    }
}

/// Failures, expiries, revokes and schedule fires each have their event.
#[test]
fn failures_expiries_revokes_and_fires_are_told() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let mut events = spool.events();
    let log = unique("events-ends");
    let failing = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Fail]),
            Options::new().max_retries(0),
        )
        .unwrap();
    let expiring = spool
        .enqueue_with(
            Add { a: 1, b: 1 },
            Options::new()
                .countdown(Duration::from_secs(10))
                .expires(Duration::from_secs(20)),
        )
        .unwrap();
    let revoked = spool.enqueue(Ghost { n: 1 }).unwrap();
    spool.revoke(revoked.id()).unwrap();
    spool.worker().register::<Scripted>().drain().unwrap();
    spool
        .schedule(
            "tick",
            Schedule::every(Duration::from_secs(60)),
            Ghost { n: 2 },
        )
        .unwrap();
    let mut seen = buffered(&mut events);
    clock.advance(Duration::from_secs(60));
    eventually("the schedule fired and the expiry passed", || {
        seen.extend(buffered(&mut events));
        seen.iter()
            .any(|e| matches!(e, Event::ScheduleFired { .. }))
            && seen.iter().any(|e| matches!(e, Event::Expired(_)))
    });
    let fired = seen
        .iter()
        .find_map(|e| match e {
            Event::ScheduleFired {
                schedule,
                task,
                fire_time,
            } => {
                assert_eq!(schedule, "tick");
                assert_eq!(
                    *fire_time,
                    std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(T0 + 60_000)
                );
                Some(task.as_u64())
            }
            _ => None,
        })
        .unwrap();
    let (f, e, r) = (
        failing.id().as_u64(),
        expiring.id().as_u64(),
        revoked.id().as_u64(),
    );
    let lives: Vec<(String, u64, u32)> = seen
        .iter()
        .filter(|e| !matches!(e, Event::ScheduleFired { .. }))
        .map(brief)
        .collect();
    let want: Vec<(String, u64, u32)> = [
        ("enqueued", f, 0),
        ("enqueued", e, 0),
        ("enqueued", r, 0),
        ("revoked", r, 0),
        ("started", f, 1),
        ("failed", f, 1),
        ("enqueued", fired, 0),
        ("expired", e, 0),
    ]
    .iter()
    .map(|&(k, id, a)| (k.to_string(), id, a))
    .collect();
    assert_eq!(lives, want);
    let failed = seen.iter().find_map(|e| match e {
        Event::Failed { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert_eq!(failed.as_deref(), Some("gave up on attempt 1"));
}

/// A subscriber that reads nothing does not slow an enqueue down or block it: its buffer
/// fills, the rest is dropped for it, and when it reads again it hears how many it missed.
#[test]
fn a_subscriber_that_does_not_read_misses_events_and_hears_how_many() {
    let spool = fresh_spool();
    let mut slow = spool.events_with_buffer(4);
    let mut fast = spool.events_with_buffer(20_000);
    spool
        .enqueue_many((0..10_000).map(|a| Add { a, b: 0 }))
        .unwrap();
    assert_eq!(
        buffered(&mut fast).len(),
        10_000,
        "a big enough buffer misses nothing"
    );
    let first: Vec<u64> = buffered(&mut slow).iter().map(|e| brief(e).1).collect();
    assert_eq!(first, vec![1, 2, 3, 4]);
    let next = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
    let after = buffered(&mut slow);
    assert_eq!(after[0], Event::Lagged { missed: 9_996 });
    assert_eq!(brief(&after[1]).1, next.id().as_u64());
    assert_eq!(after.len(), 2);
}

/// When the spool closes, a subscriber reads what is buffered and then hears `Closed`.
#[test]
fn a_subscription_ends_when_the_spool_closes() {
    let spool = fresh_spool();
    let mut events = spool.events();
    spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    drop(spool);
    assert!(matches!(
        events.recv_timeout(WAIT),
        Ok(Some(Event::Enqueued(_)))
    ));
    assert!(matches!(events.recv_timeout(WAIT), Err(Error::Closed)));
}

/// An event prints as JSON with its kind under `event` and its task's fields beside it.
#[test]
fn an_event_prints_as_json() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let mut events = spool.events();
    let handle = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    let event = buffered(&mut events).remove(0);
    let printed = serde_json::to_value(&event).unwrap();
    assert_eq!(
        printed,
        json!({
            "event": "enqueued",
            "id": handle.id().as_u64(),
            "name": "test.add",
            "queue": "default",
            "attempt": 0,
            "at": "2026-01-01T00:00:00Z",
        })
    );
    let back: Event = serde_json::from_value(printed).unwrap();
    assert_eq!(back, event);
}
