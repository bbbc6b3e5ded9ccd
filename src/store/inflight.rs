//! The start journal: which attempts worker threads started.
//!
//! Workers claim a few tasks ahead of their free threads (prefetch), so an attempt marked
//! `Running` in the queue file may never have started when the process dies. Recovery must
//! tell the two apart: a started attempt counts toward `max_retries` (so a task that kills the
//! process cannot loop forever); an attempt that never started must not (a task with
//! `max_retries(0)` must not fail without having run).
//!
//! Before running an attempt, a thread writes `(task id, attempt)` into the next 16-byte entry
//! of its own ring in a small file next to the queue (`<queue file>.inflight`) with `pwrite`,
//! without fsync. The write sits in the OS page cache, so it survives the process dying
//! (`kill -9`, abort, OOM); that is all it is for. After a power cut the journal may be stale
//! or missing: a missing journal makes recovery count every orphan (the conservative choice),
//! a stale one only says that an attempt started, which it did.
//!
//! An entry must outlive its attempt's completion until that completion is durable: a thread
//! that finished an attempt goes on to the next one at once, while the writer is still to
//! log the completion. A ring is therefore as long as the most attempts its thread can have
//! started without their completions being durable — a pool's threads plus its prefetch
//! (the engine hands a pool new attempts only once the completions applied before them are
//! durable, and never more than that many ahead), a drain's batch — so an entry is only
//! overwritten once its attempt's completion is in the log. A pool on a tokio runtime (feature
//! `tokio`) runs many attempts at once on few threads, so it takes a ring for each of its
//! places instead (a place runs one attempt at a time, as a thread does), of the same length
//! unless its places would take more than 64k entries in all (`pool::runtime`): then shorter,
//! which can only lose the note of an attempt that returned, never of one still running.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::error::Error;
use crate::store::paths::{self, PRIVATE};

const MAGIC: &[u8; 8] = b"TSPINFL1";
const HEADER: u64 = 16;
const SLOT: u64 = 16;
const CHECK: u32 = 0x5A5A_5A5A;

/// The journal file and its free rings.
#[derive(Debug)]
pub(crate) struct Inflight {
    file: File,
    free: Mutex<FreeRings>,
}

/// Where rings go: after the last one handed out, or in one given back (of the same length:
/// pools and their rings come and go rarely, so the file stays as large as the most rings
/// in use at once).
#[derive(Debug, Default)]
struct FreeRings {
    /// The first entry after every ring handed out so far.
    next: u64,
    /// Rings given back, as (first entry, entries).
    returned: Vec<(u64, u64)>,
}

/// What the journal said at open.
pub(crate) enum Started {
    /// The journal was readable: exactly these attempts had started.
    Known(HashSet<(u64, u32)>),
    /// No usable journal: treat every orphan as started.
    Unknown,
}

impl Started {
    pub(crate) fn contains(&self, id: u64, attempt: u32) -> bool {
        match self {
            Started::Known(set) => set.contains(&(id, attempt)),
            Started::Unknown => true,
        }
    }
}

fn check(id: u64, attempt: u32) -> u32 {
    (id as u32) ^ ((id >> 32) as u32) ^ attempt.rotate_left(16) ^ CHECK
}

fn io(e: std::io::Error) -> Error {
    Error::io("start journal", e)
}

impl Inflight {
    /// Reads what the previous owner left. Call only while holding the queue file's lock,
    /// and start the new journal with [`create`](Self::create) only after recovery has
    /// committed: until then the old entries are the only record of which attempts started.
    pub(crate) fn read_started(queue: &Path) -> Result<Started, Error> {
        match File::open(paths::journal(queue)) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io)?;
                Ok(parse(&bytes))
            }
            Err(_) => Ok(Started::Unknown),
        }
    }

    /// Starts an empty journal for this process.
    pub(crate) fn create(queue: &Path) -> Result<Inflight, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(PRIVATE)
            .open(paths::journal(queue))
            .map_err(io)?;
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        file.write_all_at(&header, 0).map_err(io)?;
        Ok(Inflight {
            file,
            free: Mutex::new(FreeRings::default()),
        })
    }

    /// A ring of `entries` for one thread; returns its first entry. Give it back with
    /// [`release`](Self::release).
    pub(crate) fn acquire(&self, entries: u64) -> u64 {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = free.returned.iter().position(|r| r.1 == entries) {
            return free.returned.swap_remove(i).0;
        }
        let first = free.next;
        free.next += entries;
        first
    }

    /// Gives back the ring of `entries` starting at entry `first`.
    pub(crate) fn release(&self, first: u64, entries: u64) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .returned
            .push((first, entries));
    }

    /// Records that a thread is starting this attempt, in entry `entry` (the ring's first
    /// entry plus the thread's start count modulo the ring's length). Best effort: a failed
    /// write only makes recovery count orphans as started (logged).
    pub(crate) fn mark(&self, entry: u64, id: u64, attempt: u32) {
        let mut note = [0u8; SLOT as usize];
        note[..8].copy_from_slice(&id.to_le_bytes());
        note[8..12].copy_from_slice(&attempt.to_le_bytes());
        note[12..].copy_from_slice(&check(id, attempt).to_le_bytes());
        if let Err(e) = self.file.write_all_at(&note, HEADER + entry * SLOT) {
            tracing::warn!(error = %e, "could not record an attempt start in the start journal");
        }
    }
}

fn parse(bytes: &[u8]) -> Started {
    if bytes.len() < HEADER as usize || &bytes[..8] != MAGIC {
        return Started::Unknown;
    }
    let mut set = HashSet::new();
    for entry in bytes[HEADER as usize..].chunks_exact(SLOT as usize) {
        let id = u64::from_le_bytes(entry[..8].try_into().unwrap_or_default());
        let attempt = u32::from_le_bytes(entry[8..12].try_into().unwrap_or_default());
        let sum = u32::from_le_bytes(entry[12..].try_into().unwrap_or_default());
        if attempt > 0 && sum == check(id, attempt) {
            set.insert((id, attempt));
        }
    }
    Started::Known(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_reopen_and_torn_entries_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("q.redb");
        assert!(
            matches!(Inflight::read_started(&queue).unwrap(), Started::Unknown),
            "no journal before the first open"
        );
        let journal = Inflight::create(&queue).unwrap();
        let a = journal.acquire(1);
        let b = journal.acquire(1);
        journal.mark(a, 7, 1);
        journal.mark(b, 9, 3);
        journal.mark(a, 8, 2); // a ring of one: task 7 finished, task 8 started
        drop(journal);
        // A torn write: a third entry with a bad check value.
        let f = OpenOptions::new()
            .write(true)
            .open(paths::journal(&queue))
            .unwrap();
        f.write_all_at(
            &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
            HEADER + 2 * SLOT,
        )
        .unwrap();
        let started = Inflight::read_started(&queue).unwrap();
        assert!(started.contains(8, 2));
        assert!(started.contains(9, 3));
        assert!(
            !started.contains(7, 1),
            "overwritten by the ring's next start"
        );
        assert!(!started.contains(1, 1), "torn entry ignored");
        // Reading leaves it as it was; creating resets it for the new owner.
        assert!(Inflight::read_started(&queue).unwrap().contains(8, 2));
        let _journal = Inflight::create(&queue).unwrap();
        assert!(!Inflight::read_started(&queue).unwrap().contains(8, 2));
    }
}
