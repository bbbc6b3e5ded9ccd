//! A new task as its row and record: the options a user gives end up where the engine reads
//! them, and the record reads back (and refuses what a newer build appended).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Scratch, server};
use crate::context::Context;
use crate::options::Options;
use crate::retry::RetryPolicy;
use crate::spool::new_task;
use crate::store::pg::claim::{claim, insert};
use crate::store::pg::complete::promote_due;
use crate::store::pg::lease::register_process;
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
    // What is not stored yet is refused, not dropped.
    let unique = new_task(mail(), Options::new().unique("k"), 0).unwrap();
    assert!(new_row(&unique, 0).is_err());
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
    let first = claim(&mut db, schema, &pairs, 10, me).unwrap();
    assert_eq!(first.iter().map(|c| c.id).collect::<Vec<_>>(), [ids[1]]);
    assert_eq!(
        promote_due(&mut db, schema, now + 5_000).unwrap(),
        (1, None)
    );
    let second = claim(&mut db, schema, &pairs, 10, me).unwrap();
    assert_eq!(second[0].id, ids[0]);
    assert_eq!(second[0].payload, br#"{"to":"a@b.c"}"#);
    assert_eq!(
        PgRecord::decode(&second[0].record).unwrap().enqueued_at_ms,
        now
    );
}
