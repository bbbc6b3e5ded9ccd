//! Decode failures: stored arguments that no longer fit the registered type (same NAME,
//! incompatible fields) end the task `Failed` with a `Decode` error naming the task and the
//! field — never a silent drop, never a retry loop — and other tasks keep running.

use serde::{Deserialize, Serialize};
use taskspool::{AttemptErrorKind, Context, Error, Options, Spool, Task, TaskError, TaskState};

use super::common::*;

const SHAPE: &str = "test.shape";

/// What was enqueued (an old deploy).
#[derive(Serialize, Deserialize)]
struct ShapeV1 {
    count: u32,
}

impl Task for ShapeV1 {
    const NAME: &'static str = SHAPE;
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.count)
    }
}

/// A new deploy added a required field.
#[derive(Serialize, Deserialize)]
struct ShapeWithRequiredField {
    count: u32,
    label: String,
}

impl Task for ShapeWithRequiredField {
    const NAME: &'static str = SHAPE;
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.count + u32::try_from(self.label.len()).unwrap())
    }
}

/// A new deploy changed a field's type.
#[derive(Serialize, Deserialize)]
struct ShapeWithOtherType {
    count: String,
}

impl Task for ShapeWithOtherType {
    const NAME: &'static str = SHAPE;
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(u32::try_from(self.count.len()).unwrap())
    }
}

/// A compatible change: the added field has a default.
#[derive(Serialize, Deserialize)]
struct ShapeWithDefaultedField {
    count: u32,
    #[serde(default)]
    extra: u32,
}

impl Task for ShapeWithDefaultedField {
    const NAME: &'static str = SHAPE;
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.count + self.extra + 1000)
    }
}

fn assert_decode_failure(spool: &Spool, id: taskspool::TaskId, field: &str) {
    let status = spool.status(id).unwrap();
    assert_eq!(status.state, TaskState::Failed);
    assert_eq!(status.attempts, 1, "a decode error is not retried");
    assert_eq!(status.errors.len(), 1);
    let e = &status.errors[0];
    assert_eq!(e.kind, AttemptErrorKind::Decode);
    assert!(
        e.message.contains(SHAPE),
        "task name missing: {}",
        e.message
    );
    assert!(e.message.contains(field), "field missing: {}", e.message);
    let Err(Error::TaskFailed(f)) = spool.handle::<ShapeV1>(id).try_get() else {
        panic!("expected TaskFailed");
    };
    assert_eq!(f.errors[0].kind, AttemptErrorKind::Decode);
}

#[test]
fn missing_required_field_fails_with_decode_error_drain() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let old = spool
        .enqueue_with(ShapeV1 { count: 7 }, Options::new().max_retries(5))
        .unwrap();
    let other = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let report = spool
        .worker()
        .register::<ShapeWithRequiredField>()
        .register::<Add>()
        .drain()
        .unwrap();
    assert_eq!((report.attempts, report.succeeded), (2, 1));
    assert_decode_failure(&spool, old.id(), "label");
    assert_eq!(other.try_get().unwrap(), Some(2));
    // New enqueues of the new shape run fine.
    let new = spool
        .enqueue(ShapeWithRequiredField {
            count: 1,
            label: "abc".into(),
        })
        .unwrap();
    spool
        .worker()
        .register::<ShapeWithRequiredField>()
        .drain()
        .unwrap();
    assert_eq!(new.try_get().unwrap(), Some(4));
}

#[test]
fn type_mismatch_fails_with_decode_error_and_the_worker_keeps_going() {
    let spool = fresh_spool();
    let old = spool.enqueue(ShapeV1 { count: 7 }).unwrap();
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<ShapeWithOtherType>()
        .register::<Add>()
        .start()
        .unwrap();
    assert!(matches!(old.wait(WAIT), Err(Error::TaskFailed(_))));
    assert_decode_failure(&spool, old.id(), "count");
    for i in 0..5 {
        assert_eq!(
            spool
                .enqueue(Add { a: i, b: 1 })
                .unwrap()
                .wait(WAIT)
                .unwrap(),
            i + 1
        );
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn a_defaulted_new_field_decodes_old_arguments() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let old = spool.enqueue(ShapeV1 { count: 7 }).unwrap();
    spool
        .worker()
        .register::<ShapeWithDefaultedField>()
        .drain()
        .unwrap();
    assert_eq!(old.try_get().unwrap(), Some(1007));
}
