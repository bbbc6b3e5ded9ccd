//! Enqueueing by task name with JSON arguments (`Spool::enqueue_json`): the task runs with
//! the registered type's handler, with the options given; a bad name is refused before
//! anything is stored; arguments that do not fit the type fail the task with a decode error.

use serde_json::json;
use taskspool::{AttemptErrorKind, Error, Options, TaskState};

use super::common::*;

#[test]
fn a_task_enqueued_by_name_runs_with_its_registered_type() {
    let spool = fresh_spool();
    let id = spool
        .enqueue_json(
            "test.add",
            json!({ "a": 2, "b": 3 }),
            Options::new().priority(7),
        )
        .unwrap();
    let status = spool.status(id).unwrap();
    assert_eq!((status.name.as_str(), status.priority), ("test.add", 7));
    assert_eq!(status.arguments, Some(json!({ "a": 2, "b": 3 })));
    spool.worker().register::<Add>().drain().unwrap();
    assert_eq!(spool.handle::<Add>(id).wait(WAIT).unwrap(), 5);
}

#[test]
fn many_tasks_by_name_are_stored_in_one_call_in_order() {
    let spool = fresh_spool();
    let ids = spool
        .enqueue_many_json(
            "test.add",
            (0..10).map(|a| json!({ "a": a, "b": a })).collect(),
            Options::new(),
        )
        .unwrap();
    assert_eq!(ids.len(), 10);
    assert!(
        spool
            .enqueue_many_json("test.add", Vec::new(), Options::new())
            .unwrap()
            .is_empty()
    );
    spool.worker().register::<Add>().drain().unwrap();
    let outputs: Vec<i64> = ids
        .iter()
        .map(|&id| spool.handle::<Add>(id).wait(WAIT).unwrap())
        .collect();
    assert_eq!(outputs, (0..10).map(|a| 2 * a).collect::<Vec<_>>());
}

#[test]
fn arguments_that_do_not_fit_fail_the_task_with_a_decode_error() {
    let spool = fresh_spool();
    let id = spool
        .enqueue_json(
            "test.add",
            json!({ "a": "two" }),
            Options::new().max_retries(0),
        )
        .unwrap();
    spool.worker().register::<Add>().drain().unwrap();
    let status = spool.status(id).unwrap();
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.errors[0].kind, AttemptErrorKind::Decode);
    assert!(
        status.errors[0].message.contains('a'),
        "{}",
        status.errors[0].message
    );
}

#[test]
fn a_bad_name_is_refused_and_nothing_is_stored() {
    let spool = fresh_spool();
    for name in ["", "tab\there", &"x".repeat(256)] {
        match spool.enqueue_json(name, json!({}), Options::new()) {
            Err(Error::InvalidOption(message)) => {
                assert!(message.contains("task name"), "{message}")
            }
            other => panic!("{name:?}: {other:?}"),
        }
    }
    assert_eq!(spool.stats().unwrap().total(), 0);
}
