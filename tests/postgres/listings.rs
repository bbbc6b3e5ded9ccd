//! Listings and bulk requests on PostgreSQL.

use super::*;

#[test]
fn listings_page_by_state_and_bulk_requests_act_on_what_matches() {
    let Some(url) = server("listings_page_by_state_and_bulk_requests_act_on_what_matches") else {
        return;
    };
    let spool = Spool::builder().connect_postgres_temporary(&url).unwrap();
    let ids: Vec<_> = (0..25)
        .map(|n| {
            let queue = if n % 5 == 0 { "slow" } else { "default" };
            spool
                .enqueue_with(
                    Job {
                        n,
                        fail: n % 2 == 1,
                    },
                    Options::new().queue(queue),
                )
                .unwrap()
                .id()
        })
        .collect();
    let worker = spool
        .worker()
        .queues(["default"])
        .register::<Job>()
        .start()
        .unwrap();
    // 20 on `default`: the 10 odd ones fail, the 10 even ones succeed; 5 wait on `slow`.
    wait_for("the default queue to finish", || {
        let s = spool.stats().unwrap();
        let q = s.queues.iter().find(|q| q.name == "default");
        q.is_some_and(|q| q.count(TaskState::Succeeded) + q.count(TaskState::Failed) == 20)
    });
    worker.shutdown(WAIT).unwrap();

    let failed = TaskFilter::new().state(TaskState::Failed);
    let first = spool.tasks(&failed, &Paging::first(4)).unwrap();
    // The odd ones of the default queue, in id order.
    let expected: Vec<_> = (0..25)
        .filter(|n| n % 2 == 1 && n % 5 != 0)
        .map(|n| ids[n])
        .collect();
    assert_eq!(
        first.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        expected[..4]
    );
    assert!(first.tasks.iter().all(|t| t.state == TaskState::Failed));
    assert_eq!(first.tasks[0].errors.len(), 1, "its error is listed");
    assert_eq!(
        first.tasks[0].progress,
        Some(serde_json::json!({ "done": 1 })),
        "the failed attempt's progress is kept"
    );
    let mut all = first.tasks.clone();
    let mut next = first.next;
    while let Some(cursor) = next {
        let page = spool
            .tasks(&failed, &Paging::first(4).after(cursor))
            .unwrap();
        all.extend(page.tasks);
        next = page.next;
    }
    assert_eq!(all.len(), 10, "every failed task, once, across the pages");
    let newest = spool
        .tasks(&failed, &Paging::first(2).newest_first())
        .unwrap();
    assert_eq!(newest.tasks[0].id, *expected.last().unwrap());
    let slow = TaskFilter::new().queue("slow");
    assert_eq!(
        spool.tasks(&slow, &Paging::first(100)).unwrap().tasks.len(),
        5
    );
    assert!(matches!(
        spool.tasks(&slow, &Paging::first(0)),
        Err(Error::InvalidOption(_))
    ));

    // Bulk: the failed ones back to ready, the slow queue revoked.
    assert_eq!(spool.retry_where(failed.clone()).unwrap(), 10);
    assert_eq!(spool.status(expected[0]).unwrap().state, TaskState::Ready);
    let revoked = spool.revoke_where(slow.clone()).unwrap();
    assert_eq!((revoked.revoked, revoked.cancelling), (5, 0));
    let slow_states: Vec<_> = spool
        .tasks(&slow, &Paging::first(100))
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(slow_states, vec![TaskState::Revoked; 5]);
    assert_eq!(
        spool.retry_where(slow).unwrap(),
        5,
        "revoked ones retry too"
    );
}
