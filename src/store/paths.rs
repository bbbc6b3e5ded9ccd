//! The files of one queue: the queue file itself, its write-ahead log (`<file>.wal`) and its
//! start journal (`<file>.inflight`), and the mode a spool creates them with.

use std::path::{Path, PathBuf};

/// The mode of every file a spool creates: only its owner may read or write it — tasks and
/// results can hold anything.
pub(crate) const PRIVATE: u32 = 0o600;

/// The log's path for a queue file.
pub(crate) fn log(queue: &Path) -> PathBuf {
    beside(queue, ".wal")
}

/// The start journal's path for a queue file.
pub(crate) fn journal(queue: &Path) -> PathBuf {
    beside(queue, ".inflight")
}

fn beside(queue: &Path, suffix: &str) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
