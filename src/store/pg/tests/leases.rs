//! Leases and rescues, against a real server: two processes are two connections with a
//! lease each; one stops renewing its lease.

use std::time::Duration;

use super::claim;
use super::claims::row;
use super::{Scratch, server};
use crate::store::pg::claim::{NewRow, insert};
use crate::store::pg::lease::{Rescued, heartbeat, note_started, register_process, rescue_expired};

#[test]
fn an_expired_lease_is_rescued_and_a_renewed_one_never_is() {
    let Some(url) = server("an_expired_lease_is_rescued_and_a_renewed_one_never_is") else {
        return;
    };
    let scratch = Scratch::migrated(url, "leases");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let last_try = NewRow {
        max_retries: 0,
        ..row("mail", "default", 9)
    };
    let ids = insert(
        &mut db,
        schema,
        &[
            last_try,
            row("mail", "default", 5),
            row("mail", "default", 0),
            row("mail", "default", 0),
        ],
    )
    .unwrap();
    let pairs = vec![("default".to_string(), "mail".to_string())];
    // The process that dies: a lease of 250 ms, three attempts claimed, two of them started.
    let dying = register_process(&mut db, schema, Duration::from_millis(250)).unwrap();
    let claimed = claim(&mut db, schema, &pairs, 3, (dying, 0)).unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), &ids[..3]);
    note_started(&mut db, schema, &[(ids[0], 1), (ids[1], 1)], 1_000).unwrap();
    // The process that lives: a lease of 250 ms too, renewed; its one attempt started.
    let mut other = scratch.client();
    let living = register_process(&mut other, schema, Duration::from_millis(250)).unwrap();
    let mine = claim(&mut other, schema, &pairs, 1, (living, 0)).unwrap();
    assert_eq!(mine[0].id, ids[3]);
    note_started(&mut other, schema, &[(ids[3], 1)], 1_000).unwrap();
    // Both leases are fresh: nothing to rescue.
    assert_eq!(
        rescue_expired(&mut other, schema, 2_000).unwrap(),
        Rescued::default()
    );
    // Twice the lease passes; one process renews its lease every 50 ms, the other does not.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(50));
        assert!(heartbeat(&mut other, schema, living).unwrap());
    }
    let rescued = rescue_expired(&mut other, schema, 3_000).unwrap();
    assert_eq!(
        rescued,
        Rescued {
            processes: vec![dying],
            retried: vec![ids[1]],
            failed: vec![ids[0]],
            revoked: vec![],
            given_back: vec![ids[2]],
        }
    );
    let state = |id: u64| -> (i16, i32, Option<i64>) {
        let r = scratch
            .client()
            .query_one(
                &format!(
                    "SELECT state, attempts, owner FROM {}.tasks WHERE id = $1",
                    schema.quoted()
                ),
                &[&(id as i64)],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(state(ids[0]), (5, 1, None), "its last attempt: failed");
    assert_eq!(
        state(ids[1]),
        (1, 1, None),
        "ready again, the lost attempt counted"
    );
    assert_eq!(
        state(ids[2]),
        (1, 0, None),
        "never started: given back uncounted"
    );
    assert_eq!(
        state(ids[3]),
        (2, 1, Some(living as i64)),
        "the living process keeps its own"
    );
    let errors: Vec<(i64, i32, i16)> = db
        .query(
            &format!(
                "SELECT task, attempt, kind FROM {}.attempt_errors ORDER BY task",
                schema.quoted()
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        errors,
        [(ids[0] as i64, 1, 4), (ids[1] as i64, 1, 4)],
        "WorkerLost, code 4"
    );
    // The rescued process learns it at its next heartbeat; a second rescue finds nothing.
    assert!(!heartbeat(&mut db, schema, dying).unwrap());
    assert_eq!(
        rescue_expired(&mut db, schema, 4_000).unwrap(),
        Rescued::default()
    );
    // The rescued attempt is claimed again as attempt 2.
    let again = claim(&mut db, schema, &pairs, 5, (living, 0)).unwrap();
    let attempts: Vec<(u64, u32)> = again.iter().map(|c| (c.id, c.attempt)).collect();
    assert_eq!(attempts, [(ids[1], 2), (ids[2], 1)]);
}
