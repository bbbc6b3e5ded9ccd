//! Read-only inspection of a queue file no process owns (`Spool::inspect`): nothing is written
//! to the file or its log — no recovery, no pruning, no schedule fires.
//!
//! A file closed cleanly, of this build's format, is opened read-only by redb and read in
//! place. Any other — one whose owner died (redb would repair it; its log holds acknowledged
//! groups not yet in the file) or of an older format (no index by state) — is copied into
//! memory: redb repairs the copy, the log's records are applied to it, an older format's
//! index is built in it, and the original files stay byte for byte as they were.

use std::path::Path;
use std::sync::Mutex;

use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, StorageBackend,
    TableError, backends::InMemoryBackend,
};

use crate::error::Error;
use crate::flow::Limit;
use crate::model::TaskId;
use crate::query::{Paging, TaskFilter};
use crate::schedule::ScheduleInfo;
use crate::store::by_state;
use crate::store::catalog::Catalog;
use crate::store::check::{check_format, database_error, expect_of, log_damage};
use crate::store::counts::{CountsView, read_counts};
use crate::store::errors::{Db, redb_error};
use crate::store::flow::read_paused;
use crate::store::open::Create;
use crate::store::paths;
use crate::store::pools::LivePools;
use crate::store::query;
use crate::store::read::{self, view_of};
use crate::store::redo::Redo;
use crate::store::replay;
use crate::store::schema::{
    BY_STATE_FORMAT, COUNTS, FLOW, FORMAT_VERSION, META, META_FORMAT, Tables, each_table,
};
use crate::views::{Stats, TaskPage, TaskStatus, WorkflowStatus};

/// A snapshot of a closed queue file: read in place, or a repaired copy in memory.
pub(crate) enum Snapshot {
    InPlace(ReadOnlyDatabase),
    InMemory(Database),
}

impl Snapshot {
    /// Opens the closed queue file at `path` for reading (see the module docs).
    ///
    /// # Errors
    /// `AlreadyOpen` while a process owns the file; `NotAQueue`, `NewerFormat`, `Corrupt` (a
    /// damaged file or log) as at open; `Storage` on I/O failure.
    pub(crate) fn open(path: &Path) -> Result<Snapshot, Error> {
        paths::check(path)?;
        if !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Err(Error::BadPath {
                path: path.to_path_buf(),
                problem: "no queue file is there (it is missing or empty); check the path — \
                          an inspection never creates one"
                    .into(),
            });
        }
        let log = replay::read(path)?;
        match Database::builder().open_read_only(path) {
            Ok(db) => {
                let in_place = match read_meta(&db, path, log.as_deref())? {
                    (format, 0) => format == FORMAT_VERSION,
                    _ => false,
                };
                if in_place {
                    return Ok(Snapshot::InPlace(db));
                }
                drop(db);
                in_memory(path, log.as_deref())
            }
            // Its owner died: redb would repair it, which is a write.
            Err(DatabaseError::RepairAborted) => in_memory(path, log.as_deref()),
            Err(e) => Err(database_error(path, e)),
        }
    }

    fn begin_read(&self) -> Result<ReadTransaction, Error> {
        match self {
            Snapshot::InPlace(db) => db.begin_read().db(),
            Snapshot::InMemory(db) => db.begin_read().db(),
        }
    }

    /// Whether the file was copied into memory (its owner died, or its format is older).
    pub(crate) fn in_memory(&self) -> bool {
        matches!(self, Snapshot::InMemory(_))
    }

    /// A task's status, as the file holds it (a task that was running when its owner died
    /// reads as running).
    pub(crate) fn status(&self, id: TaskId) -> Result<TaskStatus, Error> {
        let read = self.begin_read()?;
        let rec = read::record(&read, id)?;
        let queue = Catalog::read(&read)?.queues.name(rec.queue).to_string();
        Ok(view_of(id, rec, queue, false))
    }

    /// A page of a listing (see `store::query`).
    pub(crate) fn tasks(&self, filter: &TaskFilter, paging: &Paging) -> Result<TaskPage, Error> {
        query::tasks(&self.begin_read()?, filter, paging, &|_, _| false)
    }

    /// The counts per queue and state, as the file holds them.
    pub(crate) fn stats(&self) -> Result<Stats, Error> {
        let read = self.begin_read()?;
        let counts = read_counts(&read.open_table(COUNTS).db()?)?;
        let paused = match read.open_table(FLOW) {
            Ok(table) => read_paused(&table)?,
            Err(TableError::TableDoesNotExist(_)) => Vec::new(),
            Err(e) => return Err(redb_error(e.into())),
        };
        let view = Mutex::new(CountsView {
            counts,
            catalog: Catalog::read(&read)?,
            paused,
        });
        read::stats(&view, &LivePools::default(), || self.begin_read())
    }

    /// Every schedule, as declared.
    pub(crate) fn schedules(&self) -> Result<Vec<ScheduleInfo>, Error> {
        read::schedules_of(&self.begin_read()?)
    }

    /// Every declared limit.
    pub(crate) fn limits(&self) -> Result<Vec<Limit>, Error> {
        read::limits_of(&self.begin_read()?)
    }

    /// A workflow's tasks by state.
    pub(crate) fn workflow(&self, id: TaskId) -> Result<WorkflowStatus, Error> {
        read::workflow_of(&self.begin_read()?, id)
    }
}

/// The file's format and how many log records it needs applied; checks the log is whole.
fn read_meta(
    db: &impl ReadableDatabase,
    path: &Path,
    log: Option<&[u8]>,
) -> Result<(u64, usize), Error> {
    if check_format(db, path)? {
        return Ok((FORMAT_VERSION, 0));
    }
    let read = db.begin_read().db()?;
    let meta = read.open_table(META).db()?;
    let expect = expect_of(&meta)?;
    let format = meta.get(META_FORMAT).db()?.map_or(0, |v| v.value());
    let scanned = replay::scan(log, &expect);
    if let Some(damage) = &scanned.damage {
        return Err(log_damage(path, damage));
    }
    Ok((format, scanned.records.len()))
}

/// A copy of the file in memory, repaired by redb, with the log applied and an older format's
/// index built.
fn in_memory(path: &Path, log: Option<&[u8]>) -> Result<Snapshot, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read the queue file", e))?;
    let memory = InMemoryBackend::new();
    let copy = |e: std::io::Error| Error::io("cannot copy the queue file into memory", e);
    memory.set_len(bytes.len() as u64).map_err(&copy)?;
    memory.write(0, &bytes).map_err(&copy)?;
    drop(bytes);
    let db = Database::builder()
        .create_with_backend(memory)
        .map_err(|e| database_error(path, e))?;
    let (format, _) = read_meta(&db, path, log)?;
    let txn = db.begin_write().db()?;
    {
        each_table(&mut Create(&txn))?;
        let expect = expect_of(&txn.open_table(META).db()?)?;
        let scanned = replay::scan(log, &expect);
        let mut tables = Tables::new(&txn, Redo::default());
        for record in &scanned.records {
            tables.replay(record)?;
        }
        drop(tables);
        if format < BY_STATE_FORMAT {
            by_state::build(&txn)?;
        }
    }
    txn.commit().map_err(|e| redb_error(e.into()))?;
    Ok(Snapshot::InMemory(db))
}
