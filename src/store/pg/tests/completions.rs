//! Completions, retries, due work and results, against a real server.

use std::time::Duration;

use super::claim;
use super::claims::row;
use super::{Scratch, server};
use crate::model::{AttemptErrorKind, TaskState};
use crate::store::pg::claim::{Listener, NewRow, insert};
use crate::store::pg::complete::{Ending, Report, complete, expire_due, promote_due, result};
use crate::store::pg::lease::register_process;

#[test]
fn a_success_is_stored_once_and_only_by_its_own_attempt() {
    let Some(url) = server("a_success_is_stored_once_and_only_by_its_own_attempt") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "complete_ok");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let mut done = Listener::for_results(&url, schema).unwrap();
    let ids = insert(&mut db, schema, &[row("mail", "default", 0)]).unwrap();
    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let other = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let pairs = vec![("default".to_string(), "mail".to_string())];
    let claimed = claim(&mut db, schema, &pairs, 1, (me, 0)).unwrap();
    assert_eq!(claimed[0].payload, br#"{"n":1}"#);
    assert_eq!(
        result(&mut db, schema, ids[0]).unwrap(),
        Some((TaskState::Running, None))
    );
    let ok = Ending::Succeeded {
        output: b"42".to_vec(),
        follow_ups: Vec::new(),
    };
    // Another process, or another attempt, cannot end it.
    assert_eq!(
        complete(&mut db, schema, (ids[0], 1, other), 5, Report::of(&ok)).unwrap(),
        None
    );
    assert_eq!(
        complete(&mut db, schema, (ids[0], 2, me), 5, Report::of(&ok)).unwrap(),
        None
    );
    assert_eq!(
        complete(&mut db, schema, (ids[0], 1, me), 5, Report::of(&ok)).unwrap(),
        Some(TaskState::Succeeded)
    );
    assert_eq!(
        result(&mut db, schema, ids[0]).unwrap(),
        Some((TaskState::Succeeded, Some(b"42".to_vec())))
    );
    assert_eq!(
        done.next(Duration::from_secs(30)).unwrap(),
        Some(ids[0].to_string()),
        "a waiter in any process hears the id"
    );
    // A late second report changes nothing.
    let late = Ending::Succeeded {
        output: b"0".to_vec(),
        follow_ups: Vec::new(),
    };
    assert_eq!(
        complete(&mut db, schema, (ids[0], 1, me), 6, Report::of(&late)).unwrap(),
        None
    );
    assert_eq!(
        result(&mut db, schema, ids[0]).unwrap(),
        Some((TaskState::Succeeded, Some(b"42".to_vec())))
    );
    assert_eq!(result(&mut db, schema, 999_999).unwrap(), None);
}

#[test]
fn a_failure_retries_when_due_until_its_last_attempt_fails_it() {
    let Some(url) = server("a_failure_retries_when_due_until_its_last_attempt_fails_it") else {
        return;
    };
    let scratch = Scratch::migrated(url, "complete_retry");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let once_more = NewRow {
        max_retries: 1,
        ..row("mail", "default", 0)
    };
    let id = insert(&mut db, schema, &[once_more]).unwrap()[0];
    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let pairs = vec![("default".to_string(), "mail".to_string())];
    let failed = |message: &str| Ending::Failed {
        kind: AttemptErrorKind::Error,
        message: message.into(),
        retry_at_ms: Some(2_000),
    };
    claim(&mut db, schema, &pairs, 1, (me, 0)).unwrap();
    assert_eq!(
        complete(
            &mut db,
            schema,
            (id, 1, me),
            1_000,
            Report::of(&failed("timeout"))
        )
        .unwrap(),
        Some(TaskState::Retrying)
    );
    // Not due yet: nothing to claim; the next due time is the retry's.
    assert_eq!(
        promote_due(&mut db, schema, 1_999).unwrap(),
        (0, Some(2_000))
    );
    assert!(
        claim(&mut db, schema, &pairs, 1, (me, 0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(promote_due(&mut db, schema, 2_000).unwrap(), (1, None));
    let again = claim(&mut db, schema, &pairs, 1, (me, 0)).unwrap();
    assert_eq!(again[0].attempt, 2);
    assert_eq!(
        complete(
            &mut db,
            schema,
            (id, 2, me),
            3_000,
            Report::of(&failed("refused"))
        )
        .unwrap(),
        Some(TaskState::Failed),
        "max_retries 1: the second attempt was the last"
    );
    let errors: Vec<(i32, i16, String)> = db
        .query(
            &format!(
                "SELECT attempt, kind, message FROM {}.attempt_errors WHERE task = $1 \
                 ORDER BY attempt",
                schema.quoted()
            ),
            &[&(id as i64)],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        errors,
        [(1, 0, "timeout".to_string()), (2, 0, "refused".to_string())]
    );
    assert_eq!(
        result(&mut db, schema, id).unwrap(),
        Some((TaskState::Failed, None))
    );
}

#[test]
fn a_task_that_expires_before_it_starts_ends_expired_and_is_never_claimed() {
    let Some(url) = server("a_task_that_expires_before_it_starts_ends_expired") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "expiry");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let mut done = Listener::for_results(&url, schema).unwrap();
    let soon = NewRow {
        expires_at_ms: Some(1_000),
        ..row("mail", "default", 9)
    };
    let later = NewRow {
        expires_at_ms: Some(9_000),
        ..row("mail", "default", 0)
    };
    let ids = insert(&mut db, schema, &[soon, later]).unwrap();
    assert_eq!(
        expire_due(&mut db, schema, 999).unwrap(),
        (vec![], Some(1_000))
    );
    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let pairs = vec![("default".to_string(), "mail".to_string())];
    // Past its expiry, the first is not handed out, though it has the higher priority.
    let claimed = claim(&mut db, schema, &pairs, 5, (me, 1_000)).unwrap();
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(
        expire_due(&mut db, schema, 1_000).unwrap(),
        (vec![ids[0]], None)
    );
    assert_eq!(
        result(&mut db, schema, ids[0]).unwrap(),
        Some((TaskState::Expired, None))
    );
    assert_eq!(
        done.next(Duration::from_secs(30)).unwrap(),
        Some(ids[0].to_string())
    );
    let message: String = db
        .query_one(
            &format!(
                "SELECT message FROM {}.attempt_errors WHERE task = $1",
                schema.quoted()
            ),
            &[&(ids[0] as i64)],
        )
        .unwrap()
        .get(0);
    assert!(
        message.starts_with("expired at 1970-01-01T00:00:01"),
        "{message}"
    );
}
