//! Inserts, claims and wake-ups, against a real server.

use std::collections::HashSet;
use std::time::Duration;

use super::claim;
use super::{Scratch, server};
use crate::store::pg::claim::{Listener, NewRow, insert};
use crate::store::pg::lease::register_process;
use crate::store::pg::sql::Sql;

pub(super) fn row(name: &str, queue: &str, priority: u8) -> NewRow {
    NewRow {
        name: name.into(),
        queue: queue.into(),
        priority,
        ready: true,
        due_at_ms: 0,
        max_retries: 3,
        expires_at_ms: None,
        enqueued_at_ms: 0,
        schedule: None,
        payload: br#"{"n":1}"#.to_vec(),
        record: format!("{name}/{queue}/{priority}").into_bytes(),
        unique: None,
        limit_key: None,
    }
}

fn serves(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(q, n)| (q.to_string(), n.to_string()))
        .collect()
}

#[test]
fn a_batch_keeps_its_order_and_claims_take_priority_then_age_across_queues() {
    let Some(url) = server("a_batch_keeps_its_order_and_claims_take_priority_then_age") else {
        return;
    };
    let scratch = Scratch::migrated(url, "claim_order");
    let mut db = scratch.client();
    let owner = register_process(&mut db, &scratch.schema, Duration::from_secs(30)).unwrap();
    let rows = [
        row("mail", "default", 0),    // 1st
        row("mail", "default", 5),    // 2nd
        row("resize", "images", 5),   // 3rd
        row("unknown", "default", 9), // no pool knows it
        row("mail", "default", 5),    // 5th
        row("resize", "images", 0),   // 6th
        row("mail", "other", 9),      // a queue not served
    ];
    let ids = insert(&mut db, &scratch.schema, &rows).unwrap();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids in the batch's order: {ids:?}"
    );
    let pairs = serves(&[("default", "mail"), ("images", "resize")]);
    let first = claim(&mut db, &scratch.schema, &pairs, 3, (owner, 0)).unwrap();
    let order: Vec<u64> = first.iter().map(|c| c.id).collect();
    assert_eq!(
        order,
        [ids[1], ids[2], ids[4]],
        "priority 5 first, then older"
    );
    assert!(first.iter().all(|c| c.attempt == 1));
    assert_eq!(first[1].record, b"resize/images/5");
    let rest = claim(&mut db, &scratch.schema, &pairs, 10, (owner, 0)).unwrap();
    let order: Vec<u64> = rest.iter().map(|c| c.id).collect();
    assert_eq!(order, [ids[0], ids[5]]);
    assert!(
        claim(&mut db, &scratch.schema, &pairs, 10, (owner, 0))
            .unwrap()
            .is_empty()
    );
    // What no pool serves is still there, ready.
    let left: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {}.tasks WHERE state = 1",
                scratch.schema.quoted()
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 2);
}

#[test]
fn concurrent_claimers_never_get_the_same_task() {
    let Some(url) = server("concurrent_claimers_never_get_the_same_task") else {
        return;
    };
    let scratch = Scratch::migrated(url, "claim_race");
    let rows: Vec<NewRow> = (0..2_000)
        .map(|n| row("mail", "default", (n % 10) as u8))
        .collect();
    let ids = insert(&mut scratch.client(), &scratch.schema, &rows).unwrap();
    let pairs = serves(&[("default", "mail")]);
    let claimed: Vec<Vec<u64>> = std::thread::scope(|s| {
        let claimers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut db = scratch.client();
                    let owner = register_process(&mut db, &scratch.schema, Duration::from_secs(30))
                        .unwrap();
                    let mut mine = Vec::new();
                    loop {
                        let got = claim(&mut db, &scratch.schema, &pairs, 16, (owner, 0)).unwrap();
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.iter().map(|c| c.id));
                    }
                })
            })
            .collect();
        claimers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<u64> = claimed.iter().flatten().copied().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a task claimed twice");
    assert_eq!(
        unique,
        ids.into_iter().collect::<HashSet<u64>>(),
        "every task claimed"
    );
    assert!(
        claimed.iter().filter(|c| !c.is_empty()).count() > 1,
        "the claimers shared the work"
    );
}

#[test]
fn a_listener_is_woken_by_an_insert_in_another_connection() {
    let Some(url) = server("a_listener_is_woken_by_an_insert_in_another_connection") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "wake");
    let mut listener = Listener::new(&url, &scratch.schema).unwrap();
    assert!(
        !listener.wait(Duration::from_millis(50)).unwrap(),
        "nothing to wake for yet"
    );
    let woke = std::thread::scope(|s| {
        let waiting = s.spawn(|| listener.wait(Duration::from_secs(30)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let mut db = scratch.client();
        let mut tx = Sql::transaction(&mut db).unwrap();
        insert(&mut tx, &scratch.schema, &[row("mail", "default", 0)]).unwrap();
        tx.commit().unwrap();
        waiting.join().unwrap()
    });
    assert!(woke, "woken by the commit, not by the timeout");
    // Several inserts while nobody waits: the first wait takes what has arrived.
    for _ in 0..3 {
        insert(
            &mut scratch.client(),
            &scratch.schema,
            &[row("mail", "default", 0)],
        )
        .unwrap();
    }
    assert!(listener.wait(Duration::from_secs(30)).unwrap());
    // They are taken together, or the last few with the next waits: never more wake-ups
    // than notifications.
    let extra = (0..4)
        .take_while(|_| listener.wait(Duration::from_millis(50)).unwrap())
        .count();
    assert!(extra < 3, "{extra} wake-ups more for three inserts");
}

/// Claimers on four connections (four processes, to the server) under a concurrency limit
/// of 4 and one per key: at no moment do more run, or two of one key; every task is
/// claimed once and ends; the keyless ones are not held to the per-key limit.
#[test]
fn claimers_in_many_processes_hold_a_concurrency_limit_and_one_per_key_exactly() {
    use crate::flow::{Limit, LimitTarget};
    use crate::store::pg::complete::{Ending, Report, complete};
    use crate::store::pg::flow::set_limit;

    let Some(url) = server("claimers_in_many_processes_hold_a_concurrency_limit") else {
        return;
    };
    let scratch = Scratch::migrated(url, "limit_race");
    let schema = &scratch.schema;
    const TASKS: usize = 300;
    let rows: Vec<NewRow> = (0..TASKS)
        .map(|n| NewRow {
            limit_key: (n % 3 != 0).then(|| format!("k{}", n % 5)),
            ..row("mail", "default", (n % 4) as u8)
        })
        .collect();
    let ids = insert(&mut scratch.client(), schema, &rows).unwrap();
    let limit = Limit::task_named("mail")
        .concurrency(4)
        .unwrap()
        .per_key(1)
        .unwrap();
    let target = LimitTarget::Task("mail".into());
    assert!(set_limit(&mut scratch.client(), schema, &target, Some(&limit)).unwrap());
    let pairs = serves(&[("default", "mail")]);
    let q = schema.quoted();
    let per_key_now = format!(
        "SELECT coalesce(max(n), 0) FROM (
             SELECT count(*) AS n FROM {q}.tasks
             WHERE state = 2 AND limit_key IS NOT NULL GROUP BY limit_key) AS k"
    );
    let claimed: Vec<Vec<u64>> = std::thread::scope(|s| {
        let claimers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut db = scratch.client();
                    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
                    let mut mine = Vec::new();
                    let ok = Ending::Succeeded {
                        output: b"null".to_vec(),
                        follow_ups: Vec::new(),
                    };
                    loop {
                        let got = claim(&mut db, schema, &pairs, 3, (me, 0)).unwrap();
                        let running: i64 = db
                            .query_one(
                                &format!("SELECT count(*) FROM {q}.tasks WHERE state = 2"),
                                &[],
                            )
                            .unwrap()
                            .get(0);
                        assert!(running <= 4, "{running} running under a limit of 4");
                        let per_key: i64 = db.query_one(&per_key_now, &[]).unwrap().get(0);
                        assert!(per_key <= 1, "{per_key} of one key running");
                        if got.is_empty() {
                            let done: i64 = db
                                .query_one(
                                    &format!("SELECT count(*) FROM {q}.tasks WHERE state = 4"),
                                    &[],
                                )
                                .unwrap()
                                .get(0);
                            if done as usize == TASKS {
                                return mine;
                            }
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                        for c in &got {
                            mine.push(c.id);
                            let done = complete(&mut db, schema, (c.id, 1, me), 1, Report::of(&ok));
                            assert!(done.unwrap().is_some());
                        }
                    }
                })
            })
            .collect();
        claimers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<u64> = claimed.iter().flatten().copied().collect();
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a task claimed twice");
    assert_eq!(unique, ids.into_iter().collect::<HashSet<u64>>());
    let parked: i64 = scratch
        .client()
        .query_one(&format!("SELECT count(*) FROM {q}.tasks WHERE parked"), &[])
        .unwrap()
        .get(0);
    assert_eq!(parked, 0, "a task left parked");
}
