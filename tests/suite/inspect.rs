//! `Spool::inspect`: a closed queue file read without writing to it — the same answers as
//! its owner gives, nothing run, due or not, and the file and its log byte for byte as before.

use std::time::Duration;

use taskspool::{
    Error, ErrorKind, Options, Paging, Schedule, Spool, TaskFilter, TaskId, TaskState,
};

use super::common::*;

/// Reads the queue file and its log.
fn files(path: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
    let log = format!("{}.wal", path.display());
    (std::fs::read(path).unwrap(), std::fs::read(log).unwrap())
}

/// A closed file with finished, failed, due and scheduled tasks and a due schedule: the
/// inspection reads all of it as the owner did, fires nothing, runs nothing, and leaves both
/// files as they were.
#[test]
fn a_closed_file_reads_as_its_owner_left_it_and_is_not_written() {
    let (_dir, path) = temp_queue();
    let clock = manual_clock();
    let log = unique("inspect");
    let (done, failed, due, later, owner_stats, owner_page) = {
        let spool = manual_spool_at(&clock, &path);
        let done = spool.enqueue(Add { a: 1, b: 2 }).unwrap();
        let failed = spool
            .enqueue_with(
                Scripted::new(&log, [Step::Fail]),
                Options::new().max_retries(0),
            )
            .unwrap();
        let worker = spool.worker().register::<Add>().register::<Scripted>();
        worker.drain().unwrap();
        let due = spool.enqueue(Ghost { n: 1 }).unwrap();
        let later = spool
            .enqueue_with(
                Ghost { n: 2 },
                Options::new().countdown(Duration::from_secs(5)),
            )
            .unwrap();
        spool
            .schedule(
                "beat",
                Schedule::every(Duration::from_secs(1)),
                Ghost { n: 3 },
            )
            .unwrap();
        let every = spool.tasks(&TaskFilter::new(), &Paging::first(10)).unwrap();
        (done, failed, due, later, spool.stats().unwrap(), every)
    };
    let before = files(&path);

    // Long after everything became due: an owner would fire, promote and prune.
    let inspection = Spool::inspect(&path).unwrap();
    assert!(
        !inspection.in_memory(),
        "a file closed cleanly is read in place"
    );
    let state = |id: TaskId| inspection.status(id).unwrap().state;
    assert_eq!(state(done.id()), TaskState::Succeeded);
    assert_eq!(state(failed.id()), TaskState::Failed);
    assert_eq!(state(due.id()), TaskState::Ready);
    assert_eq!(state(later.id()), TaskState::Scheduled);
    assert_eq!(
        inspection.status(failed.id()).unwrap().errors[0].message,
        "gave up on attempt 1"
    );
    let every = inspection
        .tasks(&TaskFilter::new(), &Paging::first(10))
        .unwrap();
    assert_eq!(every, owner_page);
    let stats = inspection.stats().unwrap();
    assert_eq!(stats.queues, owner_stats.queues);
    assert_eq!(inspection.schedules().unwrap()[0].name, "beat");
    assert!(matches!(
        inspection.status(TaskId::from_u64(99)),
        Err(Error::NotFound(_))
    ));
    drop(inspection);
    assert!(files(&path) == before, "the queue file or its log changed");
}

/// While a process owns the file, an inspection is refused as `AlreadyOpen`; a missing file
/// is a bad path (and is not created).
#[test]
fn an_owned_or_missing_file_is_refused() {
    let (dir, path) = temp_queue();
    let spool = Spool::open(&path).unwrap();
    let err = Spool::inspect(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen, "{err}");
    drop(spool);
    assert!(Spool::inspect(&path).is_ok());

    let missing = dir.path().join("nothing.redb");
    let err = Spool::inspect(&missing).unwrap_err();
    assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
    assert!(!missing.exists());
}

/// A file of an older format is read through a copy that gets the new index, and stays of
/// its format.
#[test]
fn an_older_format_is_read_without_being_upgraded() {
    let (_dir, path) = copy_fixture("format-7");
    let before = files(&path);
    let inspection = Spool::inspect(&path).unwrap();
    assert!(inspection.in_memory());
    let stats = inspection.stats().unwrap();
    let listed: usize = TaskState::ALL
        .into_iter()
        .map(|state| {
            let filter = TaskFilter::new().state(state);
            inspection
                .tasks(&filter, &Paging::first(100))
                .unwrap()
                .tasks
                .len()
        })
        .sum();
    assert_eq!(listed as u64, stats.total());
    drop(inspection);
    assert!(files(&path) == before, "the fixture changed");
}
