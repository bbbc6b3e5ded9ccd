//! Fault injection: a full disk under the write-ahead log, and under the queue file (through
//! redb's storage backend seam).

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{
    BackendError, Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, StorageBackend,
};

use crate::error::{Error, ErrorKind};
use crate::options::Options;
use crate::store::open::{open, prepare};
use crate::store::schema::TASKS;
use crate::store::verbs::NewTask;
use crate::store::wal::CHECKPOINT_BYTES;
use crate::store::writer::{Command, PUBLISH_GROUPS, WriterHandle, spawn_opened};

/// A file backend whose writes and syncs fail with ENOSPC while `full` is set.
#[derive(Debug)]
struct Faulty {
    inner: FileBackend,
    full: Arc<AtomicBool>,
}

fn enospc() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::StorageFull)
}

impl StorageBackend for Faulty {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(enospc());
        }
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
}

pub(crate) fn task(n: u32) -> NewTask {
    NewTask {
        name: Arc::from("t"),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        opts: Arc::new(Options::new().resolve(1_000).unwrap()),
        enqueued_at_ms: 1_000,
        origin: None,
        step: None,
    }
}

/// A spool on a real file whose write-ahead log and queue file can each be made to fail with
/// ENOSPC: the flags for (log, queue file), and the writer.
pub(crate) fn faulty_spool(
    path: &std::path::Path,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicBool>,
    WriterHandle,
    Arc<Database>,
) {
    drop(open(path, 1_000, None, 1 << 20, CHECKPOINT_BYTES).unwrap());
    let (log_full, file_full) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let backend = Faulty {
        inner: FileBackend::new(file).unwrap(),
        full: file_full.clone(),
    };
    let db = Database::builder().create_with_backend(backend).unwrap();
    let mut opened = prepare(db, path, 1_000, None).unwrap();
    opened.wal.full = Some(log_full.clone());
    let (writer, db) = spawn_opened(opened, None);
    (log_full, file_full, writer, db)
}

/// The ids of the tasks a reader of the open spool sees.
fn visible_ids(writer: &WriterHandle, db: &Database) -> Vec<u64> {
    writer.publish().unwrap();
    let read = db.begin_read().unwrap();
    let tasks = read.open_table(TASKS).unwrap();
    tasks
        .iter()
        .unwrap()
        .map(|e| e.unwrap().0.value())
        .collect()
}

pub(crate) fn enqueue(writer: &WriterHandle, tasks: Vec<NewTask>) -> Result<Vec<u64>, Error> {
    let ids = writer.request(|reply| Command::Enqueue { tasks, reply })?;
    Ok(ids.into_iter().map(|e| e.id.as_u64()).collect())
}

/// The ids of the tasks stored in the file at `path`, after a reopen.
fn stored_ids(path: &std::path::Path) -> Vec<u64> {
    let reopened = open(path, 2_000, None, 1 << 20, CHECKPOINT_BYTES).unwrap();
    let read = reopened.db.begin_read().unwrap();
    let tasks = read.open_table(TASKS).unwrap();
    let ids = tasks
        .iter()
        .unwrap()
        .map(|e| e.unwrap().0.value())
        .collect();
    assert_eq!(
        tasks.len().unwrap() as usize,
        reopened.counters.next_id as usize - 1
    );
    ids
}

/// A full disk under the write-ahead log fails the group with `DiskFull` and applies nothing
/// of it; nothing acknowledged is lost, and once there is room again the spool goes on
/// without a reopen. The acknowledged groups were still in the open transaction when the
/// failure rolled it back: readers see them again.
#[test]
fn a_full_disk_under_the_log_fails_the_group_and_the_spool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let (log_full, _, mut writer, db) = faulty_spool(&path);

    assert_eq!(enqueue(&writer, vec![task(1)]).unwrap(), vec![1]);
    assert_eq!(enqueue(&writer, vec![task(2)]).unwrap(), vec![2]);
    log_full.store(true, Ordering::SeqCst);
    let err = enqueue(&writer, vec![task(3)]).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    log_full.store(false, Ordering::SeqCst);
    // The failed group left no trace: the next task takes the id it would have had.
    assert_eq!(enqueue(&writer, vec![task(4)]).unwrap(), vec![3]);
    assert_eq!(visible_ids(&writer, &db), vec![1, 2, 3]);
    // A failure after a commit to redb: only the groups since are held, and come back.
    assert_eq!(enqueue(&writer, vec![task(5)]).unwrap(), vec![4]);
    log_full.store(true, Ordering::SeqCst);
    assert!(enqueue(&writer, vec![task(6)]).is_err());
    log_full.store(false, Ordering::SeqCst);
    assert_eq!(visible_ids(&writer, &db), vec![1, 2, 3, 4]);
    assert_eq!(enqueue(&writer, vec![task(7)]).unwrap(), vec![5]);
    writer.shutdown();
    drop(writer);
    drop(db);
    assert_eq!(stored_ids(&path), vec![1, 2, 3, 4, 5]);
}

/// Past `PUBLISH_GROUPS` logged groups the writer commits them to redb on its own; a failure
/// after that rolls back only the groups held since, and they come back too.
#[test]
fn a_failure_after_the_writer_committed_on_its_own_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let (log_full, _, mut writer, db) = faulty_spool(&path);
    let n = PUBLISH_GROUPS as u64 + 300;
    for i in 1..=n {
        assert_eq!(enqueue(&writer, vec![task(i as u32)]).unwrap(), vec![i]);
    }
    // What the file shows without a reader asking: the writer's own commit.
    let committed = db
        .begin_read()
        .unwrap()
        .open_table(TASKS)
        .unwrap()
        .len()
        .unwrap();
    assert_eq!(committed, PUBLISH_GROUPS as u64);
    log_full.store(true, Ordering::SeqCst);
    assert!(enqueue(&writer, vec![task(0)]).is_err());
    log_full.store(false, Ordering::SeqCst);
    let expected: Vec<u64> = (1..=n).collect();
    assert_eq!(visible_ids(&writer, &db), expected);
    writer.shutdown();
    drop(writer);
    drop(db);
    assert_eq!(stored_ids(&path), expected);
}

/// Before a long group (here a bulk enqueue), the writer commits the groups it holds, so a
/// reader does not have to wait for the long group to end to see them.
#[test]
fn groups_held_before_a_long_group_are_committed_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let (_, _, mut writer, db) = faulty_spool(&path);
    let in_file = || {
        db.begin_read()
            .unwrap()
            .open_table(TASKS)
            .unwrap()
            .len()
            .unwrap()
    };
    enqueue(&writer, vec![task(1)]).unwrap();
    assert_eq!(in_file(), 0, "a short group stays in the open transaction");
    enqueue(&writer, (0..2_000).map(task).collect()).unwrap();
    assert_eq!(
        in_file(),
        1,
        "committed before the long group, which is held"
    );
    assert_eq!(visible_ids(&writer, &db).len(), 2_001);
    writer.shutdown();
}

/// A full disk under the queue file fails a durable commit (here, a group too large for the
/// log) with `DiskFull`; redb then refuses the handle, and later requests say to reopen.
/// What was acknowledged through the log before is still there after the reopen.
#[test]
fn a_full_disk_under_the_queue_file_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let (_, file_full, mut writer, db) = faulty_spool(&path);

    assert_eq!(
        enqueue(&writer, vec![task(1), task(2)]).unwrap(),
        vec![1, 2]
    );
    file_full.store(true, Ordering::SeqCst);
    let big: Vec<NewTask> = (0..3_000).map(task).collect();
    let err = enqueue(&writer, big).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    file_full.store(false, Ordering::SeqCst);
    let err = enqueue(&writer, vec![task(4)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("open the file again"), "{err}");
    writer.shutdown();
    drop(writer);
    drop(db);
    assert_eq!(
        stored_ids(&path),
        vec![1, 2],
        "exactly the acknowledged tasks"
    );
}

/// After the queue file's handle failed, each caller hears redb's verdict as it is: one
/// `Storage` error that says to reopen, with redb's error as its source — not a copy of its
/// text wrapped in another storage error.
#[test]
fn a_failed_groups_callers_hear_its_error_as_it_is() {
    use std::error::Error as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let (_, file_full, mut writer, _db) = faulty_spool(&path);
    file_full.store(true, Ordering::SeqCst);
    let big: Vec<NewTask> = (0..3_000).map(task).collect();
    assert!(matches!(enqueue(&writer, big), Err(Error::DiskFull { .. })));
    file_full.store(false, Ordering::SeqCst);
    for n in 0..4 {
        let err = enqueue(&writer, vec![task(n)]).unwrap_err();
        let Error::Storage { message, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(message.starts_with("an earlier I/O error"), "{message}");
        assert_eq!(err.to_string().matches("storage error").count(), 1, "{err}");
        assert!(err.source().is_some(), "{err:?}");
    }
    writer.shutdown();
}

/// A full disk at open (the open applies the log's records to the queue file) is `DiskFull`
/// with the room the open needs: at least twice what the log holds to apply, plus a chunk of
/// log. Once there is room, the same open succeeds with every acknowledged task.
#[test]
fn a_full_disk_at_open_says_how_much_room_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    let copy = dir.path().join("copy.redb");
    {
        let (_, _, writer, _db) = faulty_spool(&path);
        for n in 0..50 {
            enqueue(&writer, vec![task(n)]).unwrap();
        }
        // The files as a kill would leave them: the groups are only in the log.
        for suffix in ["", ".wal"] {
            let from = format!("{}{suffix}", path.display());
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).unwrap();
        }
        std::mem::forget(writer);
    }
    let logged = crate::store::replay::read(&copy).unwrap().unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let backend = Faulty {
        inner: FileBackend::new(file).unwrap(),
        full: full.clone(),
    };
    let db = Database::builder().create_with_backend(backend).unwrap();
    full.store(true, Ordering::SeqCst);
    let err = prepare(db, &copy, 2_000, None).map(drop).unwrap_err();
    let Error::DiskFull {
        needed: Some(needed),
    } = err
    else {
        panic!("{err:?}");
    };
    let records = logged.iter().rposition(|&b| b != 0).unwrap() as u64;
    assert!(
        needed >= records + (2 << 20),
        "{needed} for {records} bytes of records"
    );
    assert!(err.to_string().contains("free at least"), "{err}");
    assert_eq!(stored_ids(&copy), (1..=50).collect::<Vec<_>>());
}
