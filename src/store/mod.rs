//! Storage: the redb schema, the task record, the transitions applied in write transactions,
//! and the writer thread that owns them. Opening a file validates its format and recovers
//! the attempts a dead process left running.

pub(crate) mod record;
pub(crate) mod schedules;
pub(crate) mod schema;
pub(crate) mod transitions;
pub(crate) mod writer;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableError};

use crate::error::Error;
use schema::*;
use transitions::{Counters, QueueMap, Tx};

/// A database ready for the writer: format checked, orphans requeued.
pub(crate) struct Opened {
    pub db: Database,
    pub counters: Counters,
    pub queues: QueueMap,
}

/// Opens (or creates) a queue file, checks it is ours and of a format we read, and recovers
/// orphaned attempts.
///
/// On `AlreadyOpen`, `Corrupt`, `NotAQueue` and `NewerFormat` nothing is written to the file.
pub(crate) fn open(path: &Path, now_ms: u64, result_ttl_ms: Option<u64>) -> Result<Opened, Error> {
    precheck_read_only(path)?;
    let db = open_database(path)?;
    let fresh = check_format(&db, path)?;
    let txn = db.begin_write()?;
    let counters;
    let orphans;
    {
        if fresh {
            let mut meta = txn.open_table(META)?;
            meta.insert(META_FORMAT, FORMAT_VERSION)?;
            meta.insert(META_NEXT_ID, 1)?;
            meta.insert(META_NEXT_SEQ, 1)?;
        }
        let loaded = {
            let meta = txn.open_table(META)?;
            let get = |key: &str| -> Result<u64, Error> {
                Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(1))
            };
            Counters {
                next_id: get(META_NEXT_ID)?,
                next_seq: get(META_NEXT_SEQ)?,
            }
        };
        let mut tx = Tx::open(&txn, now_ms, loaded, result_ttl_ms)?;
        orphans = tx.recover_orphans()?;
        tx.finish()?;
        counters = tx.counters;
    }
    let queues = QueueMap::load(&txn)?;
    txn.commit()?;
    if orphans > 0 {
        tracing::warn!(
            orphans,
            "requeued attempts left running by a process that died"
        );
    }
    Ok(Opened {
        db,
        counters,
        queues,
    })
}

/// Checks an existing file without writing to it: opening it for writing makes redb rewrite
/// its header, so a foreign, newer or damaged file must be refused before that. A file that
/// needs redb's crash recovery cannot be opened read-only; it is checked after the repair.
fn precheck_read_only(path: &Path) -> Result<(), Error> {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let opened = catch_unwind(AssertUnwindSafe(|| Database::builder().open_read_only(path)));
    match opened {
        Ok(Ok(db)) => check_format(&db, path).map(drop),
        Ok(Err(DatabaseError::RepairAborted)) => Ok(()),
        Ok(Err(e)) => Err(database_error(path, e)),
        Err(_) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: "redb panicked while reading the file's structure".into(),
        }),
    }
}

fn open_database(path: &Path) -> Result<Database, Error> {
    // redb checks some on-disk invariants with debug assertions; a damaged file must still
    // come back as an error, so a panic during open is reported as corruption.
    let opened = catch_unwind(AssertUnwindSafe(|| Database::builder().create(path)));
    let result = match opened {
        Ok(result) => result,
        Err(_) => {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: "redb panicked while reading the file's structure".into(),
            });
        }
    };
    result.map_err(|e| database_error(path, e))
}

fn database_error(path: &Path, e: DatabaseError) -> Error {
    let path = path.to_path_buf();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            Error::AlreadyOpen { path }
        }
        DatabaseError::UpgradeRequired(v) => Error::NotAQueue {
            path,
            detail: format!("it uses redb file format {v}, which needs an upgrade"),
        },
        DatabaseError::RepairAborted => Error::Corrupt {
            path,
            detail: "redb could not repair it".into(),
        },
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            Error::NotAQueue {
                path,
                detail: format!("not a redb database: {io}"),
            }
        }
        DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            Error::Corrupt { path, detail }
        }
        // The file ends inside redb's header: cut short.
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            Error::Corrupt {
                path,
                detail: format!("the file is truncated: {io}"),
            }
        }
        DatabaseError::Storage(s) => s.into(),
        other => Error::Storage(other.to_string()),
    }
}

/// Whether the file is new (no tables). Errors if it is someone else's redb file or newer.
fn check_format(db: &impl ReadableDatabase, path: &Path) -> Result<bool, Error> {
    let read = db.begin_read()?;
    let version = match read.open_table(META) {
        Ok(meta) => meta.get(META_FORMAT)?.map(|v| v.value()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(TableError::TableTypeMismatch { .. }) => {
            return Err(Error::NotAQueue {
                path: path.to_path_buf(),
                detail: "its meta table has another layout".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    match version {
        Some(v) if v > FORMAT_VERSION => Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        }),
        Some(_) => Ok(false),
        None => {
            if read.list_tables()?.next().is_some() {
                Err(Error::NotAQueue {
                    path: path.to_path_buf(),
                    detail: "it is a redb database with other tables and no taskspool metadata"
                        .into(),
                })
            } else {
                Ok(true)
            }
        }
    }
}
