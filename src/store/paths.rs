//! The files of one queue: the queue file itself, its write-ahead log (`<file>.wal`), its
//! start journal (`<file>.inflight`) and its owner's control socket (`<file>.sock`), and the
//! mode a spool creates them with.

use std::path::{Path, PathBuf};

use crate::error::Error;

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

/// The control socket's path for a queue file (see `crate::serve`).
pub(crate) fn socket(queue: &Path) -> PathBuf {
    beside(queue, ".sock")
}

fn beside(queue: &Path, suffix: &str) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Checks that `queue` can name a queue file before anything is opened: not empty, not a
/// directory, and in a directory that exists.
///
/// # Errors
/// `BadPath` naming the path and what is wrong with it.
pub(crate) fn check(queue: &Path) -> Result<(), Error> {
    let bad = |problem: String| {
        Err(Error::BadPath {
            path: queue.to_path_buf(),
            problem,
        })
    };
    if queue.as_os_str().is_empty() {
        return bad(
            "the path is empty; pass the path of a queue file, such as \"jobs.redb\"".into(),
        );
    }
    if queue.is_dir() {
        return bad(format!(
            "it is a directory; pass the path of a file in it, such as {}",
            queue.join("queue.redb").display()
        ));
    }
    if queue.file_name().is_none() {
        return bad(
            "it names no file; pass the path of a queue file, such as \"jobs.redb\"".into(),
        );
    }
    let parent = match queue.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        // A bare file name: the current directory.
        _ => return Ok(()),
    };
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => bad(format!("{} is not a directory", parent.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bad(format!(
            "its directory {} does not exist; create it first (taskspool creates the queue \
             file, not its directory)",
            parent.display()
        )),
        // Unreadable for another reason (permissions): the open reports it.
        Err(_) => Ok(()),
    }
}
