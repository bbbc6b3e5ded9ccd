//! redb's errors as the crate's [`Error`]: the one place outside the engine's own code that
//! redb's error types reach. Every conversion keeps the redb error as the source.

use crate::error::Error;

/// redb fails its handle for good after an I/O error (a full disk, say): every later
/// operation reports `PreviousIo` until the file is reopened.
const PREVIOUS_IO: &str = "an earlier I/O error (such as a full disk) stopped this queue file's \
     handle; nothing since was applied — drop every Spool handle and open the file again \
     (acknowledged tasks are safe; running ones are recovered at the next open)";

impl From<redb::StorageError> for Error {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(io) => Error::io("I/O error", io),
            redb::StorageError::PreviousIo => Error::Storage {
                message: PREVIOUS_IO.into(),
                source: Some(std::sync::Arc::new(redb::StorageError::PreviousIo)),
            },
            other => from_redb(other),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(io) => Error::io("I/O error", io),
            redb::Error::PreviousIo => Error::Storage {
                message: PREVIOUS_IO.into(),
                source: Some(std::sync::Arc::new(redb::Error::PreviousIo)),
            },
            other => from_redb(other),
        }
    }
}

/// A redb error whose text says it all: the message is its text, the source the error.
pub(crate) fn from_redb(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage {
        message: e.to_string(),
        source: Some(std::sync::Arc::new(e)),
    }
}

macro_rules! via_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
via_redb_error!(
    redb::TransactionError,
    redb::TableError,
    redb::CommitError,
    redb::SetDurabilityError
);
