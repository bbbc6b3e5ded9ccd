//! How a group becomes durable: through the write-ahead log, or by a durable commit of the
//! queue file (a checkpoint); when it reaches redb, where readers look; and, in buffered mode,
//! when the log is synced.
//!
//! A logged group is durable and acknowledged, but it stays in the open write transaction
//! (`Writer::held`), which the next group goes on from: a redb commit, even without a sync,
//! costs as much CPU as a small group itself (it writes back every table root it touched and
//! checksums the pages). The transaction is committed (without a sync: the log has the
//! changes) when a reader needs it ([`Writer::publish`]), every [`PUBLISH_GROUPS`] groups or
//! [`PUBLISH_BYTES`] of log, and durably at a checkpoint. A failure rolls it back whole; the
//! next transaction applies the held groups' redo records again (`held_records`), the way the
//! log is replayed at open.

use std::sync::atomic::Ordering;
use std::time::Instant;

use redb::{Durability, WriteTransaction};

use crate::error::Error;
use crate::store::catalog::Catalog;
use crate::store::counts::{Tally, store_counts};
use crate::store::errors::Db;
use crate::store::flow::Flow;
use crate::store::redo::Redo;
use crate::store::schema::{META, META_CLOSED, META_WAL_GENERATION, META_WAL_PREVIOUS, Tables};
use crate::store::tx::load_running;
use crate::store::wal::next_generation;
use crate::store::writer::command::Command;
use crate::store::writer::state::Writer;

/// Groups kept in the open transaction before it is committed to redb anyway.
pub(crate) const PUBLISH_GROUPS: usize = 1_024;
/// Redo bytes kept in the open transaction before it is committed to redb anyway (this bounds
/// the memory its changed pages take, and the work of building it again after a failure).
const PUBLISH_BYTES: usize = 1 << 20;
/// A group of at least this many tasks and commands is long: the groups held before it are
/// committed to redb first (see [`Writer::publish_before`]).
const LONG_GROUP: usize = 1_000;

impl Writer {
    /// On the way out: a checkpoint, so the next open has no log to read.
    /// On the way out: a checkpoint that also marks the file closed cleanly, so the next open
    /// has no log to read (and would not miss one). A failure is logged: the next open
    /// replays the log instead.
    pub(super) fn close(&mut self) {
        self.closed = true;
        if self.stopped.get().is_none() {
            let result = self
                .take_txn()
                .and_then(|txn| self.commit_durable(txn, None, true));
            if let Err(e) = result {
                tracing::error!(
                    error = %e,
                    path = %self.config.path.display(),
                    "taskspool could not checkpoint the queue file at close; the next open \
                     applies its write-ahead log again, which needs room on the disk for it"
                );
            }
        }
        self.held = None;
    }

    /// The write transaction for the next group: the one held open, or a new one, which first
    /// gets the held groups again if a failure rolled them back. After a failure, the
    /// in-memory mirrors are read again from it.
    pub(super) fn take_txn(&mut self) -> Result<WriteTransaction, Error> {
        let txn = match self.held.take() {
            Some(txn) => txn,
            None => {
                let txn = self.db.begin_write().db()?;
                if !self.held_records.is_empty() {
                    let mut tables = Tables::new(&txn, Redo::default());
                    // Length-prefixed by `commit_with`; a cut record is a bug, and replay
                    // reports it as malformed.
                    let mut rest = &self.held_records[..];
                    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                        let len = u32::from_le_bytes(*len) as usize;
                        let (record, tail) = tail.split_at(len.min(tail.len()));
                        tables.replay(record)?;
                        rest = tail;
                    }
                }
                txn
            }
        };
        if self.stale {
            self.catalog = Catalog::load(&txn)?;
            self.running_cache = load_running(&txn)?;
            self.flow_cache = Flow::load(&txn)?;
            self.show_pauses();
            self.stale = false;
        }
        Ok(txn)
    }

    /// Makes a group's transaction durable: through the write-ahead log (one `fdatasync` of
    /// a sequential write), or, for a checkpoint or a group too large to be worth writing
    /// twice, by a durable commit of the queue file itself. The log is written first and the
    /// group is acknowledged once it is synced, so a group the log refuses (a full disk) is
    /// rolled back whole and the spool goes on. A logged group stays in the open transaction
    /// (see the module docs).
    ///
    /// The redo buffer is kept for the next transaction.
    pub(super) fn commit(
        &mut self,
        txn: WriteTransaction,
        redo: Redo,
        tally: Tally,
    ) -> Result<(), Error> {
        let done = self.commit_with(txn, &redo, tally);
        self.redo = redo;
        done
    }

    fn commit_with(
        &mut self,
        txn: WriteTransaction,
        redo: &Redo,
        tally: Tally,
    ) -> Result<(), Error> {
        let record = match redo.bytes() {
            Some(record) if !self.checkpoint_due => record,
            _ => return self.commit_durable(txn, Some(tally), false),
        };
        let immediate = self.config.buffered.is_none();
        // On error `txn` is dropped: the group is rolled back, with the held ones (see
        // `take_txn`).
        self.wal.append(record, immediate)?;
        self.keep(&tally);
        self.held = Some(txn);
        self.held_records
            .extend_from_slice(&(record.len() as u32).to_le_bytes());
        self.held_records.extend_from_slice(record);
        self.held_groups += 1;
        self.unpublished.store(true, Ordering::Release);
        self.checkpoint_due = self.wal.full();
        if let Some(bound) = self.config.buffered {
            self.sync_deadline
                .get_or_insert_with(|| Instant::now() + bound);
        }
        if self.held_groups >= PUBLISH_GROUPS || self.held_records.len() >= PUBLISH_BYTES {
            self.publish_or_retry();
        }
        Ok(())
    }

    /// A reader that needs the held groups waits for the end of the group in progress. Before
    /// a long one (a bulk enqueue, a large batch of completions) they are committed first, so
    /// no reader waits behind it.
    pub(super) fn publish_before(&mut self, cmds: &[Command]) {
        if self.held_groups == 0 {
            return;
        }
        let size: usize = cmds.iter().map(Command::size).sum();
        if size >= LONG_GROUP {
            self.publish_or_retry();
        }
    }

    /// [`Writer::publish`] where a failure is only logged: the groups are in the log, so the
    /// next transaction applies them again, and a reader's own `publish` reports the error.
    pub(super) fn publish_or_retry(&mut self) {
        if let Err(e) = self.publish() {
            tracing::warn!(error = %e, "taskspool could not commit logged groups to its queue file; retrying");
        }
    }

    /// Commits the logged groups held in the open transaction to redb (without a sync: the
    /// log has them), so that readers see them.
    pub(crate) fn publish(&mut self) -> Result<(), Error> {
        if self.held_groups == 0 {
            return Ok(());
        }
        let committed = self.take_txn().and_then(|mut txn| {
            txn.set_durability(Durability::None).db()?;
            txn.commit().db()
        });
        match committed {
            Ok(()) => {
                self.published();
                Ok(())
            }
            Err(e) => {
                self.stale = true;
                Err(e)
            }
        }
    }

    /// Every held group is in redb now.
    fn published(&mut self) {
        self.held_records.clear();
        self.held_groups = 0;
        self.unpublished.store(false, Ordering::Release);
    }

    /// Buffered durability: syncs the log if anything written is not yet synced.
    pub(super) fn sync_log(&mut self) -> Result<(), Error> {
        if self.sync_deadline.is_some() {
            self.wal.sync()?;
            self.sync_deadline = None;
        }
        Ok(())
    }

    /// Buffered durability: syncs the log once its deadline has passed. A failure is
    /// retried with every group until it succeeds (the changes were acknowledged already).
    pub(super) fn sync_if_due(&mut self) {
        if self.sync_deadline.is_some_and(|d| d <= Instant::now())
            && let Err(e) = self.sync_log()
        {
            tracing::error!(error = %e, "taskspool cannot sync its write-ahead log; retrying");
        }
    }

    /// Commits durably to the queue file, which makes every earlier group durable there too;
    /// the log starts over under a new generation. These commits are rare (a checkpoint, a bulk
    /// group, open and close), so each also saves redb's allocator state ("quick repair").
    /// `closing`: this is the last commit, and the file is marked closed cleanly.
    ///
    /// The counters and counts go to the file here, with `tally`'s changes (see `Counts`).
    pub(super) fn commit_durable(
        &mut self,
        mut txn: WriteTransaction,
        tally: Option<Tally>,
        closing: bool,
    ) -> Result<(), Error> {
        // The allocator state goes with it, so redb's repair after a crash reads it back
        // instead of walking the whole file (see `crate::store::open`).
        txn.set_quick_repair(true);
        let old = self.wal.generation();
        let next = next_generation(old);
        {
            let mut meta = txn.open_table(META).db()?;
            meta.insert(META_WAL_GENERATION, next).db()?;
            meta.insert(META_WAL_PREVIOUS, old).db()?;
            meta.insert(META_CLOSED, u64::from(closing)).db()?;
        }
        let mut counts = self.counts.clone();
        let counters = match &tally {
            Some(tally) => {
                tally.apply(&mut counts);
                tally.counters
            }
            None => self.counters,
        };
        store_counts(&txn, &counts, counters)?;
        txn.commit().db()?;
        if let Some(tally) = &tally {
            self.keep(tally);
        }
        self.published();
        if let Err(e) = self.wal.reset(next) {
            // The file names the new generation already; the next record overwrites the first
            // one anyway (see `Wal::reset`).
            tracing::warn!(error = %e, "taskspool could not zero its write-ahead log's first record");
        }
        self.sync_deadline = None;
        self.checkpoint_due = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::options::Options;
    use crate::store::verbs::NewTask;
    use crate::store::writer::command::Command;
    use crate::store::writer::handle::{WriterHandle, spawn_opened};
    use crate::store::writer::state::lock;

    fn task() -> NewTask {
        NewTask {
            name: Arc::from("t"),
            payload: b"null".to_vec(),
            opts: Arc::new(Options::new().resolve(1_000).unwrap()),
            enqueued_at_ms: 1_000,
            origin: None,
            step: None,
        }
    }

    /// Buffered durability: an acknowledged group leaves the log unsynced, and the writer
    /// thread syncs it within the bound with no further command; a `Sync` syncs at once.
    #[test]
    fn buffered_durability_syncs_within_its_bound_and_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let opened = crate::store::open::open(&path, 1_000, None, 1 << 20, 1 << 20).unwrap();
        let (mut writer, _db) = spawn_opened(opened, Some(Duration::from_millis(50)));
        let unsynced = |w: &WriterHandle| lock(w.core()).sync_deadline.is_some();
        let enqueue = |w: &WriterHandle| {
            w.request(|reply| Command::Enqueue {
                tasks: vec![task()],
                reply,
            })
            .unwrap()
        };

        let start = Instant::now();
        enqueue(&writer);
        assert!(unsynced(&writer), "acknowledged before the sync");
        while unsynced(&writer) {
            assert!(start.elapsed() < Duration::from_secs(5), "never synced");
            std::thread::yield_now();
        }
        assert!(start.elapsed() >= Duration::from_millis(50), "synced early");

        enqueue(&writer);
        assert!(unsynced(&writer));
        writer.request(|reply| Command::Sync { reply }).unwrap();
        assert!(!unsynced(&writer), "a Sync syncs at once");
        writer.shutdown();
    }
}
