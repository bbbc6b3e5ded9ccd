//! Who syncs the write-ahead log, and when: the threads that wait for durability, not the
//! writer.
//!
//! The writer appends a group's redo record to the log, commits the group to redb (in memory),
//! and hands out its replies and jobs tagged with the record's end position (its LSN: bytes
//! of log written since the spool opened). It never waits for the disk, so it can build the
//! next group while the last one is being synced. Whoever needs a group durable — the caller
//! of `enqueue`, the worker about to start a claimed task, a reader about to report a
//! result — calls [`LogSync::wait`] with that LSN: if no sync is in flight it runs
//! `fdatasync` itself, covering every record written so far; otherwise it waits for the one
//! in flight and, if that started too early, for the next. Concurrent waiters thus share
//! syncs the way group commit shares them among writers.
//!
//! A failed sync poisons the log: the disk may have dropped the records, so nothing after
//! can be promised, and every later wait reports the error.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Error;

/// Durability progress of the log, shared by the writer and every waiter.
#[derive(Debug)]
pub(crate) struct LogSync {
    file: File,
    state: Mutex<State>,
    changed: Condvar,
    /// `State::committed`, readable without the lock (see [`LogSync::wait`]).
    committed: AtomicU64,
}

/// How long a waiter whose record is synced spins for its group's commit before sleeping.
/// The writer commits right after handing out the group, so the commit is usually a few
/// tens of microseconds away, and waking a sleeping thread costs about as much again.
const COMMIT_SPIN: Duration = Duration::from_micros(200);

#[derive(Debug, Default)]
struct State {
    /// End of the last record written.
    written: u64,
    /// End of the last record whose group is committed to redb (visible to readers).
    committed: u64,
    /// Everything before this is on disk.
    synced: u64,
    /// A thread is in `fdatasync`.
    syncing: bool,
    /// Threads blocked in `wait`.
    waiting: usize,
    /// Why the log can no longer be trusted.
    failed: Option<String>,
}

fn failed(reason: &str) -> Error {
    Error::Storage(format!(
        "{reason}; open the file again to recover what is durable"
    ))
}

impl LogSync {
    /// Tracks the log whose file `file` is (a handle of its own, for `fdatasync`).
    pub(crate) fn new(file: File, lsn: u64) -> LogSync {
        LogSync {
            file,
            state: Mutex::new(State {
                written: lsn,
                committed: lsn,
                synced: lsn,
                ..State::default()
            }),
            changed: Condvar::new(),
            committed: AtomicU64::new(lsn),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writer: a record ending at `lsn` is in the file.
    pub(crate) fn written(&self, lsn: u64) {
        self.lock().written = lsn;
    }

    /// Writer: the group whose record ends at `lsn` is committed to redb.
    pub(crate) fn committed(&self, lsn: u64) {
        let mut state = self.lock();
        state.committed = lsn;
        self.committed.store(lsn, Ordering::Release);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }

    /// Writer: a durable commit of the queue file holds everything through `lsn`.
    pub(crate) fn durable(&self, lsn: u64) {
        let mut state = self.lock();
        state.written = state.written.max(lsn);
        state.committed = state.committed.max(lsn);
        self.committed.store(state.committed, Ordering::Release);
        state.synced = state.synced.max(lsn);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.changed.notify_all();
        }
    }

    /// The log can no longer be trusted: every later wait fails with `reason`.
    pub(crate) fn fail(&self, reason: String) {
        let mut state = self.lock();
        state.failed.get_or_insert(reason);
        drop(state);
        self.changed.notify_all();
    }

    /// `Err` once the log has failed.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.lock().failed {
            Some(reason) => Err(failed(reason)),
            None => Ok(()),
        }
    }

    /// The end of the last record written: what a reader waits for.
    pub(crate) fn mark(&self) -> u64 {
        self.lock().written
    }

    /// Blocks until every record through `lsn` is committed and on disk, running the sync
    /// itself when no other thread is.
    pub(crate) fn wait(&self, lsn: u64) -> Result<(), Error> {
        let mut state = self.lock();
        loop {
            if let Some(reason) = &state.failed {
                return Err(failed(reason));
            }
            if state.synced >= lsn && state.committed >= lsn {
                return Ok(());
            }
            if state.synced < lsn && !state.syncing {
                state.syncing = true;
                let target = state.written;
                drop(state);
                let synced = self.file.sync_data();
                state = self.lock();
                state.syncing = false;
                match synced {
                    Ok(()) => state.synced = state.synced.max(target),
                    Err(e) => {
                        state
                            .failed
                            .get_or_insert(format!("syncing the write-ahead log failed: {e}"));
                    }
                }
                if state.waiting > 0 {
                    self.changed.notify_all();
                }
                continue;
            }
            if state.synced >= lsn {
                // Only the commit is missing: it is moments away.
                drop(state);
                let start = Instant::now();
                while self.committed.load(Ordering::Acquire) < lsn && start.elapsed() < COMMIT_SPIN
                {
                    std::hint::spin_loop();
                }
                state = self.lock();
                if state.committed >= lsn || state.failed.is_some() {
                    continue;
                }
            }
            state.waiting += 1;
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
    }

    /// Waits for everything written so far: for a reader whose snapshot is already taken,
    /// so that nothing it reports can be lost.
    pub(crate) fn settle(&self) -> Result<(), Error> {
        self.wait(self.mark())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_share_syncs_and_see_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("log")).unwrap();
        let sync = std::sync::Arc::new(LogSync::new(file, 0));
        sync.written(10);
        sync.committed(10);
        sync.wait(10).unwrap();
        assert_eq!(sync.lock().synced, 10);

        // A waiter for a record not yet committed waits for the commit.
        sync.written(20);
        let waiter = {
            let sync = sync.clone();
            std::thread::spawn(move || sync.wait(20))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!waiter.is_finished(), "the group is not committed yet");
        sync.committed(20);
        waiter.join().unwrap().unwrap();

        sync.written(30);
        sync.fail("the disk is gone".into());
        let err = sync.wait(30).unwrap_err();
        assert!(err.to_string().contains("the disk is gone"), "{err}");
        assert!(sync.wait(5).is_err(), "a failed log fails every wait");
    }
}
