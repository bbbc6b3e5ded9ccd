//! Metrics per (queue, task name): counts since the spool opened, outcomes over recent
//! windows, attempt run times — in `stats` and as Prometheus text.

use std::time::Duration;

use taskspool::{Options, TaskMetrics, TaskState};

use super::common::*;

fn series<'a>(metrics: &'a [TaskMetrics], queue: &str, name: &str) -> &'a TaskMetrics {
    metrics
        .iter()
        .find(|m| m.queue == queue && m.name == name)
        .unwrap_or_else(|| panic!("no series for {queue}/{name} in {metrics:?}"))
}

/// Three tasks succeed, one after a retry, one fails for good: each count, each attempt's
/// run time, and the recent windows, which empty as the clock moves on.
#[test]
fn counts_windows_and_run_times_follow_what_happened() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("metrics");
    for _ in 0..3 {
        spool.enqueue(Scripted::new(&log, [Step::Succeed])).unwrap();
    }
    let retried = spool
        .enqueue(Scripted::new(
            &log,
            [Step::RetryAfterSecs(1), Step::Succeed],
        ))
        .unwrap();
    spool
        .enqueue_with(
            Scripted::new(&log, [Step::Fail]),
            Options::new().max_retries(0),
        )
        .unwrap();
    spool
        .enqueue_with(Add { a: 1, b: 2 }, Options::new().queue("math"))
        .unwrap();
    let worker = spool.worker().register::<Scripted>();
    worker.drain().unwrap();
    clock.advance(Duration::from_secs(1));
    eventually("the retry ran", || {
        worker.drain().unwrap();
        retried.try_get().unwrap().is_some()
    });

    let stats = spool.stats().unwrap();
    let s = series(&stats.metrics, "default", "test.scripted");
    assert_eq!(
        (
            s.enqueued,
            s.succeeded,
            s.failed,
            s.retried,
            s.expired,
            s.revoked
        ),
        (5, 4, 1, 1, 0, 0)
    );
    assert_eq!(s.runtime.count, 6, "every attempt ran once");
    let last = s.runtime.at_most_us.last().unwrap();
    assert_eq!(last.1, 6, "each ran within the largest bound");
    assert!(
        s.runtime.at_most_us.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative"
    );
    assert_eq!((s.last_1m.succeeded, s.last_1m.failed), (4, 1));
    let total = |per_minute: &[taskspool::Outcomes]| {
        per_minute
            .iter()
            .fold((0, 0), |(s, f), o| (s + o.succeeded, f + o.failed))
    };
    assert_eq!(s.per_minute.len(), 15);
    assert_eq!(total(&s.per_minute), (4, 1));
    assert_eq!(
        s.per_minute[14], s.last_1m,
        "the last minute is the newest entry"
    );
    let math = series(&stats.metrics, "math", "test.add");
    assert_eq!(
        (math.enqueued, math.succeeded, math.runtime.count),
        (1, 0, 0)
    );

    clock.advance(Duration::from_secs(120));
    let s = series(&spool.stats().unwrap().metrics, "default", "test.scripted").clone();
    assert_eq!((s.last_1m.succeeded, s.last_1m.failed), (0, 0));
    assert_eq!((s.last_5m.succeeded, s.last_5m.failed), (4, 1));
    assert_eq!(
        total(&s.per_minute),
        (4, 1),
        "two minutes ago is still in the chart"
    );
    assert_eq!(
        (s.per_minute[14].succeeded, s.per_minute[14].failed),
        (0, 0)
    );
    clock.advance(Duration::from_secs(15 * 60));
    let s = series(&spool.stats().unwrap().metrics, "default", "test.scripted").clone();
    assert_eq!((s.last_15m.succeeded, s.last_15m.failed), (0, 0));
    assert_eq!(total(&s.per_minute), (0, 0));
    assert_eq!(s.succeeded, 4, "counts since the open stay");
}

/// A task that expires, one revoked while it waits and one revoked while it runs are each
/// counted where they ended; the attempt a revoke ends still counts as run.
#[test]
fn expiries_and_revokes_are_counted() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let held = unique("metrics-revoked-running");
    let expiring = spool
        .enqueue_with(
            Gated {
                gate: unique("metrics-expired"),
                wait: false,
                work_ms: 0,
                value: 0,
            },
            Options::new().expires(Duration::from_secs(1)),
        )
        .unwrap();
    let waiting = spool
        .enqueue_with(
            Gated {
                gate: unique("metrics-revoked-waiting"),
                wait: false,
                work_ms: 0,
                value: 0,
            },
            Options::new().countdown(Duration::from_secs(60)),
        )
        .unwrap();
    spool.revoke(waiting.id()).unwrap();
    clock.advance(Duration::from_secs(2));
    eventually("the task expired", || {
        state_of(&spool, expiring.id()) == TaskState::Expired
    });
    let worker = spool.worker().register::<Gated>().start().unwrap();
    let running = spool
        .enqueue(Gated {
            gate: held.clone(),
            wait: true,
            work_ms: 0,
            value: 0,
        })
        .unwrap();
    gate(&held).wait_started(1);
    spool.revoke(running.id()).unwrap();
    gate(&held).open();
    eventually("the running task was revoked", || {
        state_of(&spool, running.id()) == TaskState::Revoked
    });
    worker.shutdown(WAIT).unwrap();
    let stats = spool.stats().unwrap();
    let s = series(&stats.metrics, "default", "test.gated");
    assert_eq!(
        (s.enqueued, s.expired, s.revoked, s.succeeded, s.failed),
        (3, 1, 2, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.runtime.count, 1, "the revoked attempt ran");
}

/// The Prometheus text has the state gauges, the counters and the histogram, with label
/// values escaped.
#[test]
fn prometheus_text_has_gauges_counters_and_a_histogram() {
    let spool = fresh_spool();
    let odd = "say \"hi\"\\now";
    spool
        .enqueue_with(Add { a: 1, b: 2 }, Options::new().queue(odd))
        .unwrap();
    spool.enqueue(Add { a: 2, b: 2 }).unwrap();
    spool
        .worker()
        .queues(["default", odd])
        .register::<Add>()
        .drain()
        .unwrap();
    let text = spool.prometheus().unwrap();
    let has = |line: &str| {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        )
    };
    has("# TYPE taskspool_tasks gauge");
    has(r#"taskspool_tasks{queue="default",state="succeeded"} 1"#);
    has(r#"taskspool_tasks{queue="default",state="ready"} 0"#);
    has(r#"taskspool_tasks{queue="say \"hi\"\\now",state="succeeded"} 1"#);
    has(r#"taskspool_queue_paused{queue="default"} 0"#);
    has("# TYPE taskspool_tasks_succeeded_total counter");
    has(r#"taskspool_tasks_succeeded_total{queue="default",task="test.add"} 1"#);
    has(r#"taskspool_tasks_enqueued_total{queue="default",task="test.add"} 1"#);
    has("# TYPE taskspool_attempt_seconds histogram");
    has(r#"taskspool_attempt_seconds_bucket{queue="default",task="test.add",le="+Inf"} 1"#);
    has(r#"taskspool_attempt_seconds_count{queue="default",task="test.add"} 1"#);
    // Every sample line is `name{labels} value` with a number for a value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}
