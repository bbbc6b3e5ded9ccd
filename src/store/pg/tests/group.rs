//! Group commit of concurrent enqueues, against a real server.

use std::sync::atomic::Ordering;

use super::claims::row;
use super::{Scratch, server};
use crate::store::pg::group::Grouper;

#[test]
fn concurrent_enqueues_share_transactions_and_each_gets_its_own_ids_in_order() {
    let Some(url) = server("concurrent_enqueues_share_transactions") else {
        return;
    };
    let scratch = Scratch::migrated(url.clone(), "group");
    let grouper = Grouper::start(&url, scratch.schema.clone()).unwrap();
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
