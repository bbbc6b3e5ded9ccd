//! The redo record of one write transaction: every row it puts or deletes, in order.
//!
//! The writer makes most groups durable by appending this record to the write-ahead log (see
//! `wal`): one small sequential write and one `fdatasync`, where a durable redb commit writes
//! a handful of scattered pages and syncs twice. At open, the records written since the last
//! durable commit are applied again, row by row, which restores exactly the acknowledged
//! state; the writer does the same after a failure rolls back its open transaction (see
//! `writer::commit`).
//!
//! Writes go through [`Logged`], a table handle that records each change before making it.
//! It dereferences to the redb table for reads only, so a write cannot bypass the record,
//! and whether a transaction changed anything is whether its record has a row
//! ([`Redo::changed`]): nothing is set by hand.

use std::borrow::Borrow;
use std::ops::{Deref, RangeBounds};

use redb::{Key, Table, Value};

use crate::error::Error;
use crate::store::errors::Db;

/// Put a row (key, value).
const PUT: u8 = 0;
/// Delete a row (key).
const DELETE: u8 = 1;

/// The rows a transaction changed, encoded as
/// `table id (u8) · op (u8) · key length (u32 LE) · key · [value length (u32 LE) · value]`.
///
/// Recording stops once the record passes [`DIRECT_BYTES`](crate::store::wal::DIRECT_BYTES):
/// such a group is committed to the queue file durably instead of being logged.
#[derive(Debug, Default)]
pub(crate) struct Redo {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl Redo {
    /// The encoded record (empty if nothing changed), or `None` if it grew too large to log.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        (!self.overflowed).then_some(&self.bytes)
    }

    /// Whether any row was changed (an unchanged transaction needs no commit).
    pub(crate) fn changed(&self) -> bool {
        self.overflowed || !self.bytes.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.overflowed = false;
    }

    /// Whether to record one more change.
    fn recording(&mut self) -> bool {
        if self.bytes.len() > crate::store::wal::DIRECT_BYTES {
            self.overflowed = true;
            self.bytes.clear();
        }
        !self.overflowed
    }

    fn push_part(&mut self, part: &[u8]) {
        // Rows are bounded by redb's own value limit (< 4 GiB), checked before this runs.
        self.bytes
            .extend_from_slice(&(part.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(part);
    }

    /// Records a row put into `table` (by id). Only for a change that is not made through
    /// [`Logged`]: the counts, which only durable commits write (see `counts`).
    pub(crate) fn put(&mut self, table: u8, key: &[u8], value: &[u8]) {
        if !self.recording() {
            return;
        }
        self.bytes.extend_from_slice(&[table, PUT]);
        self.push_part(key);
        self.push_part(value);
    }

    /// Records a row deleted from `table` (by id); as [`Redo::put`].
    pub(crate) fn delete(&mut self, table: u8, key: &[u8]) {
        if !self.recording() {
            return;
        }
        self.bytes.extend_from_slice(&[table, DELETE]);
        self.push_part(key);
    }
}

/// One row change read back from a record.
pub(crate) enum Op<'a> {
    Put {
        table: u8,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        table: u8,
        key: &'a [u8],
    },
}

/// Decodes a record into its row changes, in order. `None` if the record is malformed (which
/// its checksum makes a bug, not a disk error).
pub(crate) fn decode(mut bytes: &[u8]) -> Option<Vec<Op<'_>>> {
    fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (part, rest) = rest.split_at(len);
        *bytes = rest;
        Some(part)
    }
    let mut ops = Vec::new();
    while let Some((&[table, op], rest)) = bytes.split_first_chunk::<2>() {
        bytes = rest;
        let key = part(&mut bytes)?;
        ops.push(match op {
            PUT => Op::Put {
                table,
                key,
                value: part(&mut bytes)?,
            },
            DELETE => Op::Delete { table, key },
            _ => return None,
        });
    }
    bytes.is_empty().then_some(ops)
}

/// A redb table of a write transaction whose every change is recorded in a [`Redo`].
pub(crate) struct Logged<'a, 't, K: Key + 'static, V: Value + 'static> {
    table: &'a mut Table<'t, K, V>,
    redo: &'a mut Redo,
    /// The table's id in redo records (see `schema`).
    id: u8,
}

impl<'t, K: Key + 'static, V: Value + 'static> Deref for Logged<'_, 't, K, V> {
    type Target = Table<'t, K, V>;

    fn deref(&self) -> &Table<'t, K, V> {
        self.table
    }
}

impl<'a, 't, K: Key + 'static, V: Value + 'static> Logged<'a, 't, K, V> {
    /// `table`, whose changes are recorded in `redo` under the table id `id`.
    pub(crate) fn new(table: &'a mut Table<'t, K, V>, redo: &'a mut Redo, id: u8) -> Self {
        Logged { table, redo, id }
    }

    /// Inserts or replaces a row.
    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), Error> {
        let (key, value) = (key.borrow(), value.borrow());
        self.table.insert(key, value).db()?;
        self.redo.put(
            self.id,
            K::as_bytes(key).as_ref(),
            V::as_bytes(value).as_ref(),
        );
        Ok(())
    }

    /// Removes a row; whether it was there.
    pub(crate) fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) -> Result<bool, Error> {
        let key = key.borrow();
        let existed = self.table.remove(key).db()?.is_some();
        if existed {
            self.redo.delete(self.id, K::as_bytes(key).as_ref());
        }
        Ok(existed)
    }

    /// Removes the rows in `range` for which `keep` is false.
    pub(crate) fn retain_in<'r, KR>(
        &mut self,
        range: impl RangeBounds<KR> + 'r,
        mut keep: impl for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    ) -> Result<(), Error>
    where
        KR: Borrow<K::SelfType<'r>> + 'r,
    {
        let (redo, id) = (&mut *self.redo, self.id);
        self.table
            .retain_in(range, |k, v| {
                // Recorded before `keep` takes the key, and withdrawn if the row stays.
                let mark = redo.bytes.len();
                redo.delete(id, K::as_bytes(&k).as_ref());
                let kept = keep(k, v);
                if kept && !redo.overflowed {
                    redo.bytes.truncate(mark);
                }
                kept
            })
            .db()?;
        Ok(())
    }

    /// Applies one row change read back from a redo record.
    ///
    /// The row's bytes are checked before redb reads them (its readers panic on bytes of the
    /// wrong shape): a record with a valid checksum was written by this library, but the log
    /// is a file, and a file can hold anything.
    pub(crate) fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), Error> {
        let malformed = || {
            Error::storage(
                "write-ahead log: a record with a valid checksum holds a row this build cannot \
                 read",
            )
        };
        let fits = |width: Option<usize>, bytes: &[u8]| width.is_none_or(|w| w == bytes.len());
        if !fits(K::fixed_width(), key) || !value.is_none_or(|v| fits(V::fixed_width(), v)) {
            return Err(malformed());
        }
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (K::from_bytes(key), value.map(V::from_bytes))
        }));
        let Ok((key, value)) = read else {
            return Err(malformed());
        };
        match value {
            Some(value) => {
                self.table.insert(&key, value).db()?;
            }
            None => {
                self.table.remove(&key).db()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncation_is_caught() {
        let mut redo = Redo::default();
        redo.put(3, b"key", b"value");
        redo.delete(4, b"gone");
        redo.put(1, b"", b"");
        let ops = decode(redo.bytes().unwrap()).unwrap();
        assert_eq!(ops.len(), 3);
        assert!(matches!(
            ops[0],
            Op::Put {
                table: 3,
                key: b"key",
                value: b"value"
            }
        ));
        assert!(matches!(
            ops[1],
            Op::Delete {
                table: 4,
                key: b"gone"
            }
        ));
        assert!(matches!(
            ops[2],
            Op::Put {
                table: 1,
                key: b"",
                value: b""
            }
        ));
        let bytes = redo.bytes().unwrap();
        for cut in 1..bytes.len() {
            // A prefix decodes only if it ends between two ops (after 18 and 28 bytes).
            let decoded = decode(&bytes[..cut]);
            assert_eq!(decoded.is_some(), cut == 18 || cut == 28, "cut at {cut}");
        }
    }
}
