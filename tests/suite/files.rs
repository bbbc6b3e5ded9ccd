//! Files: a queue file keeps tasks and results across a clean reopen; one owner at a time;
//! files that are not queues, are of a newer format, or are damaged are refused with a typed
//! error (`ErrorKind::BadFile`) and left byte-for-byte untouched.

use std::path::Path;

use redb::{ReadableDatabase, TableDefinition};
use taskspool::{Error, ErrorKind, Options, Paging, Spool, TaskFilter, TaskState};

use super::common::*;

const META: TableDefinition<&str, u64> = TableDefinition::new("taskspool.meta");

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read queue file")
}

/// Asserts the file still holds exactly `before`, reporting the first difference briefly.
#[track_caller]
fn assert_untouched(path: &Path, before: &[u8], what: &str) {
    let after = bytes(path);
    if after != before {
        let first = after
            .iter()
            .zip(before)
            .position(|(a, b)| a != b)
            .unwrap_or(after.len().min(before.len()));
        panic!(
            "{what}: the file was modified (length {} -> {}, first difference at byte {first})",
            before.len(),
            after.len()
        );
    }
}

/// Asserts that the queue file is the only file in its directory: a refused open leaves
/// nothing behind (no lock, journal or side file).
#[track_caller]
fn assert_no_side_files(path: &Path) {
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
}

/// A closed taskspool file with a few finished and a few waiting tasks.
fn make_queue_file(path: &Path) {
    let spool = Spool::open(path).unwrap();
    let done = spool.enqueue_many((0..5).map(|a| Add { a, b: 1 })).unwrap();
    spool
        .enqueue_many_with(
            (0..5).map(|a| Add { a, b: 2 }),
            Options::new().queue("later"),
        )
        .unwrap();
    let worker = spool.worker().register::<Add>().start().unwrap();
    for h in &done {
        h.wait(WAIT).unwrap();
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn reopen_after_clean_shutdown_keeps_tasks_and_results() {
    let (_dir, path) = temp_queue();
    let (done_ids, waiting_ids) = {
        let spool = Spool::open(&path).unwrap();
        let worker = spool
            .worker()
            .concurrency(2)
            .register::<Add>()
            .start()
            .unwrap();
        let done = spool
            .enqueue_many((0..10).map(|a| Add { a, b: 100 }))
            .unwrap();
        for h in &done {
            h.wait(WAIT).unwrap();
        }
        let waiting = spool
            .enqueue_many_with(
                (0..4).map(|a| Add { a, b: 7 }),
                Options::new().queue("later"),
            )
            .unwrap();
        worker.shutdown(WAIT).unwrap();
        (
            done.iter().map(|h| h.id()).collect::<Vec<_>>(),
            waiting.iter().map(|h| h.id()).collect::<Vec<_>>(),
        )
    };
    let spool = Spool::open(&path).unwrap();
    assert_eq!(spool.path(), path.as_path());
    for (a, id) in (0..10).zip(&done_ids) {
        let status = spool.status(*id).unwrap();
        assert_eq!(status.state, TaskState::Succeeded);
        assert_eq!(status.attempts, 1);
        assert!(status.finished_at.is_some());
        assert_eq!(spool.handle::<Add>(*id).try_get().unwrap(), Some(a + 100));
    }
    for id in &waiting_ids {
        let status = spool.status(*id).unwrap();
        assert_eq!(status.state, TaskState::Ready);
        assert_eq!(status.queue, "later");
    }
    let stats = spool.stats().unwrap();
    assert_eq!(
        stats.queue("default").unwrap().count(TaskState::Succeeded),
        10
    );
    assert_eq!(stats.queue("later").unwrap().count(TaskState::Ready), 4);
    // Ids keep counting: nothing is reused.
    let next = spool.enqueue(Add { a: 0, b: 0 }).unwrap();
    assert!(next.id() > *waiting_ids.last().unwrap());
    // And the waiting tasks run in this life of the file.
    let worker = spool
        .worker()
        .queue("later")
        .register::<Add>()
        .start()
        .unwrap();
    for (a, id) in (0..4).zip(&waiting_ids) {
        assert_eq!(spool.handle::<Add>(*id).wait(WAIT).unwrap(), a + 7);
    }
    worker.shutdown(WAIT).unwrap();
}

#[test]
fn second_open_while_open_is_already_open() {
    let (_dir, path) = temp_queue();
    let spool = Spool::open(&path).unwrap();
    let h = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    let err = Spool::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::AlreadyOpen { path: p } if p == &path),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::AlreadyOpen);
    // The message names every kind of holder in this process.
    let message = err.to_string();
    for holder in ["another process", "a Spool", "a Worker", "a WorkerBuilder"] {
        assert!(message.contains(holder), "{message}");
    }
    // The first handle is unaffected.
    assert_eq!(h.status().unwrap().state, TaskState::Ready);
    spool.enqueue(Add { a: 2, b: 2 }).unwrap();
    // Once every handle is gone, the file opens again.
    drop(h);
    drop(spool);
    let again = Spool::open(&path).unwrap();
    assert_eq!(again.stats().unwrap().count(TaskState::Ready), 2);
}

#[test]
fn random_bytes_are_not_a_queue_and_stay_untouched() {
    let (_dir, path) = temp_queue();
    let mut rng = fastrand::Rng::with_seed(0x7a5c);
    let garbage: Vec<u8> = (0..64 * 1024).map(|_| rng.u8(..)).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = Spool::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAQueue { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadFile);
    assert_untouched(&path, &garbage, "random bytes");
    assert_no_side_files(&path);
}

#[test]
fn a_short_text_file_is_not_a_queue_and_stays_untouched() {
    let (_dir, path) = temp_queue();
    std::fs::write(&path, b"hello\n").unwrap();
    let err = Spool::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAQueue { .. }), "{err:?}");
    assert_untouched(&path, b"hello\n", "text file");
}

#[test]
fn a_foreign_redb_file_is_not_a_queue() {
    let (_dir, path) = temp_queue();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let other: TableDefinition<&str, &str> = TableDefinition::new("users");
            let mut t = txn.open_table(other).unwrap();
            t.insert("alice", "admin").unwrap();
        }
        txn.commit().unwrap();
    }
    let before = bytes(&path);
    let err = Spool::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAQueue { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadFile);
    assert_untouched(&path, &before, "foreign redb file");
    assert_no_side_files(&path);
    // Its data is intact.
    let db = redb::Database::create(&path).unwrap();
    let read = db.begin_read().unwrap();
    let other: TableDefinition<&str, &str> = TableDefinition::new("users");
    let t = read.open_table(other).unwrap();
    assert_eq!(t.get("alice").unwrap().unwrap().value(), "admin");
}

#[test]
fn a_redb_file_whose_meta_table_has_another_layout_is_not_a_queue() {
    let (_dir, path) = temp_queue();
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: TableDefinition<u64, u64> = TableDefinition::new("taskspool.meta");
            txn.open_table(meta).unwrap().insert(1, 1).unwrap();
        }
        txn.commit().unwrap();
    }
    let err = Spool::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotAQueue { .. }), "{err:?}");
}

#[test]
fn a_newer_format_is_refused_and_the_file_untouched() {
    let (_dir, path) = temp_queue();
    make_queue_file(&path);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 999)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = bytes(&path);
    let err = Spool::open(&path).unwrap_err();
    match &err {
        Error::NewerFormat {
            path: p,
            found,
            supported,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*found, 999);
            assert!(*supported < 999);
        }
        other => panic!("expected NewerFormat, got {other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::BadFile);
    assert_untouched(&path, &before, "newer-format file");
    // Opening again still refuses (nothing was "fixed" on the way).
    assert!(matches!(Spool::open(&path), Err(Error::NewerFormat { .. })));
}

/// A file of format 1 (before the write-ahead log: no log generation, no `.wal` file) opens,
/// keeps its tasks (and lists them: its index by state is built), and is marked with the
/// current format, which a format-1 build refuses: that build would ignore the log and lose
/// what it holds.
#[test]
fn a_format_1_file_is_upgraded_and_keeps_its_tasks() {
    let (_dir, path) = temp_queue();
    make_queue_file(&path);
    let meta = |path: &Path| {
        let db = redb::Database::create(path).unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(META).unwrap();
        let get = |key: &str| table.get(key).unwrap().map(|v| v.value());
        (get("format_version"), get("wal_generation").is_some())
    };
    assert_eq!(meta(&path), (Some(8), true));
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(META).unwrap();
            table.insert("format_version", 1).unwrap();
            table.remove("wal_generation").unwrap();
        }
        txn.commit().unwrap();
    }
    std::fs::remove_file(format!("{}.wal", path.display())).unwrap();

    let spool = Spool::open(&path).unwrap();
    let stats = spool.stats().unwrap();
    assert_eq!(stats.count(TaskState::Succeeded), 5);
    assert_eq!(stats.count(TaskState::Ready), 5);
    let listed = |state| {
        let filter = TaskFilter::new().state(state);
        spool
            .tasks(&filter, &Paging::first(100))
            .unwrap()
            .tasks
            .len()
    };
    assert_eq!(
        (listed(TaskState::Succeeded), listed(TaskState::Ready)),
        (5, 5)
    );
    drop(spool);
    assert_eq!(meta(&path), (Some(8), true));
}

#[test]
fn a_queue_file_with_a_table_of_another_layout_is_refused_and_untouched() {
    let (_dir, path) = temp_queue();
    make_queue_file(&path);
    {
        // What a build with the same format number but another table layout would leave.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let old: TableDefinition<u64, (u32, u64)> = TableDefinition::new("taskspool.running");
        assert!(txn.delete_table(old).unwrap());
        let other: TableDefinition<u64, u32> = TableDefinition::new("taskspool.running");
        txn.open_table(other).unwrap().insert(1, 1).unwrap();
        txn.commit().unwrap();
    }
    let before = bytes(&path);
    let err = Spool::open(&path).unwrap_err();
    match &err {
        Error::NotAQueue { detail, .. } => {
            assert!(detail.contains("taskspool.running"), "{detail}");
        }
        other => panic!("expected NotAQueue, got {other:?}"),
    }
    assert_untouched(&path, &before, "file with a table of another layout");
}

/// Opens a damaged copy of a queue file; it must come back as a typed error, never a panic.
fn open_damaged(path: &Path) -> Result<Spool, Error> {
    std::panic::catch_unwind(|| Spool::open(path)).unwrap_or_else(|_| {
        panic!("Spool::open panicked on a damaged file instead of returning an error")
    })
}

/// A way of damaging a file's bytes.
type Damage = Box<dyn Fn(&mut Vec<u8>)>;

/// Each damage below is one redb detects when the file is opened (header checks, layout
/// checks, page-type checks, allocator-state checks). Damage confined to a page that is not
/// in use (a free page) is not detected by redb and would not lose data, so it is not
/// asserted here: the file layout varies from run to run (record sizes depend on times), so a
/// "random page in the middle" can be such a free page.
#[test]
fn damaged_files_are_refused_with_a_bad_file_error() {
    let (dir, path) = temp_queue();
    make_queue_file(&path);
    let original = bytes(&path);
    let len = original.len();
    let damages: Vec<(&str, Damage)> = vec![
        (
            "magic number overwritten",
            Box::new(|b: &mut Vec<u8>| b[..4].copy_from_slice(b"XXXX")),
        ),
        (
            "header zeroed",
            Box::new(|b: &mut Vec<u8>| b[..512].fill(0)),
        ),
        (
            "truncated to half",
            Box::new(move |b: &mut Vec<u8>| b.truncate(len / 2)),
        ),
        (
            "truncated to 100 bytes",
            Box::new(|b: &mut Vec<u8>| b.truncate(100)),
        ),
        (
            "every 997th byte after the header flipped",
            Box::new(|b: &mut Vec<u8>| {
                for i in (4096..b.len()).step_by(997) {
                    b[i] ^= 0xff;
                }
            }),
        ),
        (
            "everything after the header is garbage",
            Box::new(|b: &mut Vec<u8>| {
                let mut rng = fastrand::Rng::with_seed(99);
                for x in &mut b[4096..] {
                    *x = rng.u8(..);
                }
            }),
        ),
    ];
    for (what, damage) in &damages {
        let copy = dir.path().join("damaged.redb");
        let mut b = original.clone();
        damage(&mut b);
        std::fs::write(&copy, &b).unwrap();
        match open_damaged(&copy) {
            Ok(_) => panic!("{what}: a damaged file opened as a queue"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BadFile, "{what}: {e:?}");
                assert!(
                    matches!(e, Error::Corrupt { .. } | Error::NotAQueue { .. }),
                    "{what}: {e:?}"
                );
            }
        }
        assert_untouched(&copy, &b, what);
    }
}

#[test]
fn a_temporary_spool_removes_its_directory_when_closed() {
    let spool = Spool::temporary().unwrap();
    let path = spool.path().to_path_buf();
    let dir = path.parent().unwrap().to_path_buf();
    let h = spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    assert!(path.exists());
    assert_eq!(h.status().unwrap().state, TaskState::Ready);
    // A task handle does not keep the spool open: dropping the last spool closes it.
    drop(spool);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(matches!(h.status(), Err(Error::Closed)));
    assert!(matches!(h.try_get(), Err(Error::Closed)));
    assert!(matches!(h.wait(WAIT), Err(Error::Closed)));
}

#[test]
fn unusable_paths_are_errors_that_name_the_path() {
    let (dir, _path) = temp_queue();
    let missing_dir = dir.path().join("no/such/dir/queue.redb");
    let err = Spool::open(&missing_dir).unwrap_err();
    assert!(
        matches!(&err, Error::BadPath { path, .. } if *path == missing_dir),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let message = err.to_string();
    assert!(
        message.contains(&missing_dir.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "its directory {} does not exist; create it first",
            dir.path().join("no/such/dir").display()
        )),
        "{message}"
    );
    assert!(!missing_dir.exists());

    let err = Spool::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("it is a directory"), "{err}");

    // A file where a directory should be.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = Spool::open(file.join("queue.redb")).unwrap_err();
    assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a directory"), "{err}");

    let err = Spool::open("").unwrap_err();
    assert!(matches!(err, Error::BadPath { .. }), "{err:?}");
    // Nothing was created in any of these cases.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// The queue file, its log and its journal are created readable and writable by their owner
/// only: tasks and results can hold anything.
#[test]
fn a_new_queue_s_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp_queue();
    let spool = Spool::open(&path).unwrap();
    spool.enqueue(Add { a: 1, b: 1 }).unwrap();
    for file in [
        path.clone(),
        format!("{}.wal", path.display()).into(),
        format!("{}.inflight", path.display()).into(),
    ] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}
