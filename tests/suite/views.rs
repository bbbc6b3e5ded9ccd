//! What reads return, as a tool prints them: every view serializes to JSON a person can read
//! (times as RFC 3339 strings, states by name, a task's arguments and output as the JSON
//! stored with it) and reads back to the same value.

use std::time::Duration;

use serde_json::{Value, json};
use taskspool::{
    Error, Failure, MisfirePolicy, Options, Schedule, ScheduleInfo, Stats, TaskStatus,
};

use super::common::*;

/// A pending task shows its arguments; a succeeded one its output, and its arguments are gone.
#[test]
fn a_task_status_prints_as_json_with_its_arguments_then_its_output() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let log = unique("views");
    let handle = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Retry, Step::Succeed]),
            Options::new().countdown(Duration::from_millis(1500)),
        )
        .unwrap();

    let pending = serde_json::to_value(handle.status().unwrap()).unwrap();
    assert_eq!(pending["state"], "scheduled");
    assert_eq!(pending["name"], "test.scripted");
    assert_eq!(pending["enqueued_at"], "2026-01-01T00:00:00Z");
    assert_eq!(pending["due_at"], "2026-01-01T00:00:01.500Z");
    assert_eq!(pending["started_at"], Value::Null);
    assert_eq!(
        pending["arguments"],
        json!({ "log": log, "steps": ["Retry", "Succeed"] })
    );
    assert_eq!(pending["output"], Value::Null);

    clock.advance(Duration::from_secs(2));
    let worker = spool.worker().register::<Scripted>();
    worker.drain().unwrap();
    clock.advance(Duration::from_secs(60));
    worker.drain().unwrap();
    assert_eq!(handle.wait(WAIT).unwrap(), 2);

    let status = handle.status().unwrap();
    let done = serde_json::to_value(&status).unwrap();
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["output"], 2);
    assert_eq!(done["arguments"], Value::Null);
    assert_eq!(done["errors"][0]["kind"], "error");
    assert_eq!(done["errors"][0]["at"], "2026-01-01T00:00:02Z");
    assert_eq!(done["errors"][0]["message"], "try again (attempt 1)");

    let back: TaskStatus = serde_json::from_value(done).unwrap();
    assert_eq!(back, status);
}

/// The final failure carried by `TaskFailed` prints too, with its whole history.
#[test]
fn a_failure_prints_as_json() {
    let spool = fresh_spool();
    let log = unique("views-fail");
    let handle = spool.enqueue(Scripted::new(&log, [Step::Fail])).unwrap();
    spool.worker().register::<Scripted>().drain().unwrap();
    let Err(Error::TaskFailed(failure)) = handle.wait(WAIT) else {
        panic!("the task was scripted to fail");
    };
    let printed = serde_json::to_value(&failure).unwrap();
    assert_eq!(printed["attempts"], 1);
    assert_eq!(printed["message"], "gave up on attempt 1");
    assert_eq!(printed["errors"][0]["kind"], "fatal");
    let back: Failure = serde_json::from_value(printed).unwrap();
    assert_eq!(back, *failure);
}

/// Stats print each queue's counts as a map from state name to count.
#[test]
fn stats_print_counts_by_state_name() {
    let spool = fresh_spool();
    spool.enqueue(Add { a: 1, b: 2 }).unwrap();
    spool
        .enqueue_with(Add { a: 1, b: 2 }, Options::new().queue("mail"))
        .unwrap();
    spool
        .enqueue_with(
            Add { a: 1, b: 2 },
            Options::new()
                .queue("mail")
                .countdown(Duration::from_secs(60)),
        )
        .unwrap();
    let stats = spool.stats().unwrap();
    let printed = serde_json::to_value(&stats).unwrap();
    let mail = printed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "mail")
        .expect("the mail queue is listed");
    assert_eq!(mail["counts"]["ready"], 1);
    assert_eq!(mail["counts"]["scheduled"], 1);
    assert_eq!(mail["counts"]["succeeded"], 0);
    let back: Stats = serde_json::from_value(printed).unwrap();
    assert_eq!(back, stats);
}

/// A schedule lists with its misfire policy by name and its next fire as a date.
#[test]
fn schedules_print_with_their_next_fire() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    spool
        .schedule(
            "nightly",
            Schedule::cron("0 6 * * *")
                .unwrap()
                .tz("Europe/Paris")
                .misfire(MisfirePolicy::RunOnce),
            Add { a: 1, b: 1 },
        )
        .unwrap();
    let listed = spool.schedules().unwrap();
    let printed = serde_json::to_value(&listed).unwrap();
    assert_eq!(printed[0]["name"], "nightly");
    assert_eq!(printed[0]["misfire"], "run_once");
    // 06:00 in Paris on 1 January is 05:00 UTC.
    assert_eq!(printed[0]["next_fire"], "2026-01-01T05:00:00Z");
    let back: Vec<ScheduleInfo> = serde_json::from_value(printed).unwrap();
    assert_eq!(back, listed);
}
