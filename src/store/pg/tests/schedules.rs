//! Schedules declared and fired by several processes at once, against a real server.

use super::claims::row;
use super::{Scratch, server};
use crate::store::pg::schedules::{declare, due, fire};

#[test]
fn a_fire_raced_by_four_processes_is_made_once() {
    let Some(url) = server("a_fire_raced_by_four_processes_is_made_once") else {
        return;
    };
    let scratch = Scratch::migrated(url, "fires");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    // Every process declares it at start: the first declaration stores it, the same one
    // again changes nothing, a changed one takes its next fire.
    assert!(declare(&mut db, schema, "nightly", b"v1", Some(1_000)).unwrap());
    assert!(!declare(&mut scratch.client(), schema, "nightly", b"v1", Some(5_000)).unwrap());
    assert_eq!(due(&mut db, schema, 999).unwrap(), []);
    assert_eq!(
        due(&mut db, schema, 1_000).unwrap(),
        [("nightly".to_string(), 1_000, b"v1".to_vec())]
    );
    let made: Vec<Option<u64>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut db = scratch.client();
                    let task = row("report", "default", 0);
                    fire(&mut db, schema, ("nightly", 1_000), Some(2_000), task).unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(made.iter().flatten().count(), 1, "one fire made: {made:?}");
    let count = |table: &str| -> i64 {
        scratch
            .client()
            .query_one(
                &format!("SELECT count(*) FROM {}.{table}", schema.quoted()),
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!((count("tasks"), count("schedule_fires")), (1, 1));
    assert_eq!(
        due(&mut db, schema, 1_999).unwrap(),
        [],
        "advanced to 2,000"
    );
    // A schedule set back to a fire time already made does not make it again.
    assert!(declare(&mut db, schema, "nightly", b"v2", Some(1_000)).unwrap());
    let task = row("report", "default", 0);
    assert_eq!(
        fire(&mut db, schema, ("nightly", 1_000), Some(2_000), task).unwrap(),
        None
    );
    assert_eq!((count("tasks"), count("schedule_fires")), (1, 1));
    // A fire for a time the schedule is not at changes nothing either.
    let task = row("report", "default", 0);
    assert_eq!(
        fire(&mut db, schema, ("nightly", 7_000), Some(8_000), task).unwrap(),
        None
    );
    assert_eq!(count("tasks"), 1);
}
