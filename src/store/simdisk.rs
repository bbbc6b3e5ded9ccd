//! A simulated disk for power-loss tests. Every write and sync of a spool's queue file (as
//! redb's storage backend) and of its write-ahead log (as its [`LogFile`]) is recorded, in
//! one order. [`SimDisk::image_at`] rebuilds both files as a power cut right after the k-th
//! sync would leave them: everything synced before it, plus — if asked — a random part of
//! what was written since and not synced (a disk may keep any of it, in any order).
//!
//! The start journal is not simulated: a power cut may lose it whole, which is what the
//! tests assume (recovery then counts every orphan as started).

use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};

use redb::{BackendError, StorageBackend};

use crate::store::wal::LogFile;

/// The queue file's index among the simulated files.
pub(crate) const QUEUE: usize = 0;
/// The log's.
pub(crate) const LOG: usize = 1;

enum Op {
    Write {
        file: usize,
        offset: u64,
        data: Vec<u8>,
    },
    SetLen {
        file: usize,
        len: u64,
    },
    Sync {
        file: usize,
    },
}

#[derive(Default)]
struct Inner {
    /// What a reader of each file sees now (the page cache).
    seen: [Vec<u8>; 2],
    /// Every write and sync, in order.
    ops: Vec<Op>,
    /// Where each sync stands in `ops`, in order.
    syncs: Vec<usize>,
}

/// The simulated disk under one spool.
#[derive(Default)]
pub(crate) struct SimDisk {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisk")
            .field("syncs", &self.syncs())
            .finish()
    }
}

fn apply(file: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data, .. } => {
            let end = *offset as usize + data.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen { len, .. } => file.resize(*len as usize, 0),
        Op::Sync { .. } => {}
    }
}

impl SimDisk {
    pub(crate) fn new() -> Arc<SimDisk> {
        Arc::new(SimDisk::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One of the simulated files.
    pub(crate) fn file(self: &Arc<Self>, id: usize) -> SimFile {
        SimFile {
            disk: self.clone(),
            id,
        }
    }

    /// How many syncs there have been.
    pub(crate) fn syncs(&self) -> u64 {
        self.lock().syncs.len() as u64
    }

    /// The two files (queue file, log) as a power cut right after sync `k` (from 1) leaves
    /// them; `None` for a file never synced by then. With `rng`, each write since a file's
    /// last sync is kept or lost at random.
    pub(crate) fn image_at(&self, k: u64, rng: Option<&mut fastrand::Rng>) -> [Option<Vec<u8>>; 2] {
        let inner = self.lock();
        let cut = inner.syncs[(k - 1) as usize];
        let mut rng = rng;
        [QUEUE, LOG].map(|id| {
            let last_sync = inner.ops[..=cut]
                .iter()
                .rposition(|op| matches!(op, Op::Sync { file } if *file == id))?;
            let mut image = Vec::new();
            for (at, op) in inner.ops[..=cut].iter().enumerate() {
                let file = match op {
                    Op::Write { file, .. } | Op::SetLen { file, .. } => *file,
                    Op::Sync { .. } => continue,
                };
                if file != id {
                    continue;
                }
                let keep = at < last_sync || rng.as_mut().is_some_and(|r| r.bool());
                if keep {
                    apply(&mut image, op);
                }
            }
            Some(image)
        })
    }
}

/// One simulated file.
#[derive(Clone)]
pub(crate) struct SimFile {
    disk: Arc<SimDisk>,
    id: usize,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFile").field("id", &self.id).finish()
    }
}

impl SimFile {
    fn record(&self, op: Op) {
        let mut inner = self.disk.lock();
        if let Op::Sync { .. } = op {
            let at = inner.ops.len();
            inner.syncs.push(at);
        } else {
            apply(&mut inner.seen[self.id], &op);
        }
        inner.ops.push(op);
    }
}

impl StorageBackend for SimFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.disk.lock().seen[self.id].len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let inner = self.disk.lock();
        let file = &inner.seen[self.id];
        let start = offset as usize;
        match file.get(start..start + out.len()) {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.record(Op::SetLen { file: self.id, len });
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.record(Op::Sync { file: self.id });
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.record(Op::Write {
            file: self.id,
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn try_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn unlock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }
}

impl LogFile for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        StorageBackend::write(self, offset, buf)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        StorageBackend::sync_data(self)
    }

    fn sync_all(&self) -> std::io::Result<()> {
        StorageBackend::sync_data(self)
    }

    fn len(&self) -> std::io::Result<u64> {
        StorageBackend::len(self)
    }
}
