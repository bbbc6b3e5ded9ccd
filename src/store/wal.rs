//! The write-ahead log, `<queue file>.wal`: what makes a group durable between checkpoints.
//!
//! A group's redo record (every row it changed, see `redo`) is written here and synced with
//! one `fdatasync`; only then are its callers answered. Its redb transaction is committed
//! later, without a sync (see `writer::commit`). Every [`CHECKPOINT_BYTES`] of log, a group
//! is committed to redb durably instead, which makes every earlier one durable in the queue
//! file itself; the log then starts over from its first byte. The file is overwritten in
//! place rather than truncated, so a sync rarely has file-size metadata to write.
//!
//! Each record is `payload length (u32 LE) · CRC-32 (u32 LE) · generation (u64 LE) · payload`;
//! the CRC covers the length, the generation and the payload. The generation names the log
//! since the queue file's last durable commit, which stored it in the file's meta table (with
//! the generation before it): a random number, so it matches neither an older log of this
//! file nor a log left by another copy of it. After every durable commit the log's first
//! record is zeroed and synced, so the log starts with the current generation's records,
//! with the retired ones of the generation before, or with nothing. How the log is read back
//! at open, and what counts as damage, is in `replay`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use crate::error::Error;
use crate::store::paths::{self, PRIVATE};

/// Log size after which the next group is a checkpoint (a durable redb commit), by default.
pub(crate) const CHECKPOINT_BYTES: u64 = 16 << 20;

/// A group whose redo record is larger than this is committed to redb durably instead of being
/// logged: a bulk enqueue would otherwise be written twice.
pub(crate) const DIRECT_BYTES: usize = 256 << 10;

/// A record's header: length, CRC, generation.
pub(crate) const HEADER: usize = 16;

/// The log grows by whole chunks of zeros, written and synced once: a record is then always
/// written over allocated blocks, and its `fdatasync` has no file size to store. (Blocks from
/// `fallocate` would not do: the first write into one converts its extent, which is metadata.)
pub(crate) const GROWTH: u64 = 1 << 20;

/// A new generation for the log after `old`: random, so that it never matches an older
/// generation of this file, nor the log of another copy of it left next to it.
pub(crate) fn next_generation(old: u64) -> u64 {
    loop {
        let next = fastrand::u64(1..);
        if next != old {
            return next;
        }
    }
}

fn io(e: std::io::Error) -> Error {
    Error::io("write-ahead log", e)
}

/// A record's CRC-32, over its length, generation and payload.
pub(crate) fn checksum(len: u32, generation: u64, payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&generation.to_le_bytes());
    crc.update(payload);
    crc.finalize()
}

/// Fault injection: while set, every append in this process waits (a group that cannot
/// become durable, for crash tests that kill the process then).
#[cfg(test)]
pub(crate) static STALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The file a log writes to: the real `.wal` file, or (in tests) a simulated disk that can
/// be cut off at any sync.
pub(crate) trait LogFile: Send {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    fn sync_data(&self) -> std::io::Result<()>;
    fn sync_all(&self) -> std::io::Result<()>;
    fn len(&self) -> std::io::Result<u64>;
}

impl LogFile for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> std::io::Result<()> {
        File::sync_all(self)
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// The open log of a running spool.
pub(crate) struct Wal {
    file: Box<dyn LogFile>,
    generation: u64,
    /// Where the next record goes.
    offset: u64,
    /// The file's length: bytes past `offset` and below this are already allocated.
    allocated: u64,
    buf: Vec<u8>,
    /// Log size at which [`Wal::full`] says a checkpoint is due.
    checkpoint_bytes: u64,
    /// Fault injection: while set, appends fail as on a full disk.
    #[cfg(test)]
    pub(crate) full: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Fault injection: this many next appends fail as on a full disk.
    #[cfg(test)]
    pub(crate) fail_next: usize,
}

impl Wal {
    /// Opens (or creates) the log of `queue` without touching what it holds, and makes sure
    /// it has at least one whole chunk. It writes nothing until [`Wal::reset`] names the
    /// generation the queue file durably holds.
    pub(crate) fn open(queue: &Path) -> Result<Wal, Error> {
        let path = paths::log(queue);
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(PRIVATE)
            .open(&path)
            .map_err(io)?;
        if !existed {
            // The new name must survive a power cut along with the records written under it.
            file.sync_all().map_err(io)?;
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        Wal::on(Box::new(file))
    }

    /// A log on `file` (the real one, or a simulated one in tests); see [`Wal::open`].
    pub(crate) fn on(file: Box<dyn LogFile>) -> Result<Wal, Error> {
        let allocated = file.len().map_err(io)?;
        let mut wal = Wal {
            file,
            generation: 0,
            offset: 0,
            allocated,
            buf: Vec::new(),
            checkpoint_bytes: CHECKPOINT_BYTES,
            #[cfg(test)]
            full: None,
            #[cfg(test)]
            fail_next: 0,
        };
        // A log is never shorter than one chunk once a spool has opened it, so that a
        // shorter one can only have been cut (see `replay`).
        if wal.allocated < GROWTH {
            wal.grow(GROWTH)?;
        }
        Ok(wal)
    }

    /// The generation whose records this log writes.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets the log size after which the next group is a checkpoint.
    pub(crate) fn checkpoint_after(&mut self, bytes: u64) {
        self.checkpoint_bytes = bytes;
    }

    /// Whether the next group should be a checkpoint.
    pub(crate) fn full(&self) -> bool {
        self.offset >= self.checkpoint_bytes
    }

    /// Appends one record, and syncs it if `sync` (otherwise [`Wal::sync`] must follow
    /// within the spool's durability bound); returns its offset.
    pub(crate) fn append(&mut self, payload: &[u8], sync: bool) -> Result<u64, Error> {
        let len = u32::try_from(payload.len())
            .map_err(|_| Error::storage("write-ahead log: record over 4 GiB"))?;
        self.buf.clear();
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&checksum(len, self.generation, payload).to_le_bytes());
        self.buf.extend_from_slice(&self.generation.to_le_bytes());
        self.buf.extend_from_slice(payload);
        let start = self.offset;
        #[cfg(test)]
        while STALL.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        #[cfg(test)]
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(io(std::io::ErrorKind::StorageFull.into()));
        }
        #[cfg(test)]
        if self
            .full
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(io(std::io::ErrorKind::StorageFull.into()));
        }
        let end = start + self.buf.len() as u64;
        if end > self.allocated {
            self.grow(end)?;
        }
        self.file.write_all_at(&self.buf, start).map_err(io)?;
        if sync {
            self.file.sync_data().map_err(io)?;
        }
        self.offset = end;
        Ok(start)
    }

    /// Syncs every record written so far.
    pub(crate) fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_data().map_err(io)
    }

    /// Extends the file with zeros to the next whole chunk past `end`.
    fn grow(&mut self, end: u64) -> Result<(), Error> {
        let target = end.next_multiple_of(GROWTH);
        let zeros = vec![0u8; GROWTH as usize];
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(GROWTH);
            self.file
                .write_all_at(&zeros[..n as usize], at)
                .map_err(io)?;
            at += n;
        }
        self.file.sync_all().map_err(io)?;
        self.allocated = target;
        Ok(())
    }

    /// After a durable commit that stored `generation`: the log starts over under it, and
    /// its first record is zeroed and synced (so the log never starts with a record older
    /// than the generation before `generation`, see `replay`). The new generation holds even
    /// if the zeroing fails: the next record overwrites the first one anyway.
    pub(crate) fn reset(&mut self, generation: u64) -> Result<(), Error> {
        self.generation = generation;
        self.offset = 0;
        self.file.write_all_at(&[0; HEADER], 0).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::replay::{Expect, read, scan};

    fn records(queue: &Path, generation: u64) -> Vec<Vec<u8>> {
        let log = read(queue).unwrap();
        let expect = Expect {
            generation,
            previous: None,
            closed: false,
            strict: false,
        };
        let scanned = scan(log.as_deref(), &expect);
        scanned.records.iter().map(|r| r.to_vec()).collect()
    }

    #[test]
    fn replay_stops_at_a_torn_record_and_an_older_generation() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("q.redb");
        assert!(records(&queue, 1).is_empty(), "no log yet");

        let mut wal = Wal::open(&queue).unwrap();
        assert!(records(&queue, 1).is_empty(), "a new log is zeros");
        wal.reset(1).unwrap();
        for i in 0..4u8 {
            wal.append(&[i; 100], true).unwrap();
        }
        assert_eq!(records(&queue, 1).len(), 4);
        assert!(records(&queue, 2).is_empty(), "another generation");

        // A new generation overwrites from the start; the old records after it are ignored.
        wal.reset(2).unwrap();
        assert!(
            records(&queue, 1).is_empty(),
            "the reset zeroed the first record"
        );
        wal.append(b"first of 2", true).unwrap();
        assert_eq!(records(&queue, 2), vec![b"first of 2".to_vec()]);

        wal.append(b"second of 2", true).unwrap();
        assert_eq!(records(&queue, 2).len(), 2);

        // A torn record (its last byte never reached the disk) ends the log.
        let third = wal.append(b"third of 2", true).unwrap();
        let file = OpenOptions::new()
            .write(true)
            .open(paths::log(&queue))
            .unwrap();
        let last = third + HEADER as u64 + b"third of 2".len() as u64 - 1;
        FileExt::write_all_at(&file, b"X", last).unwrap();
        assert_eq!(
            records(&queue, 2),
            vec![b"first of 2".to_vec(), b"second of 2".to_vec()]
        );
    }
}
