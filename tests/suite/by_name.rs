//! Enqueueing by task name with JSON arguments (`Spool::enqueue_json`): the task runs with
//! the registered type's handler, with the options given; a bad name is refused before
//! anything is stored; arguments that do not fit the type fail the task with a decode error.

use serde_json::json;
use taskspool::{AttemptErrorKind, Error, Options, Spool, TaskState};

use super::common::*;

#[test]
fn a_task_enqueued_by_name_runs_with_its_registered_type() {
    let spool = Spool::temporary().unwrap();
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
fn arguments_that_do_not_fit_fail_the_task_with_a_decode_error() {
    let spool = Spool::temporary().unwrap();
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
    let spool = Spool::temporary().unwrap();
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
