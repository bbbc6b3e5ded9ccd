//! Revokes, against a real server: of a waiting task, of a running one whose attempt then
//! returns, and of a running one whose process dies.

use std::time::Duration;

use super::claim;
use super::claims::row;
use super::{Scratch, server};
use crate::model::{Revoke, TaskState};
use crate::store::pg::claim::{Listener, insert};
use crate::store::pg::complete::{Ending, Report, complete, result};
use crate::store::pg::control::revoke;
use crate::store::pg::lease::{note_started, register_process, rescue_expired};

#[test]
fn a_revoke_is_exact_for_waiting_running_and_orphaned_tasks() {
    let Some(url) = server("a_revoke_is_exact_for_waiting_running_and_orphaned_tasks") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "revoke");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let mut done = Listener::for_results(&url, schema).unwrap();
    let ids = insert(
        &mut db,
        schema,
        &[
            row("a", "default", 9),
            row("a", "default", 5),
            row("a", "default", 0),
        ],
    )
    .unwrap();
    let me = register_process(&mut db, schema, Duration::from_millis(200)).unwrap();
    let pairs = vec![("default".to_string(), "a".to_string())];
    // Two run (one started, one only claimed); the third waits.
    let running = claim(&mut db, schema, &pairs, 2, (me, 0)).unwrap();
    assert_eq!(running.len(), 2);
    note_started(&mut db, schema, &[(ids[0], 1)], 10).unwrap();
    // The waiting one ends at once and never runs.
    assert_eq!(
        revoke(&mut db, schema, ids[2], 20).unwrap(),
        Some(Revoke::Revoked)
    );
    assert_eq!(
        done.next(Duration::from_secs(30)).unwrap(),
        Some(ids[2].to_string())
    );
    assert!(
        claim(&mut db, schema, &pairs, 5, (me, 0))
            .unwrap()
            .is_empty()
    );
    // The running ones are asked to stop; their owner hears it.
    let mut stops = Listener::on_stop(&url, schema).unwrap();
    assert_eq!(
        revoke(&mut db, schema, ids[0], 30).unwrap(),
        Some(Revoke::Cancelling)
    );
    assert_eq!(
        revoke(&mut db, schema, ids[1], 30).unwrap(),
        Some(Revoke::Cancelling)
    );
    assert_eq!(
        stops.next(Duration::from_secs(30)).unwrap(),
        Some(ids[0].to_string())
    );
    // One attempt returns a success: the task ends revoked all the same, its output dropped.
    let ok = Ending::Succeeded {
        output: b"1".to_vec(),
        follow_ups: Vec::new(),
    };
    assert_eq!(
        complete(&mut db, schema, (ids[0], 1, me), 40, Report::of(&ok)).unwrap(),
        Some(TaskState::Revoked)
    );
    assert_eq!(
        result(&mut db, schema, ids[0]).unwrap(),
        Some((TaskState::Revoked, None))
    );
    // The other's process dies before it returns: the rescue ends it revoked, not ready.
    std::thread::sleep(Duration::from_millis(400));
    let rescued = rescue_expired(&mut db, schema, 50).unwrap();
    assert_eq!(
        (rescued.revoked, rescued.given_back),
        (vec![ids[1]], vec![])
    );
    assert_eq!(
        result(&mut db, schema, ids[1]).unwrap(),
        Some((TaskState::Revoked, None))
    );
    // Final: a revoke again changes nothing.
    assert_eq!(
        revoke(&mut db, schema, ids[1], 60).unwrap(),
        Some(Revoke::AlreadyFinal(TaskState::Revoked))
    );
    assert_eq!(revoke(&mut db, schema, 999_999, 60).unwrap(), None);
    let kinds: Vec<(i64, i16)> = db
        .query(
            &format!(
                "SELECT task, kind FROM {}.attempt_errors ORDER BY id",
                schema.quoted()
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let revoked_kind = 6;
    assert_eq!(
        kinds,
        [
            (ids[2] as i64, revoked_kind),
            (ids[0] as i64, revoked_kind),
            (ids[1] as i64, revoked_kind)
        ]
    );
}
