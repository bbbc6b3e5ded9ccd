//! Checking a queue file before it is used, without writing to it: whether it is ours, of a
//! format this build reads, whole (redb's integrity check) and with a whole log; and the
//! errors that say what is wrong.

use std::os::unix::fs::OpenOptionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use redb::{Database, DatabaseError, Key, ReadableDatabase, ReadableTable, TableError, Value};

use crate::error::Error;
use crate::store::errors::from_redb;
use crate::store::errors::{Db, redb_error};
use crate::store::paths::{self, PRIVATE};
use crate::store::replay::{self, Damage, Expect};
use crate::store::schema::{
    FORMAT_VERSION, META, META_CLOSED, META_FORMAT, META_WAL_GENERATION, META_WAL_PREVIOUS,
    STRICT_LOG_FORMAT, each_table,
};
use crate::store::tables::TableVisitor;

/// What the file's meta table says about its log.
pub(super) fn expect_of(meta: &impl ReadableTable<&'static str, u64>) -> Result<Expect, Error> {
    let get =
        |key: &str| -> Result<Option<u64>, Error> { Ok(meta.get(key).db()?.map(|v| v.value())) };
    Ok(Expect {
        generation: get(META_WAL_GENERATION)?.unwrap_or(0),
        previous: get(META_WAL_PREVIOUS)?,
        closed: get(META_CLOSED)? == Some(1),
        strict: get(META_FORMAT)?.unwrap_or(0) >= STRICT_LOG_FORMAT,
    })
}

/// A full disk at open says how much room the open needs.
pub(super) fn needing(e: Error, room: u64) -> Error {
    match e {
        Error::DiskFull { needed: None } => Error::DiskFull { needed: Some(room) },
        other => other,
    }
}

/// The error for a damaged log of the queue file at `path`.
pub(super) fn log_damage(path: &Path, damage: &Damage) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "{}; to open it anyway and lose that, open it with \
             SpoolBuilder::accept_log_damage()",
            damage.describe(&paths::log(path))
        ),
    }
}

/// Checks an existing file and its log without writing to either: opening the file for
/// writing makes redb rewrite its header, so a foreign, newer or damaged file must be refused
/// before that. A file that needs redb's crash recovery cannot be opened read-only; it is
/// checked after the repair (`prepare_with` judges the log again).
///
/// A missing or empty queue file is a new queue — unless the log beside it holds changes
/// written since its last checkpoint: then the file was emptied, replaced or deleted while
/// in use, and starting a new queue would overwrite them. A file whose creation a power cut interrupted
/// ([`Found::Blank`], see [`is_blank`]) is a new queue too, on the same condition.
pub(super) fn precheck_read_only(
    path: &Path,
    log: Option<&[u8]>,
    accept: bool,
) -> Result<Found, Error> {
    let metadata = std::fs::metadata(path);
    if !metadata.as_ref().is_ok_and(|m| m.len() > 0) {
        let what = if metadata.is_ok() { "empty" } else { "missing" };
        return new_queue_beside(path, what, log, accept).map(|()| Found::New);
    }
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Database::builder().open_read_only(path)
    }));
    match opened {
        Ok(Ok(db)) => {
            check_format(&db, path)?;
            let read = db.begin_read().db()?;
            let expect = match read.open_table(META) {
                Ok(meta) => expect_of(&meta)?,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Found::New),
                Err(e) => return Err(redb_error(e.into())),
            };
            match replay::scan(log, &expect).damage {
                Some(damage) if !accept => Err(log_damage(path, &damage)),
                _ => Ok(Found::Queue),
            }
        }
        Ok(Err(DatabaseError::RepairAborted)) => Ok(Found::Queue),
        Ok(Err(DatabaseError::Storage(redb::StorageError::Io(io))))
            if io.kind() == std::io::ErrorKind::InvalidData && is_blank(path)? =>
        {
            new_queue_beside(path, "an unfinished new file", log, accept).map(|()| Found::Blank)
        }
        Ok(Err(e)) => Err(database_error(path, e)),
        Err(_) => Err(redb_panicked(path)),
    }
}

/// A new queue starts at `path` (a queue file that is `what`) — unless the log beside it
/// starts with a record: written since its file's last durable commit, it holds changes that
/// file may need, which a new queue would overwrite. (A log left by a file closed cleanly
/// starts with zeros.)
fn new_queue_beside(
    path: &Path,
    what: &str,
    log: Option<&[u8]>,
    accept: bool,
) -> Result<(), Error> {
    if accept || !log.is_some_and(replay::starts_with_a_record) {
        return Ok(());
    }
    Err(Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "the queue file is {what} but its write-ahead log {} holds changes written since \
             its last checkpoint: the file was emptied, replaced or deleted while it was in \
             use; restore it, or delete the log to start a new queue (or open with \
             SpoolBuilder::accept_log_damage())",
            paths::log(path).display()
        ),
    })
}

/// What the read-only check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// No file, an empty one, or a redb file without tables: a new queue.
    New,
    /// A file whose creation a power cut interrupted: a new queue once emptied.
    Blank,
    /// A queue file.
    Queue,
}

/// Whether the file at `path` is what a power cut leaves when it interrupts redb creating a
/// file: redb writes its header with the magic number zeroed, syncs, and only then writes the
/// magic (and after it, the first pages). So: no magic, and nothing past the header's page.
/// (Read only when redb finds no magic.)
fn is_blank(path: &Path) -> Result<bool, Error> {
    const MAGIC: usize = 9;
    const HEADER_PAGE: usize = 4096;
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read the queue file", e))?;
    let zero = |b: &[u8]| b.iter().all(|&b| b == 0);
    Ok(zero(&bytes[..MAGIC.min(bytes.len())]) && zero(bytes.get(HEADER_PAGE..).unwrap_or(&[])))
}

/// redb checks some on-disk invariants with debug assertions; a damaged file must still come
/// back as an error, so a panic while opening is reported as corruption.
fn redb_panicked(path: &Path) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail: "redb panicked while reading the file's structure".into(),
    }
}

/// redb's integrity check: the checksum of every page of the committed trees, verified
/// against what redb recorded. Damage is `Corrupt`; where redb could repair the file (to its
/// last intact commit), the open still fails, so that the loss is not silent — the next open
/// goes on with what is left (and finds the log newer than the file, if it held records).
pub(super) fn check_integrity(db: &mut Database, path: &Path) -> Result<(), Error> {
    match catch_unwind(AssertUnwindSafe(|| db.check_integrity())) {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: "redb's integrity check found damaged pages and repaired the file to its \
                     last intact commit: what was committed after it may be lost — restore a \
                     backup, or open the file again to go on with what is left"
                .into(),
        }),
        Ok(Err(e)) => Err(database_error(path, e)),
        Err(_) => Err(redb_panicked(path)),
    }
}

pub(super) fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, Error> {
    // A new file is created here, with its mode; redb initializes an empty file.
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE)
        .open(path);
    match created {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("cannot create the queue file", e)),
    }
    catch_unwind(AssertUnwindSafe(|| {
        Database::builder().set_cache_size(cache_bytes).create(path)
    }))
    .map_err(|_| redb_panicked(path))?
    .map_err(|e| database_error(path, e))
}

pub(super) fn database_error(path: &Path, e: DatabaseError) -> Error {
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
        DatabaseError::Storage(s) => redb_error(s.into()),
        other => from_redb(other),
    }
}

/// Whether the file is new (no tables). Errors if it is someone else's redb file or newer.
pub(super) fn check_format(db: &impl ReadableDatabase, path: &Path) -> Result<bool, Error> {
    let read = db.begin_read().db()?;
    let version = match read.open_table(META) {
        Ok(meta) => meta.get(META_FORMAT).db()?.map(|v| v.value()),
        Err(TableError::TableDoesNotExist(_)) => None,
        Err(TableError::TableTypeMismatch { .. }) => {
            return Err(Error::NotAQueue {
                path: path.to_path_buf(),
                detail: "its meta table has another layout".into(),
            });
        }
        Err(e) => return Err(redb_error(e.into())),
    };
    match version {
        Some(v) if v > FORMAT_VERSION => Err(Error::NewerFormat {
            path: path.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        }),
        Some(_) => {
            check_layout(&read, path)?;
            Ok(false)
        }
        None => {
            if read.list_tables().db()?.next().is_some() {
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

/// Checks that every table the file has uses this build's key and value types, so that a
/// file whose layout differs (say, from a pre-release build with the same format number)
/// is refused with a clear error instead of failing later inside a transaction.
fn check_layout(read: &redb::ReadTransaction, path: &Path) -> Result<(), Error> {
    struct Check<'a>(&'a redb::ReadTransaction, &'a Path);
    impl TableVisitor for Check<'_> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: redb::TableDefinition<'static, K, V>,
        ) -> Result<(), Error> {
            match self.0.open_table(table) {
                Ok(_) | Err(TableError::TableDoesNotExist(_)) => Ok(()),
                Err(TableError::TableTypeMismatch { table, .. }) => Err(Error::NotAQueue {
                    path: self.1.to_path_buf(),
                    detail: format!(
                        "its table {table} has another layout than this build writes; it was \
                         made by an incompatible taskspool build"
                    ),
                }),
                Err(TableError::TypeDefinitionChanged { name, .. }) => Err(Error::Corrupt {
                    path: self.1.to_path_buf(),
                    detail: format!(
                        "the stored definition of a table's type {} is damaged or not this                          build's; restore the file from a backup",
                        name.name()
                    ),
                }),
                Err(e) => Err(redb_error(e.into())),
            }
        }
    }
    each_table(&mut Check(read, path))
}
