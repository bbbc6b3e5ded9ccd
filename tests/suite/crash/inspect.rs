//! Inspecting the files a killed owner left: every acknowledged task is seen (it is only in
//! the log), nothing is recovered or written, and the next real open still recovers all of it.

use super::*;

use taskspool::{Paging, TaskFilter};

#[test]
fn inspecting_a_killed_owners_file_sees_its_log_and_writes_nothing() {
    let (_dir, path) = log_damage::killed_with_a_full_log();
    let log = format!("{}.wal", path.display());
    let before = (std::fs::read(&path).unwrap(), std::fs::read(&log).unwrap());

    let inspection = Spool::inspect(&path).unwrap();
    assert!(
        inspection.in_memory(),
        "the file needs its log: it is read through a copy"
    );
    let stats = inspection.stats().unwrap();
    assert_eq!(stats.count(TaskState::Ready), LOGGED, "{stats:?}");
    let ready = TaskFilter::new().state(TaskState::Ready);
    let page = inspection.tasks(&ready, &Paging::first(1000)).unwrap();
    let ids: Vec<u64> = page.tasks.iter().map(|t| t.id.as_u64()).collect();
    assert_eq!(ids, (1..=LOGGED).collect::<Vec<_>>());
    assert_eq!(page.next, None);
    assert_eq!(
        inspection.status(TaskId::from_u64(LOGGED)).unwrap().name,
        "test.crash_work"
    );
    drop(inspection);
    let after = (std::fs::read(&path).unwrap(), std::fs::read(&log).unwrap());
    assert!(before == after, "the queue file or its log changed");

    // The owner's open recovers it as ever.
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.stats().unwrap().count(TaskState::Ready), LOGGED);
}
