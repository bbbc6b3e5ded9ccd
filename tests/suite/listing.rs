//! Listings (`Spool::tasks`): the tasks a filter matches, oldest or newest first, a page at a
//! time, each task once, in the state a `status` call reports for it.

use std::time::{Duration, SystemTime};

use taskspool::{
    Error, MAX_PAGE, Options, Paging, Schedule, Spool, TaskFilter, TaskId, TaskPage, TaskState,
    TaskStatus,
};

use super::common::*;

fn ids(page: &TaskPage) -> Vec<u64> {
    page.tasks.iter().map(|t| t.id.as_u64()).collect()
}

/// Every task the filter matches, page by page, in the order asked for.
fn all_pages(spool: &Spool, filter: &TaskFilter, mut paging: Paging) -> Vec<TaskStatus> {
    let mut out = Vec::new();
    loop {
        let page = spool.tasks(filter, &paging).unwrap();
        out.extend(page.tasks);
        match page.next {
            Some(next) => paging = paging.after(next),
            None => return out,
        }
    }
}

/// 25 failed and 75 succeeded tasks: a page of failed ones holds only failed ones, and the
/// pages together hold each once, oldest first or newest first.
#[test]
fn a_state_lists_its_tasks_a_page_at_a_time_in_either_order() {
    let spool = fresh_spool();
    let log = unique("listing");
    let mut failed = Vec::new();
    for i in 0..100 {
        let steps = if i % 4 == 0 {
            Step::Fail
        } else {
            Step::Succeed
        };
        let handle = spool
            .enqueue_with(Scripted::new(&log, [steps]), Options::new().max_retries(0))
            .unwrap();
        if i % 4 == 0 {
            failed.push(handle.id().as_u64());
        }
    }
    spool.worker().register::<Scripted>().drain().unwrap();

    let filter = TaskFilter::new().state(TaskState::Failed);
    let first = spool.tasks(&filter, &Paging::first(10)).unwrap();
    assert_eq!(ids(&first), failed[..10]);
    assert_eq!(first.next, Some(TaskId::from_u64(failed[9])));
    assert!(first.tasks.iter().all(|t| t.state == TaskState::Failed));
    assert_eq!(
        first.tasks[0].errors[0].message, "gave up on attempt 1",
        "a listed task carries its whole status"
    );

    let oldest: Vec<u64> = all_pages(&spool, &filter, Paging::first(10))
        .iter()
        .map(|t| t.id.as_u64())
        .collect();
    assert_eq!(oldest, failed);
    let newest: Vec<u64> = all_pages(&spool, &filter, Paging::first(7).newest_first())
        .iter()
        .map(|t| t.id.as_u64())
        .collect();
    assert_eq!(newest, failed.iter().rev().copied().collect::<Vec<_>>());

    let succeeded = TaskFilter::new().state(TaskState::Succeeded);
    assert_eq!(
        all_pages(&spool, &succeeded, Paging::first(MAX_PAGE)).len(),
        75
    );
    let both = succeeded.state(TaskState::Failed);
    let every: Vec<u64> = all_pages(&spool, &both, Paging::first(33))
        .iter()
        .map(|t| t.id.as_u64())
        .collect();
    assert_eq!(
        every,
        (1..=100).collect::<Vec<_>>(),
        "two states merge by id"
    );
    let last = spool.tasks(&both, &Paging::first(100)).unwrap();
    assert_eq!(
        (last.tasks.len(), last.next),
        (100, None),
        "nothing is left"
    );
}

/// Queue, name, schedule and enqueue-time conditions all hold for every listed task, and
/// every task they match is listed.
#[test]
fn queue_name_schedule_and_time_filters_narrow_the_listing() {
    let clock = manual_clock();
    let spool = manual_spool(&clock);
    let mail = Options::new().queue("mail");
    for a in 0..3 {
        spool.enqueue_with(Add { a, b: 0 }, mail.clone()).unwrap();
        spool.enqueue(Add { a, b: 1 }).unwrap();
    }
    clock.advance(Duration::from_secs(60));
    let late = spool.enqueue_with(Ghost { n: 1 }, mail.clone()).unwrap();
    spool
        .schedule(
            "beat",
            Schedule::every(Duration::from_secs(10)),
            Ghost { n: 2 },
        )
        .unwrap();
    clock.advance(Duration::from_secs(10));
    eventually("the schedule fired", || {
        spool
            .tasks(&TaskFilter::new().schedule("beat"), &Paging::first(10))
            .unwrap()
            .tasks
            .len()
            == 1
    });

    let list = |filter: TaskFilter| -> Vec<(String, String)> {
        all_pages(&spool, &filter, Paging::first(2))
            .into_iter()
            .map(|t| (t.queue, t.name))
            .collect()
    };
    let mail_tasks = list(TaskFilter::new().queue("mail"));
    assert_eq!(mail_tasks.len(), 4);
    assert!(mail_tasks.iter().all(|(q, _)| q == "mail"));
    let ghosts = list(TaskFilter::new().name("test.ghost"));
    assert_eq!(ghosts.len(), 2);
    assert_eq!(
        list(TaskFilter::new().queue("mail").name("test.ghost")).len(),
        1
    );
    assert_eq!(list(TaskFilter::new().queue("nowhere")).len(), 0);
    assert_eq!(list(TaskFilter::new().name("never.enqueued")).len(), 0);
    let from_beat = all_pages(
        &spool,
        &TaskFilter::new().schedule("beat"),
        Paging::first(5),
    );
    assert_eq!(from_beat.len(), 1);
    assert_eq!(from_beat[0].schedule.as_deref(), Some("beat"));

    let t0 = SystemTime::UNIX_EPOCH + Duration::from_millis(T0);
    let first_minute = TaskFilter::new().enqueued_between(t0, t0 + Duration::from_secs(60));
    assert_eq!(list(first_minute).len(), 6);
    let after = TaskFilter::new()
        .enqueued_between(t0 + Duration::from_secs(60), t0 + Duration::from_secs(3600));
    let later: Vec<u64> = all_pages(&spool, &after, Paging::first(10))
        .iter()
        .map(|t| t.id.as_u64())
        .collect();
    assert_eq!(later, vec![late.id().as_u64(), late.id().as_u64() + 1]);
}

/// A running task is listed as running, and not as ready; once it finishes it is listed in
/// its final state.
#[test]
fn a_running_task_is_listed_as_running() {
    let spool = fresh_spool();
    let key = unique("listing-running");
    let handle = spool
        .enqueue(Gated {
            gate: key.clone(),
            wait: true,
            work_ms: 0,
            value: 7,
        })
        .unwrap();
    let waiting = spool.enqueue(Ghost { n: 1 }).unwrap();
    let worker = spool
        .worker()
        .concurrency(1)
        .register::<Gated>()
        .start()
        .unwrap();
    gate(&key).wait_started(1);

    let listed = |state| {
        ids(&spool
            .tasks(&TaskFilter::new().state(state), &Paging::first(10))
            .unwrap())
    };
    let (running, waiting_id) = (handle.id().as_u64(), waiting.id().as_u64());
    assert_eq!(listed(TaskState::Running), vec![running]);
    assert_eq!(listed(TaskState::Ready), vec![waiting_id]);
    let every = spool.tasks(&TaskFilter::new(), &Paging::first(10)).unwrap();
    let states: Vec<(u64, TaskState)> = every
        .tasks
        .iter()
        .map(|t| (t.id.as_u64(), t.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (running, TaskState::Running),
            (waiting_id, TaskState::Ready)
        ]
    );
    assert!(every.tasks[0].started_at.is_some());
    assert!(every.tasks[1].unregistered, "no pool knows test.ghost");

    gate(&key).open();
    assert_eq!(handle.wait(WAIT).unwrap(), 7);
    assert_eq!(listed(TaskState::Running), Vec::<u64>::new());
    assert_eq!(listed(TaskState::Succeeded), vec![running]);
    worker.shutdown(WAIT).unwrap();
}

/// A retried task leaves the failed listing and a forgotten one leaves every listing.
#[test]
fn retry_and_forget_move_a_task_out_of_its_listing() {
    let spool = fresh_spool();
    let log = unique("listing-retry");
    let a = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Fail, Step::Succeed]),
            Options::new().max_retries(0),
        )
        .unwrap();
    let b = spool
        .enqueue_with(
            Scripted::new(&log, [Step::Fail]),
            Options::new().max_retries(0),
        )
        .unwrap();
    let worker = spool.worker().register::<Scripted>();
    worker.drain().unwrap();
    let failed = TaskFilter::new().state(TaskState::Failed);
    let page = |filter: &TaskFilter| ids(&spool.tasks(filter, &Paging::first(10)).unwrap());
    assert_eq!(page(&failed), vec![a.id().as_u64(), b.id().as_u64()]);

    spool.retry(a.id()).unwrap();
    assert_eq!(page(&failed), vec![b.id().as_u64()]);
    assert_eq!(
        page(&TaskFilter::new().state(TaskState::Ready)),
        vec![a.id().as_u64()]
    );
    worker.drain().unwrap();
    assert_eq!(
        page(&TaskFilter::new().state(TaskState::Succeeded)),
        vec![a.id().as_u64()]
    );

    spool.forget(b.id()).unwrap();
    assert_eq!(page(&TaskFilter::new()), vec![a.id().as_u64()]);
    assert_eq!(spool.retry_where(failed).unwrap(), 0);
}

/// A page of 0 tasks, or of more than `MAX_PAGE`, is refused with a message that says the
/// range.
#[test]
fn a_page_size_out_of_range_is_an_invalid_option() {
    let spool = fresh_spool();
    for limit in [0, MAX_PAGE + 1] {
        match spool.tasks(&TaskFilter::new(), &Paging::first(limit)) {
            Err(Error::InvalidOption(message)) => {
                assert!(message.contains("1 to 1000"), "{message}")
            }
            other => panic!("a page of {limit}: {other:?}"),
        }
    }
}
