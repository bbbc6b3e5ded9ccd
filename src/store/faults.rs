//! Fault injection through redb's storage backend seam: a full disk during a group commit.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, Database, ReadableDatabase, ReadableTableMetadata, StorageBackend};

use super::command::Command;
use super::transitions::NewTask;
use super::writer::{Writer, WriterConfig};
use super::{open, prepare, schema::TASKS};
use crate::clock::Clock;
use crate::error::{Error, ErrorKind};
use crate::options::Options;
use crate::result::Waiters;

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

fn task(n: u32) -> NewTask {
    NewTask {
        name: Arc::from("t"),
        payload: format!("{{\"n\":{n}}}").into_bytes(),
        opts: Arc::new(Options::new().resolve(1_000).unwrap()),
        enqueued_at_ms: 1_000,
        origin: None,
    }
}

/// A full disk fails the group with `DiskFull` and applies nothing of it; what was
/// acknowledged before stays, and later requests say the file must be reopened.
#[test]
fn a_full_disk_fails_the_group_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    drop(open(&path, 1_000, None, 1 << 20).unwrap());

    let full = Arc::new(AtomicBool::new(false));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let backend = Faulty {
        inner: FileBackend::new(file).unwrap(),
        full: full.clone(),
    };
    let db = Database::builder().create_with_backend(backend).unwrap();
    let opened = prepare(db, &path, 1_000, None).unwrap();
    let mut writer = Writer::spawn(
        Arc::new(opened.db),
        WriterConfig {
            clock: Clock::System,
            result_ttl_ms: None,
        },
        opened.counters,
        opened.catalog,
        Arc::new(Waiters::default()),
    )
    .unwrap();
    let enqueue = |tasks: Vec<NewTask>| writer.request(|reply| Command::Enqueue { tasks, reply });

    let acknowledged = enqueue(vec![task(1), task(2)]).unwrap();
    assert_eq!(acknowledged, vec![1, 2]);

    full.store(true, Ordering::SeqCst);
    let err = enqueue(vec![task(3)]).unwrap_err();
    assert!(matches!(err, Error::DiskFull), "{err:?}");
    full.store(false, Ordering::SeqCst);
    // redb has failed its handle: every later request says so, and what to do.
    let err = enqueue(vec![task(4)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage);
    assert!(err.to_string().contains("open the file again"), "{err}");
    writer.shutdown();

    let reopened = open(&path, 2_000, None, 1 << 20).unwrap();
    let read = reopened.db.begin_read().unwrap();
    let tasks = read.open_table(TASKS).unwrap();
    assert_eq!(tasks.len().unwrap(), 2, "exactly the acknowledged tasks");
    assert!(tasks.get(1).unwrap().is_some() && tasks.get(2).unwrap().is_some());
    assert_eq!(reopened.counters.next_id, 3);
}
