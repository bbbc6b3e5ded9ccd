//! A task name means one Rust type in a spool: a second type registered under a taken name —
//! in the same pool or in another pool of the spool — is refused, naming both types, so a
//! task never runs with another type's handler because its JSON happened to fit.

use serde::{Deserialize, Serialize};
use taskspool::{Context, Error, ErrorKind, Task, TaskError};

use super::common::*;

/// Two unrelated types that both claim the name `names.job`, with compatible JSON.
#[derive(Serialize, Deserialize)]
struct Resize {
    n: u32,
}

impl Task for Resize {
    const NAME: &'static str = "names.job";
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.n)
    }
}

#[derive(Serialize, Deserialize)]
struct Delete {
    n: u32,
}

impl Task for Delete {
    const NAME: &'static str = "names.job";
    type Output = u32;
    fn run(self, _ctx: &Context) -> Result<u32, TaskError> {
        Ok(self.n + 1000)
    }
}

fn assert_names_both(err: &Error) {
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(matches!(err, Error::InvalidOption(_)), "{err:?}");
    let message = err.to_string();
    for part in ["`names.job`", "names::Resize", "names::Delete"] {
        assert!(message.contains(part), "{part} not in {message}");
    }
}

#[test]
fn two_types_with_one_name_in_one_pool_are_refused() {
    let spool = fresh_spool();
    let builder = spool.worker().register::<Resize>().register::<Delete>();
    assert_names_both(&builder.drain().unwrap_err());
    assert_names_both(&builder.start().unwrap_err());
}

#[test]
fn two_types_with_one_name_in_two_pools_of_a_spool_are_refused() {
    let spool = fresh_spool();
    let first = spool.worker().register::<Resize>().start().unwrap();
    let err = spool
        .worker()
        .queue("other")
        .register::<Delete>()
        .start()
        .unwrap_err();
    assert_names_both(&err);
    // Nor in a drain; and the name stays claimed after the first pool stops.
    first.shutdown(WAIT).unwrap();
    assert_names_both(&spool.worker().register::<Delete>().drain().unwrap_err());

    // The same type in several pools is what pools are for.
    let again = spool.worker().register::<Resize>().start().unwrap();
    let h = spool.enqueue(Resize { n: 7 }).unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), 7);
    again.shutdown(WAIT).unwrap();
}

#[test]
fn registering_a_type_twice_is_harmless() {
    let spool = fresh_spool();
    let h = spool.enqueue(Resize { n: 3 }).unwrap();
    spool
        .worker()
        .register::<Resize>()
        .register::<Resize>()
        .drain()
        .unwrap();
    assert_eq!(h.wait(WAIT).unwrap(), 3);
}

#[test]
fn another_spool_is_another_namespace() {
    let a = fresh_spool();
    let b = fresh_spool();
    let ha = a.enqueue(Resize { n: 1 }).unwrap();
    let hb = b.enqueue(Delete { n: 1 }).unwrap();
    a.worker().register::<Resize>().drain().unwrap();
    b.worker().register::<Delete>().drain().unwrap();
    assert_eq!((ha.wait(WAIT).unwrap(), hb.wait(WAIT).unwrap()), (1, 1001));
}
