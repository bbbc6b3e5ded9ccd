//! Schedules declared and fired by several processes at once, against a real server.

use std::time::Duration;

use super::{Scratch, server};
use crate::options::Options;
use crate::schedule::{MisfirePolicy, Schedule, ScheduleDef};
use crate::store::pg::schedules::{declare, fire_due, list, remove, run_now, set_paused};
use crate::store::schedules::ScheduleRecord;

fn every_second(payload: &str) -> ScheduleDef {
    let template = Options::new().template().unwrap();
    ScheduleDef::new(
        Schedule::every(Duration::from_secs(1)).misfire(MisfirePolicy::CatchUp { max: 10 }),
        "report",
        payload.as_bytes().to_vec(),
        template,
    )
}

#[test]
fn fires_raced_by_four_processes_are_made_once_each() {
    let Some(url) = server("fires_raced_by_four_processes_are_made_once_each") else {
        return;
    };
    let scratch = Scratch::migrated(url, "fires");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    // Every process declares it at start: the first declaration stores it, the same one
    // again (later, from another process) changes nothing — not even its next fire.
    assert!(declare(&mut db, schema, "tick", every_second("{}"), 1_000).unwrap());
    assert!(
        !declare(
            &mut scratch.client(),
            schema,
            "tick",
            every_second("{}"),
            5_500
        )
        .unwrap()
    );
    assert_eq!(
        fire_due(&mut db, schema, 1_999).unwrap(),
        (vec![], Some(2_000))
    );
    // At 5.5 s, four processes fire at once: the catch-up fires (2, 3, 4, 5 s) are made
    // once in all.
    let made: Vec<Vec<u64>> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| fire_due(&mut scratch.client(), schema, 5_500).unwrap().0))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(made.iter().map(Vec::len).sum::<usize>(), 4, "{made:?}");
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
    assert_eq!((count("tasks"), count("schedule_fires")), (4, 4));
    let fires: Vec<i64> = db
        .query(
            &format!(
                "SELECT fire_ms FROM {}.schedule_fires ORDER BY fire_ms",
                schema.quoted()
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(fires, [2_000, 3_000, 4_000, 5_000]);
    assert_eq!(
        fire_due(&mut db, schema, 5_999).unwrap(),
        (vec![], Some(6_000))
    );
    // A changed task, same timing: the next fire stays; a fire time made once is never
    // made again, even by a schedule set back to it.
    assert!(declare(&mut db, schema, "tick", every_second("{\"v\":2}"), 5_999).unwrap());
    assert_eq!(fire_due(&mut db, schema, 5_999).unwrap().1, Some(6_000));
    let q = schema.quoted();
    let stored: Vec<u8> = db
        .query_one(
            &format!("SELECT record FROM {q}.schedules WHERE name = 'tick'"),
            &[],
        )
        .unwrap()
        .get(0);
    let mut set_back = ScheduleRecord::decode(&stored).unwrap();
    set_back.next_fire_ms = Some(5_000);
    db.execute(
        &format!("UPDATE {q}.schedules SET next_fire_ms = 5000, record = $1 WHERE name = 'tick'"),
        &[&set_back.encode().unwrap()],
    )
    .unwrap();
    let (again, _) = fire_due(&mut db, schema, 5_999).unwrap();
    assert!(again.is_empty(), "5,000 was fired already: {again:?}");
    assert_eq!(count("tasks"), 4);
}

#[test]
fn a_schedule_is_paused_resumed_run_now_and_removed() {
    let Some(url) = server("a_schedule_is_paused_resumed_run_now_and_removed") else {
        return;
    };
    let scratch = Scratch::migrated(url, "schedule_ops");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    declare(&mut db, schema, "tick", every_second("{}"), 1_000).unwrap();
    assert!(set_paused(&mut db, schema, "tick", true, 1_500).unwrap());
    assert!(
        !set_paused(&mut db, schema, "tick", true, 1_500).unwrap(),
        "already paused"
    );
    assert_eq!(
        fire_due(&mut db, schema, 9_000).unwrap().0,
        Vec::<u64>::new(),
        "paused: no fires"
    );
    assert!(list(&mut db, schema).unwrap()[0].paused);
    // Resumed at 9.5 s: from the next fire after then (a second on); what was missed is
    // not run.
    assert!(set_paused(&mut db, schema, "tick", false, 9_500).unwrap());
    assert_eq!(
        fire_due(&mut db, schema, 10_499).unwrap(),
        (vec![], Some(10_500))
    );
    let (fired, next) = fire_due(&mut db, schema, 10_500).unwrap();
    assert_eq!((fired.len(), next), (1, Some(11_500)));
    // Run now: one fire at now, the timing left as it was.
    assert!(run_now(&mut db, schema, "tick", 10_600).unwrap());
    assert_eq!(
        fire_due(&mut db, schema, 11_499).unwrap(),
        (vec![], Some(11_500))
    );
    let info = &list(&mut db, schema).unwrap()[0];
    assert_eq!(info.name, "tick");
    assert!(matches!(
        set_paused(&mut db, schema, "nope", true, 0),
        Err(crate::error::Error::ScheduleNotFound(_))
    ));
    assert!(remove(&mut db, schema, "tick").unwrap());
    assert!(!remove(&mut db, schema, "tick").unwrap());
    assert!(list(&mut db, schema).unwrap().is_empty());
}
