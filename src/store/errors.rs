//! redb's errors as the crate's [`Error`]: the one place outside the engine's own code that
//! redb's error types reach. Every conversion keeps the redb error as the source.
//!
//! The conversion is a crate-private extension trait ([`Db::db`]), not `From` impls, so the
//! public [`Error`] does not name redb's types (its API would otherwise be tied to one redb
//! version).

use crate::error::Error;

/// redb fails its handle for good after an I/O error (a full disk, say): every later
/// operation reports `PreviousIo` until the file is reopened.
const PREVIOUS_IO: &str = "an earlier I/O error (such as a full disk) stopped this queue file's \
     handle; nothing since was applied — drop every Spool handle and open the file again \
     (acknowledged tasks are safe; running ones are recovered at the next open)";

/// A redb result as the crate's: `redb_call().db()?`.
pub(crate) trait Db<T> {
    /// The result with redb's error converted to [`Error`].
    fn db(self) -> Result<T, Error>;
}

impl<T, E: Into<redb::Error>> Db<T> for Result<T, E> {
    fn db(self) -> Result<T, Error> {
        self.map_err(|e| redb_error(e.into()))
    }
}

/// Any redb error as the crate's: I/O errors as [`Error::io`], a handle stopped by an earlier
/// I/O error with advice, the rest with redb's text.
pub(crate) fn redb_error(e: redb::Error) -> Error {
    match e {
        redb::Error::Io(io) => Error::io("I/O error", io),
        redb::Error::PreviousIo => Error::Storage {
            message: PREVIOUS_IO.into(),
            source: Some(std::sync::Arc::new(redb::Error::PreviousIo)),
        },
        other => from_redb(other),
    }
}

/// A redb error whose text says it all: the message is its text, the source the error.
pub(crate) fn from_redb(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage {
        message: e.to_string(),
        source: Some(std::sync::Arc::new(e)),
    }
}
