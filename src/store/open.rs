//! Opening a queue file: checking it (`check`) before anything is written, creating or
//! upgrading the format, replaying the write-ahead log, and recovering the attempts a dead
//! owner left running (the file lock makes this process the only owner: whatever is in
//! `running` at open is an orphan).

use std::path::Path;

use redb::{Database, Key, ReadableTable, Value};

use crate::error::Error;
use crate::store::by_state;
use crate::store::catalog::Catalog;
use crate::store::check::{
    Found, check_format, check_integrity, expect_of, log_damage, needing, open_database,
    precheck_read_only,
};
use crate::store::counts::{Counters, Counts, load_counters, load_counts, store_counts};
use crate::store::errors::{Db, redb_error};
use crate::store::flow::Flow;
use crate::store::inflight::Inflight;
use crate::store::paths;
use crate::store::redo::Redo;
use crate::store::replay::{self, Scanned};
use crate::store::schema::{
    BY_STATE_FORMAT, FORMAT_VERSION, META, META_CLOSED, META_FORMAT, META_WAL_GENERATION,
    META_WAL_PREVIOUS, Tables, each_table,
};
use crate::store::tables::TableVisitor;
use crate::store::tx::{Lent, Tx};
use crate::store::wal::{self, Wal};

/// A database ready for the writer: format checked, log replayed, orphans requeued.
pub(crate) struct Opened {
    pub db: Database,
    pub counters: Counters,
    pub catalog: Catalog,
    pub inflight: Inflight,
    pub wal: Wal,
    pub counts: Counts,
    /// The declared limits and pauses, for the writer's mirror.
    pub flow: Flow,
    /// Chords a dead process left open while it stored them in parts (first id, sealed):
    /// the writer finishes or deletes them, a part per group (see `store::parts`).
    pub orphan_chords: Vec<(u64, bool)>,
    /// Attempts recovered at open: (started ones, only claimed ones).
    pub recovered: (u64, u64),
}

/// How to open a queue file.
pub(crate) struct Settings {
    pub now_ms: u64,
    pub result_ttl_ms: Option<u64>,
    pub cache_bytes: usize,
    pub checkpoint_bytes: u64,
    /// Open even if the write-ahead log is damaged, losing what the damage took (it is
    /// logged). Otherwise that is `Corrupt`.
    pub accept_log_damage: bool,
    /// Verify the checksum of every page of the file before using it (redb's integrity
    /// check), so that damage is reported at open instead of surfacing later.
    pub check_integrity: bool,
    /// Power-loss tests: the file and its log live on a simulated disk instead.
    #[cfg(test)]
    pub disk: Option<std::sync::Arc<crate::store::simdisk::SimDisk>>,
}

/// Opens (or creates) a queue file with the default settings but the clock and sizes (for
/// tests); see [`open_with`].
#[cfg(test)]
pub(crate) fn open(
    path: &Path,
    now_ms: u64,
    result_ttl_ms: Option<u64>,
    cache_bytes: usize,
    checkpoint_bytes: u64,
) -> Result<Opened, Error> {
    let settings = Settings {
        now_ms,
        result_ttl_ms,
        cache_bytes,
        checkpoint_bytes,
        accept_log_damage: false,
        check_integrity: true,
        disk: None,
    };
    open_with(path, &settings)
}

/// Opens (or creates) a queue file, checks it is ours, of a format we read and with a whole
/// log, replays the log and recovers orphaned attempts.
///
/// On `AlreadyOpen`, `Corrupt`, `NotAQueue` and `NewerFormat` nothing is written to the file.
pub(crate) fn open_with(path: &Path, settings: &Settings) -> Result<Opened, Error> {
    #[cfg(test)]
    if let Some(disk) = &settings.disk {
        return open_simulated(path, settings, disk);
    }
    paths::check(path)?;
    let log = replay::read(path)?;
    if precheck_read_only(path, log.as_deref(), settings.accept_log_damage)? == Found::Blank {
        // redb was creating it when the power went (it writes its magic number last): there
        // is nothing in it, and it starts over as a new queue.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0))
            .map_err(|e| Error::io("cannot reset a queue file of zeros", e))?;
    }
    let mut db = open_database(path, settings.cache_bytes)?;
    if settings.check_integrity {
        check_integrity(&mut db, path)?;
    }
    let mut opened = prepare_with(db, path, settings, log, || Wal::open(path))?;
    opened.wal.checkpoint_after(settings.checkpoint_bytes);
    Ok(opened)
}

/// A new queue on a simulated disk (power-loss tests): its file and log are recorded there;
/// its start journal is a real file beside `path`.
#[cfg(test)]
fn open_simulated(
    path: &Path,
    settings: &Settings,
    disk: &std::sync::Arc<crate::store::simdisk::SimDisk>,
) -> Result<Opened, Error> {
    use crate::store::simdisk::{LOG, QUEUE};
    let db = Database::builder()
        .set_cache_size(settings.cache_bytes)
        .create_with_backend(disk.file(QUEUE))
        .map_err(|e| crate::store::check::database_error(path, e))?;
    let log_file = disk.file(LOG);
    let mut opened = prepare_with(db, path, settings, None, || Wal::on(Box::new(log_file)))?;
    opened.wal.checkpoint_after(settings.checkpoint_bytes);
    Ok(opened)
}

/// [`prepare_with`] with the default settings (for tests that open redb themselves).
#[cfg(test)]
pub(crate) fn prepare(
    db: Database,
    path: &Path,
    now_ms: u64,
    result_ttl_ms: Option<u64>,
) -> Result<Opened, Error> {
    let settings = Settings {
        now_ms,
        result_ttl_ms,
        cache_bytes: 0,
        checkpoint_bytes: wal::CHECKPOINT_BYTES,
        accept_log_damage: false,
        check_integrity: false,
        disk: None,
    };
    prepare_with(db, path, &settings, replay::read(path)?, || Wal::open(path))
}

/// Initializes a new file or checks an existing one, applies its log again and recovers
/// orphaned attempts. `log` is the log as read before the file was opened; `open_log` opens
/// it for writing.
fn prepare_with(
    db: Database,
    path: &Path,
    settings: &Settings,
    log: Option<Vec<u8>>,
    open_log: impl FnOnce() -> Result<Wal, Error>,
) -> Result<Opened, Error> {
    let (now_ms, result_ttl_ms) = (settings.now_ms, settings.result_ttl_ms);
    let fresh = check_format(&db, path)?;
    // Only after the lock is ours and the file is known to be a queue.
    let started = Inflight::read_started(path)?;
    let mut txn = db.begin_write().db()?;
    // Durable commits save redb's allocator state, so that the repair after a crash does not
    // walk the whole file: they are rare (this one; then checkpoints, bulk groups and close),
    // and it cut the reopen of a 1M-task file after kill -9 from 343–368 ms to 188–202 ms.
    txn.set_quick_repair(true);
    let (counters, mut counts);
    let next_generation;
    let (lost, unstarted);
    let orphan_chords;
    // What the open needs free on the disk: room for the log's records in the queue file
    // (their pages, written twice by the copy-on-write commit), and for the log's first chunk.
    let room;
    {
        // Every table exists from the start (readers open them without creating them): in a
        // new file, and in an older one, which may lack the tables a newer format added. The
        // counters of a new file start at 1 (`load_counters`); `store_counts` below writes
        // them.
        each_table(&mut Create(&txn))?;
        // The format (new, or upgraded) and the log: its records since the last durable
        // commit are applied again; this commit then stores them and a new generation, which
        // retires them.
        let (expect, format) = {
            let mut meta = txn.open_table(META).db()?;
            let expect = expect_of(&meta)?;
            let format = match fresh {
                true => FORMAT_VERSION,
                false => meta.get(META_FORMAT).db()?.map_or(0, |v| v.value()),
            };
            next_generation = wal::next_generation(expect.generation);
            meta.insert(META_FORMAT, FORMAT_VERSION).db()?;
            meta.insert(META_WAL_GENERATION, next_generation).db()?;
            meta.insert(META_WAL_PREVIOUS, expect.generation).db()?;
            meta.insert(META_CLOSED, 0).db()?;
            (expect, format)
        };
        let scanned = match (fresh, log.as_deref()) {
            (false, log) => replay::scan(log, &expect),
            (true, _) => Scanned {
                records: Vec::new(),
                damage: None,
            },
        };
        if let Some(damage) = &scanned.damage {
            if !settings.accept_log_damage {
                return Err(log_damage(path, damage));
            }
            tracing::warn!(
                path = %path.display(),
                applied = scanned.records.len(),
                "opened a queue file whose write-ahead log is damaged, as asked \
                 (SpoolBuilder::accept_log_damage): {}; what the damage took is lost",
                damage.describe(&paths::log(path))
            );
        }
        room = 2 * scanned.records.iter().map(|r| r.len() as u64).sum::<u64>() + 2 * wal::GROWTH;
        let mut tables = Tables::new(&txn, Redo::default());
        for record in &scanned.records {
            tables.replay(record).map_err(|e| needing(e, room))?;
        }
        drop(tables);
        if !scanned.records.is_empty() {
            tracing::info!(
                records = scanned.records.len(),
                "applied the write-ahead log of a process that did not close the file"
            );
        }
        if format < BY_STATE_FORMAT {
            let indexed = by_state::build(&txn).map_err(|e| needing(e, room))?;
            tracing::info!(
                format,
                indexed,
                "upgraded the file: built its index of tasks by state"
            );
        }
        let loaded = load_counters(&txn)?;
        counts = load_counts(&txn)?;
        let tally = {
            let mut tx = Tx::open(&txn, now_ms, loaded, result_ttl_ms, Lent::default());
            (lost, unstarted) = tx.recover_orphans(&started)?;
            orphan_chords = tx.open_chords()?;
            if !orphan_chords.is_empty() {
                let sealed = orphan_chords.iter().filter(|(_, sealed)| *sealed).count();
                tracing::warn!(
                    sealed,
                    unsealed = orphan_chords.len() - sealed,
                    "a process died while it stored chords in parts: the sealed ones are \
                     finished, the others (whose enqueue never returned) deleted, a part at \
                     a time"
                );
            }
            tx.finish(&counts)?
        };
        tally.apply(&mut counts);
        counters = tally.counters;
        // This commit is durable: the file holds the counts from here on.
        store_counts(&txn, &counts, counters)?;
    }
    let catalog = Catalog::load(&txn)?;
    let flow = Flow::load(&txn)?;
    // Opened (or made whole) before the commit, without touching its records: once the file
    // names the new generation, the log must be there for it.
    let mut wal = open_log().map_err(|e| needing(e, room))?;
    txn.commit()
        .map_err(|e| needing(redb_error(e.into()), room))?;
    // The old journal and log are reset only now that recovery is durable.
    let inflight = Inflight::create(path)?;
    wal.reset(next_generation)?;
    if !lost.is_empty() || unstarted > 0 {
        tracing::warn!(
            started = lost.len(),
            prefetched = unstarted,
            "requeued attempts left by a process that died"
        );
    }
    if matches!(started, crate::store::inflight::Started::Unknown) && !lost.is_empty() {
        let shown: Vec<u64> = lost.iter().copied().take(20).collect();
        tracing::warn!(
            tasks = ?shown,
            count = lost.len(),
            "the start journal was missing, so every attempt that was running counts as \
             started (a lost attempt), also those that were only claimed ahead"
        );
    }
    Ok(Opened {
        db,
        counters,
        catalog,
        inflight,
        wal,
        counts,
        flow,
        orphan_chords,
        recovered: (lost.len() as u64, unstarted as u64),
    })
}

/// Creates every table in a new file (or those an older format lacks).
pub(super) struct Create<'a>(pub(super) &'a redb::WriteTransaction);

impl TableVisitor for Create<'_> {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: redb::TableDefinition<'static, K, V>,
    ) -> Result<(), Error> {
        self.0.open_table(table).map(drop).db()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::ReadableDatabase;

    use super::*;
    use crate::model::{AttemptErrorKind, TaskState};
    use crate::options::Options;
    use crate::store::schema::TASKS;
    use crate::store::verbs::NewTask;

    fn new_task(max_retries: u32) -> NewTask {
        NewTask {
            name: Arc::from("t"),
            payload: b"null".to_vec(),
            opts: Arc::new(
                Options::new()
                    .max_retries(max_retries)
                    .resolve(1_000)
                    .unwrap(),
            ),
            enqueued_at_ms: 1_000,
            origin: None,
            step: None,
        }
    }

    /// A new queue file at `path` with `n` tasks (allowing `max_retries`) handed to workers,
    /// committed, and the handle closed as a dead process would leave it (minus the journal
    /// entries, which the caller writes).
    fn file_with_running_tasks(path: &Path, n: usize, max_retries: u32) -> Opened {
        let opened = open(path, 1_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap();
        let txn = opened.db.begin_write().unwrap();
        let mut catalog = opened.catalog.clone();
        {
            let mut tx = Tx::open(&txn, 1_000, opened.counters, None, Lent::default());
            let ids = tx.intern("default", "t", &mut catalog).unwrap();
            for _ in 0..n {
                let id = tx.insert(new_task(max_retries), ids).unwrap().id.as_u64();
                let mut rec = tx.get(id).unwrap().unwrap();
                tx.start(id, &mut rec).unwrap();
            }
            let mut counts = opened.counts.clone();
            let tally = tx.finish(&counts).unwrap();
            drop(tx);
            tally.apply(&mut counts);
            store_counts(&txn, &counts, tally.counters).unwrap();
        }
        txn.commit().unwrap();
        opened
    }

    /// Three attempts were handed to workers when the process died; only the one recorded in
    /// the start journal had started. It counts as a lost attempt; the two prefetched ones get
    /// their attempt back — even with `max_retries(0)`, which must not fail a task that never ran.
    #[test]
    fn recovery_counts_only_started_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        let opened = file_with_running_tasks(&path, 3, 0);
        let slot = opened.inflight.acquire(1);
        opened.inflight.mark(slot, 2, 1);
        drop(opened);

        let reopened = open(&path, 2_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap();
        let txn = reopened.db.begin_write().unwrap();
        let mut tx = Tx::open(&txn, 2_000, reopened.counters, None, Lent::default());
        let started = tx.get(2).unwrap().unwrap();
        assert_eq!(
            started.state,
            TaskState::Failed,
            "max_retries(0) and it did run"
        );
        assert_eq!(started.attempts, 1);
        assert_eq!(started.errors[0].kind, AttemptErrorKind::WorkerLost);
        for id in [1, 3] {
            let rec = tx.get(id).unwrap().unwrap();
            assert_eq!(rec.state, TaskState::Ready, "task {id}");
            assert_eq!(rec.attempts, 0, "task {id} never started");
            assert!(rec.errors.is_empty());
        }
    }

    /// Without a journal (deleted, or lost with a power cut) every orphan counts.
    #[test]
    fn recovery_without_a_journal_counts_every_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.redb");
        drop(file_with_running_tasks(&path, 1, 3));
        std::fs::remove_file(paths::journal(&path)).unwrap();
        let reopened = open(&path, 2_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap();
        let txn = reopened.db.begin_write().unwrap();
        let mut tx = Tx::open(&txn, 2_000, reopened.counters, None, Lent::default());
        let rec = tx.get(1).unwrap().unwrap();
        assert_eq!((rec.state, rec.attempts), (TaskState::Ready, 1));
        assert_eq!(rec.errors[0].kind, AttemptErrorKind::WorkerLost);
    }

    /// Logs, without committing it to the file, a group that enqueues one task: what a crash
    /// right after the log's sync leaves behind.
    fn log_an_enqueue(opened: &mut Opened) {
        let txn = opened.db.begin_write().unwrap();
        let mut catalog = opened.catalog.clone();
        let mut tx = Tx::open(&txn, 1_000, opened.counters, None, Lent::default());
        let ids = tx.intern("default", "t", &mut catalog).unwrap();
        tx.insert(new_task(0), ids).unwrap();
        tx.finish(&opened.counts).unwrap();
        opened
            .wal
            .append(tx.tables().redo().bytes().unwrap(), true)
            .unwrap();
        drop(tx);
        txn.abort().unwrap();
    }

    fn task_count(path: &Path) -> u64 {
        let opened = open(path, 2_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap();
        let read = opened.db.begin_read().unwrap();
        redb::ReadableTableMetadata::len(&read.open_table(TASKS).unwrap()).unwrap()
    }

    /// Replay applies the log's records to the file they were written for. The log of another
    /// copy of the file, even one opened from the same original (each open and checkpoint
    /// draws a new random generation), is refused as foreign; opened anyway, as asked, its
    /// records are not applied.
    #[test]
    fn replay_applies_its_own_log_and_refuses_a_copys() {
        let dir = tempfile::tempdir().unwrap();
        let original = dir.path().join("q.redb");
        drop(open(&original, 1_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap());
        let (a, b) = (dir.path().join("a.redb"), dir.path().join("b.redb"));
        for copy in [&a, &b] {
            std::fs::copy(&original, copy).unwrap();
            std::fs::copy(paths::log(&original), paths::log(copy)).unwrap();
        }

        let mut opened_a = open(&a, 1_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap();
        let mut opened_b = open(&b, 1_000, None, 1 << 20, wal::CHECKPOINT_BYTES).unwrap();
        log_an_enqueue(&mut opened_a);
        log_an_enqueue(&mut opened_b);
        drop((opened_a, opened_b));
        // b's log replaces a's: a must not take b's records for its own.
        std::fs::copy(paths::log(&b), paths::log(&a)).unwrap();
        assert_eq!(task_count(&b), 1, "b's own record is replayed");
        match open(&a, 2_000, None, 1 << 20, wal::CHECKPOINT_BYTES) {
            Err(Error::Corrupt { detail, .. }) => {
                assert!(detail.contains("belongs to another queue file"), "{detail}")
            }
            other => panic!("a's open with b's log: {:?}", other.map(drop)),
        }
        let anyway = Settings {
            now_ms: 2_000,
            result_ttl_ms: None,
            cache_bytes: 1 << 20,
            checkpoint_bytes: wal::CHECKPOINT_BYTES,
            accept_log_damage: true,
            check_integrity: true,
            disk: None,
        };
        let opened = open_with(&a, &anyway).unwrap();
        let read = opened.db.begin_read().unwrap();
        let tasks = redb::ReadableTableMetadata::len(&read.open_table(TASKS).unwrap()).unwrap();
        assert_eq!(tasks, 0, "b's record is not a's");
    }
}
