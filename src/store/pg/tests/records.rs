//! A new task as its row and record: the options a user gives end up where the engine reads
//! them, and the record reads back (and refuses what a newer build appended).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::claim;
use super::{Scratch, server};
use crate::clock::to_system_time;
use crate::context::Context;
use crate::model::{AttemptErrorKind, TaskState};
use crate::options::{Options, Unique};
use crate::retry::RetryPolicy;
use crate::spool::new_task;
use crate::store::pg::claim::{Hold, insert};
use crate::store::pg::complete::{Ending, Report, complete, promote_due};
use crate::store::pg::lease::{note_started, register_process};
use crate::store::pg::read;
use crate::store::pg::record::{PgRecord, new_row};
use crate::task::Task;
use crate::task_error::TaskError;

#[derive(Serialize, Deserialize)]
struct Mail {
    to: String,
}

impl Task for Mail {
    const NAME: &'static str = "mail.send";
    type Output = ();
    fn run(self, _ctx: &Context) -> Result<(), TaskError> {
        Ok(())
    }
}

fn mail() -> Mail {
    Mail { to: "a@b.c".into() }
}

#[test]
fn options_become_columns_and_record_and_the_record_reads_back() {
    let options = Options::new()
        .queue("mail")
        .priority(7)
        .max_retries(5)
        .retry_policy(RetryPolicy::fixed(Duration::from_secs(2)))
        .countdown(Duration::from_secs(60))
        .time_limit(Duration::from_secs(30))
        .limit_key("tenant-1");
    let task = new_task(mail(), options, 1_000_000).unwrap();
    let row = new_row(&task, 1_000_000).unwrap();
    assert_eq!(
        (row.name.as_str(), row.queue.as_str()),
        ("mail.send", "mail")
    );
    assert_eq!((row.priority, row.max_retries), (7, 5));
    assert_eq!(
        (row.ready, row.due_at_ms),
        (false, 1_060_000),
        "a countdown: scheduled"
    );
    assert_eq!(row.payload, br#"{"to":"a@b.c"}"#);
    let record = PgRecord::decode(&row.record).unwrap();
    assert_eq!(record.retry, RetryPolicy::fixed(Duration::from_secs(2)));
    assert_eq!(record.enqueued_at_ms, 1_000_000);
    assert_eq!(record.time_limit_ms, Some(30_000));
    assert_eq!(record.limit_key.as_deref(), Some("tenant-1"));
    // Bytes a newer build appended are refused, not misread.
    let mut newer = row.record.clone();
    newer.push(1);
    assert!(PgRecord::decode(&newer).is_err());
    // A unique key's period runs from the enqueue.
    let period = Options::new().unique_with("k", Unique::For(Duration::from_secs(60)));
    let unique = new_task(mail(), period, 1_000).unwrap();
    let row = new_row(&unique, 1_000).unwrap();
    assert_eq!(row.unique, Some(("k".to_string(), Hold::Until(61_000))));
}

#[test]
fn a_task_with_a_countdown_waits_in_the_table_until_it_is_due() {
    let Some(url) = server("a_task_with_a_countdown_waits_in_the_table_until_it_is_due") else {
        return;
    };
    let scratch = Scratch::migrated(url, "records");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let now = 1_000_000;
    let later = new_task(
        mail(),
        Options::new().countdown(Duration::from_secs(5)),
        now,
    )
    .unwrap();
    let at_once = new_task(mail(), Options::new(), now).unwrap();
    let rows = [
        new_row(&later, now).unwrap(),
        new_row(&at_once, now).unwrap(),
    ];
    let ids = insert(&mut db, schema, &rows).unwrap();
    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let pairs = vec![("default".to_string(), "mail.send".to_string())];
    let first = claim(&mut db, schema, &pairs, 10, (me, 0)).unwrap();
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(
        promote_due(&mut db, schema, now + 5_000).unwrap(),
        (1, None)
    );
    let second = claim(&mut db, schema, &pairs, 10, (me, 0)).unwrap();
    assert_eq!(second[0].id, ids[0]);
    assert_eq!(second[0].payload, br#"{"to":"a@b.c"}"#);
    assert_eq!(
        PgRecord::decode(&second[0].record).unwrap().enqueued_at_ms,
        now
    );
}

#[test]
fn a_tasks_status_shows_its_options_history_arguments_and_output() {
    let Some(url) = server("a_tasks_status_shows_its_options_history_arguments_and_output") else {
        return;
    };
    let scratch = Scratch::migrated(url, "status");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let now = 1_000_000;
    let options = Options::new()
        .priority(4)
        .max_retries(2)
        .expires(Duration::from_secs(3600));
    let task = new_task(mail(), options, now).unwrap();
    let id = insert(&mut db, schema, &[new_row(&task, now).unwrap()]).unwrap()[0];
    let status = read::status(&mut db, schema, id).unwrap();
    assert_eq!(status.state, TaskState::Ready);
    assert_eq!(
        (status.priority, status.max_retries, status.attempts),
        (4, 2, 0)
    );
    assert_eq!(status.enqueued_at, to_system_time(now));
    assert_eq!(status.expires_at, Some(to_system_time(now + 3_600_000)));
    assert_eq!(status.arguments, Some(serde_json::json!({"to": "a@b.c"})));
    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let pairs = vec![("default".to_string(), "mail.send".to_string())];
    claim(&mut db, schema, &pairs, 1, (me, 0)).unwrap();
    note_started(&mut db, schema, &[(id, 1)], now + 10).unwrap();
    let failed = Ending::Failed {
        kind: AttemptErrorKind::Error,
        message: "smtp said no".into(),
        retry_at_ms: Some(now + 20),
    };
    complete(&mut db, schema, (id, 1, me), now + 15, Report::of(&failed)).unwrap();
    promote_due(&mut db, schema, now + 20).unwrap();
    claim(&mut db, schema, &pairs, 1, (me, 0)).unwrap();
    note_started(&mut db, schema, &[(id, 2)], now + 30).unwrap();
    let ok = Ending::Succeeded {
        output: br#"{"sent":true}"#.to_vec(),
        follow_ups: Vec::new(),
    };
    complete(&mut db, schema, (id, 2, me), now + 40, Report::of(&ok)).unwrap();
    let status = read::status(&mut db, schema, id).unwrap();
    assert_eq!((status.state, status.attempts), (TaskState::Succeeded, 2));
    assert_eq!(status.started_at, Some(to_system_time(now + 30)));
    assert_eq!(status.finished_at, Some(to_system_time(now + 40)));
    assert_eq!(status.output, Some(serde_json::json!({"sent": true})));
    assert_eq!(
        status.arguments, None,
        "a success's output replaces its arguments"
    );
    assert_eq!(status.errors.len(), 1);
    assert_eq!(
        (status.errors[0].attempt, status.errors[0].kind),
        (1, AttemptErrorKind::Error)
    );
    assert_eq!(status.errors[0].message, "smtp said no");
    assert_eq!(status.errors[0].at, to_system_time(now + 15));
    assert!(matches!(
        read::status(&mut db, schema, 999_999),
        Err(crate::error::Error::NotFound(_))
    ));
}
