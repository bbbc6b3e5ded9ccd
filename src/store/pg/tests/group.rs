//! Group commit of concurrent enqueues and of concurrent reports, against a real server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::claim;
use super::claims::row;
use super::{Scratch, server};
use crate::error::{Error, ErrorKind};
use crate::model::TaskState;
use crate::store::pg::claim::insert;
use crate::store::pg::complete::{Ending, result};
use crate::store::pg::completer::{Completer, Done};
use crate::store::pg::group::Grouper;
use crate::store::pg::lease::register_process;

#[test]
fn concurrent_enqueues_share_transactions_and_each_gets_its_own_ids_in_order() {
    let Some(url) = server("concurrent_enqueues_share_transactions") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "group");
    let grouper = Grouper::start(&url, scratch.schema.clone(), None).unwrap();
    let per_thread: Vec<Vec<u64>> = std::thread::scope(|s| {
        let producers: Vec<_> = (0..8)
            .map(|t| {
                let grouper = &grouper;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for n in 0..100 {
                        // Batches of 1 to 3 rows, tagged with their producer and number.
                        let rows = (0..1 + n % 3)
                            .map(|k| {
                                let mut r = row("mail", "default", 0);
                                r.payload = format!("[{t},{n},{k}]").into_bytes();
                                r
                            })
                            .collect();
                        let ids: Vec<u64> = grouper
                            .insert(rows, 0)
                            .unwrap()
                            .into_iter()
                            .map(|(id, _)| id)
                            .collect();
                        assert_eq!(ids.len(), 1 + n % 3);
                        mine.extend(ids);
                    }
                    mine
                })
            })
            .collect();
        producers.into_iter().map(|p| p.join().unwrap()).collect()
    });
    // Each producer's ids ascend (its enqueues are FIFO), and name its own rows.
    let mut db = scratch.client();
    for (t, ids) in per_thread.iter().enumerate() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "producer {t}: {ids:?}");
        let first: Vec<u8> = db
            .query_one(
                &format!(
                    "SELECT payload FROM {}.tasks WHERE id = $1",
                    scratch.schema.quoted()
                ),
                &[&(ids[0] as i64)],
            )
            .unwrap()
            .get(0);
        assert_eq!(first, format!("[{t},0,0]").into_bytes());
    }
    let total: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {}.tasks", scratch.schema.quoted()),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(total, 8 * (34 + 33 * 2 + 33 * 3));
    let counts = grouper.counts();
    assert_eq!(counts.requests.load(Ordering::Relaxed), 800);
    assert!(
        counts.groups.load(Ordering::Relaxed) < 800,
        "eight producers waiting on commits share some: {} groups",
        counts.groups.load(Ordering::Relaxed)
    );
    drop(grouper);
}

/// Reports from eight threads at once share transactions; each caller hears its own answer —
/// a stale report `None`, a report the server refuses its own error — and one refused
/// report in a group costs the others nothing.
#[test]
fn concurrent_reports_share_transactions_and_each_gets_its_own_answer() {
    let Some(url) = server("concurrent_reports_share_transactions") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "completer");
    let schema = &scratch.schema;
    let mut db = scratch.client();
    let ids = insert(&mut db, schema, &vec![row("mail", "default", 0); 400]).unwrap();
    let me = register_process(&mut db, schema, Duration::from_secs(30)).unwrap();
    let pairs = vec![("default".to_string(), "mail".to_string())];
    assert_eq!(
        claim(&mut db, schema, &pairs, 400, (me, 0)).unwrap().len(),
        400
    );
    let completer = Completer::start(&url, schema.clone(), None).unwrap();
    let answers: Vec<(u64, Result<Option<TaskState>, Error>)> = std::thread::scope(|s| {
        let threads: Vec<_> = ids
            .chunks(50)
            .map(|mine| {
                let completer = &completer;
                s.spawn(move || {
                    mine.iter()
                        .map(|&id| {
                            // Every tenth is stale (another attempt); every 25th has a
                            // follow-up the server refuses (a NUL in its queue's name).
                            let attempt = if id % 10 == 0 { 2 } else { 1 };
                            let mut follow_up = row("mail", "default", 0);
                            follow_up.queue = "bad\0queue".into();
                            let follow_ups = if id % 25 == 1 {
                                vec![follow_up]
                            } else {
                                vec![]
                            };
                            let done = Done {
                                attempt: (id, attempt, me),
                                now_ms: 5,
                                ending: Ending::Succeeded {
                                    output: id.to_string().into_bytes(),
                                    follow_ups,
                                },
                                progress: None,
                                returned: "a success".into(),
                                run_us: 0,
                            };
                            (id, completer.complete(done))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    for (id, answer) in &answers {
        let stored = result(&mut db, schema, *id).unwrap().unwrap();
        match answer {
            Ok(None) => {
                assert_eq!(id % 10, 0, "task {id}: only stale reports are discarded");
                assert_eq!(stored.0, TaskState::Running);
            }
            Ok(Some(state)) => {
                assert_eq!(*state, TaskState::Succeeded);
                assert_eq!(
                    stored,
                    (TaskState::Succeeded, Some(id.to_string().into_bytes()))
                );
            }
            Err(e) => {
                assert_eq!(id % 25, 1, "task {id}: {e}");
                assert_eq!(e.kind(), ErrorKind::Storage);
                assert_eq!(
                    stored.0,
                    TaskState::Running,
                    "a refused report changes nothing"
                );
            }
        }
    }
    assert_eq!(answers.iter().filter(|(_, a)| a.is_err()).count(), 400 / 25);
    let (groups, reports) = (&completer.counts().groups, &completer.counts().requests);
    assert_eq!(reports.load(Ordering::Relaxed), 400);
    assert!(
        groups.load(Ordering::Relaxed) < 400,
        "eight threads waiting on commits share some: {} groups",
        groups.load(Ordering::Relaxed)
    );
}
