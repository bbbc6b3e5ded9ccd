//! Reading the write-ahead log at open: which records to apply again, and whether the log is
//! damaged.
//!
//! The records of the file's current generation are read from the start of the log until
//! the first one that is missing, torn or of another generation. That ends the log after the
//! last record whose group may have been acknowledged — when the log is whole. A crash leaves
//! at most a torn record at the end, which is normal and silent. Everything else the log can
//! show is damage, and is found here:
//!
//! - a bad record with valid records of the current generation after it (a flipped byte in
//!   the middle of the log: stopping there would drop every later acknowledged group);
//! - a log that ends inside a record, or right after one where no chunk of the log ends (the
//!   log grows by whole chunks of zeros before a record is written into them, so a crash
//!   cannot cut it short: something truncated it);
//! - no log, or an empty one, while the file may need it (it was not closed cleanly);
//! - a first record of a generation the file has never had, while the file may need its log
//!   (the log of another file, or of another copy of this one, or the file is older than its
//!   log — restored from a backup, or rolled back by a repair). Every durable commit zeroes the log's first record and syncs
//!   that, so after it the log starts with the current generation, with the one before it
//!   (the commit was durable, the zeroing was not), or with nothing.
//!
//! Files of format 2 drew generations without recording the previous one and could leave an
//! empty log, so for them only the first two checks apply.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::Error;
use crate::store::paths;
use crate::store::wal::{GROWTH, HEADER, checksum};

/// What the queue file says about its log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    /// The generation whose records are to be applied again.
    pub generation: u64,
    /// The generation before it, whose records the last durable commit retired.
    pub previous: Option<u64>,
    /// The file was closed cleanly: the log holds nothing it needs.
    pub closed: bool,
    /// The file's format promises a log that is never missing, short or foreign (format 3).
    pub strict: bool,
}

/// What is wrong with a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    /// No log, or an empty one, where the file may need it.
    Missing,
    /// The log was cut short at `len` bytes.
    Truncated { len: u64 },
    /// The record at `at` is damaged, and `later` valid records of this log follow it.
    Damaged { at: u64, later: usize },
    /// The log's first record is of a generation this file never had.
    Foreign { generation: u64 },
}

impl Damage {
    /// What was found, for an error or a warning.
    pub(crate) fn describe(&self, log: &Path) -> String {
        let log = log.display();
        match self {
            Damage::Missing => format!(
                "its write-ahead log {log} is missing or empty, but the file was not closed \
                 cleanly: the changes acknowledged since its last checkpoint are lost"
            ),
            Damage::Truncated { len } => format!(
                "its write-ahead log {log} was cut short at {len} bytes, inside or right after \
                 acknowledged records: what followed is lost"
            ),
            Damage::Damaged { at, later } => format!(
                "the record at byte {at} of its write-ahead log {log} is damaged, and {later} \
                 valid record(s) of acknowledged changes follow it"
            ),
            Damage::Foreign { .. } => format!(
                "its write-ahead log {log} belongs to another queue file, or to another copy of \
                 this one, or this file is older than its log (restored from a backup, or \
                 rolled back): its records cannot be applied"
            ),
        }
    }
}

/// A log, as read: the records to apply again, in order, and any damage found.
#[derive(Debug)]
pub(crate) struct Scanned<'a> {
    pub records: Vec<&'a [u8]>,
    pub damage: Option<Damage>,
}

/// Reads the whole log of `queue`; `None` if there is none.
pub(crate) fn read(queue: &Path) -> Result<Option<Vec<u8>>, Error> {
    let mut bytes = Vec::new();
    match File::open(paths::log(queue)) {
        Ok(mut file) => file
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("write-ahead log", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("write-ahead log", e)),
    };
    Ok(Some(bytes))
}

/// Whether a log starts with a record: it was written to since its file's last durable
/// commit (which zeroes the first record), so its file may need it.
pub(crate) fn starts_with_a_record(log: &[u8]) -> bool {
    record_at(log, 0).is_some()
}

/// A record's header at `at`: (payload length, CRC, generation), if 16 bytes are there.
fn header(log: &[u8], at: usize) -> Option<(usize, u32, u64)> {
    let h: &[u8; HEADER] = log.get(at..at + HEADER)?.try_into().ok()?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    let generation = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
    Some((len as usize, crc, generation))
}

/// The payload of a whole, valid record at `at`, and its generation.
fn record_at(log: &[u8], at: usize) -> Option<(&[u8], u64)> {
    let (len, crc, generation) = header(log, at)?;
    let payload = log.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    (checksum(len as u32, generation, payload) == crc).then_some((payload, generation))
}

/// How many valid records of `generation` stand at or after `from` (found wherever they
/// start: a damaged record says nothing of where the next one begins).
fn valid_after(log: &[u8], from: usize, generation: u64) -> usize {
    let needle = generation.to_le_bytes();
    let mut count = 0;
    let mut at = from;
    while at + HEADER <= log.len() {
        if log[at + 8..at + HEADER] == needle
            && let Some((payload, _)) = record_at(log, at)
        {
            count += 1;
            at += HEADER + payload.len();
            continue;
        }
        at += 1;
    }
    count
}

/// Reads the records `expect` names, and judges what is left (see the module docs).
pub(crate) fn scan<'a>(log: Option<&'a [u8]>, expect: &Expect) -> Scanned<'a> {
    let needed = expect.strict && !expect.closed;
    let log = match log {
        Some(log) if !log.is_empty() => log,
        _ => {
            return Scanned {
                records: Vec::new(),
                damage: needed.then_some(Damage::Missing),
            };
        }
    };
    let mut records = Vec::new();
    let mut at = 0;
    let damage = loop {
        let Some((len, _, generation)) = header(log, at) else {
            // Fewer bytes than a header are left: the log ends here. Where no chunk ends, it
            // was cut (the chunk it was allocated in went further).
            let cut = !(log.len() as u64).is_multiple_of(GROWTH) && (needed || at > 0);
            break cut.then_some(Damage::Truncated {
                len: log.len() as u64,
            });
        };
        if generation == expect.generation && at + HEADER + len > log.len() {
            // A record of this log reaching past its end: records are only written into
            // space already allocated, so the log was cut.
            break Some(Damage::Truncated {
                len: log.len() as u64,
            });
        }
        match record_at(log, at) {
            Some((payload, generation)) if generation == expect.generation => {
                records.push(payload);
                at += HEADER + payload.len();
            }
            other => {
                if at == 0
                    && needed
                    && let Some((_, generation)) = other
                    && Some(generation) != expect.previous
                {
                    break Some(Damage::Foreign { generation });
                }
                let later = valid_after(log, at + 1, expect.generation);
                break (later > 0).then_some(Damage::Damaged {
                    at: at as u64,
                    later,
                });
            }
        }
    };
    let damage = damage.or_else(|| {
        // Every open since format 3 leaves at least one whole chunk.
        (needed && (log.len() as u64) < GROWTH).then_some(Damage::Truncated {
            len: log.len() as u64,
        })
    });
    Scanned { records, damage }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of whole chunks holding `records` (generation, payload) from its start.
    fn log_of(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut log = Vec::new();
        for &(generation, payload) in records {
            let len = payload.len() as u32;
            log.extend_from_slice(&len.to_le_bytes());
            log.extend_from_slice(&checksum(len, generation, payload).to_le_bytes());
            log.extend_from_slice(&generation.to_le_bytes());
            log.extend_from_slice(payload);
        }
        let whole = (log.len() as u64).next_multiple_of(GROWTH).max(GROWTH);
        log.resize(whole as usize, 0);
        log
    }

    const OPEN: Expect = Expect {
        generation: 7,
        previous: Some(6),
        closed: false,
        strict: true,
    };

    fn scan_of(log: Option<&[u8]>, expect: Expect) -> (usize, Option<Damage>) {
        let s = scan(log, &expect);
        (s.records.len(), s.damage)
    }

    #[test]
    fn a_whole_log_and_a_torn_tail_are_read_without_complaint() {
        let log = log_of(&[(7, b"a"), (7, b"bb"), (7, b"ccc")]);
        assert_eq!(scan_of(Some(&log), OPEN), (3, None));
        // A torn last record (the crash hit it being written): silent, the others apply.
        let mut torn = log.clone();
        torn[HEADER * 2 + 3 + HEADER] ^= 0xFF;
        assert_eq!(scan_of(Some(&torn), OPEN), (2, None));
        // Older records after the current ones (the log restarted from its first byte).
        let mut over = log_of(&[(6, b"old1"), (6, b"old2"), (6, b"old3")]);
        over[..HEADER + 1].copy_from_slice(&log[..HEADER + 1]);
        assert_eq!(scan_of(Some(&over), OPEN).0, 1);
        // Nothing yet, or only the retired records of the generation before.
        assert_eq!(scan_of(Some(&log_of(&[])), OPEN), (0, None));
        assert_eq!(scan_of(Some(&log_of(&[(6, b"x")])), OPEN), (0, None));
    }

    #[test]
    fn damage_before_valid_records_is_found() {
        let log = log_of(&[(7, b"a"), (7, b"bb"), (7, b"ccc")]);
        let mut flipped = log.clone();
        flipped[HEADER + 1 + HEADER] ^= 0x01; // the second record's payload
        let (applied, damage) = scan_of(Some(&flipped), OPEN);
        assert_eq!(applied, 1);
        assert_eq!(
            damage,
            Some(Damage::Damaged {
                at: (HEADER + 1) as u64,
                later: 1
            })
        );
    }

    #[test]
    fn a_cut_log_is_found() {
        let log = log_of(&[(7, b"aaaa"), (7, b"bbbb")]);
        let two = 2 * (HEADER + 4);
        for (len, applied) in [(two - 1, 1), (two, 2), (HEADER + 4, 1), (3, 0)] {
            let (n, damage) = scan_of(Some(&log[..len]), OPEN);
            assert_eq!(n, applied, "cut at {len}");
            assert_eq!(
                damage,
                Some(Damage::Truncated { len: len as u64 }),
                "cut at {len}"
            );
        }
        assert_eq!(scan_of(Some(&[]), OPEN), (0, Some(Damage::Missing)));
        assert_eq!(scan_of(None, OPEN), (0, Some(Damage::Missing)));
        // After a clean close nothing in the log is needed.
        let closed = Expect {
            closed: true,
            ..OPEN
        };
        assert_eq!(scan_of(None, closed), (0, None));
    }

    #[test]
    fn a_log_of_another_generation_is_found() {
        let other = log_of(&[(99, b"not ours")]);
        assert_eq!(
            scan_of(Some(&other), OPEN),
            (0, Some(Damage::Foreign { generation: 99 }))
        );
    }

    /// Format 2 kept no previous generation and could leave an empty log: a foreign first
    /// record or no log is no error there; damage before valid records still is.
    #[test]
    fn a_format_2_log_is_judged_by_what_format_2_promised() {
        let old = Expect {
            previous: None,
            strict: false,
            ..OPEN
        };
        assert_eq!(scan_of(None, old), (0, None));
        assert_eq!(scan_of(Some(&[]), old), (0, None));
        assert_eq!(scan_of(Some(&log_of(&[(99, b"x")])), old), (0, None));
        let mut flipped = log_of(&[(7, b"a"), (7, b"b")]);
        flipped[HEADER] ^= 0x01;
        assert!(matches!(
            scan_of(Some(&flipped), old).1,
            Some(Damage::Damaged { at: 0, later: 1 })
        ));
    }
}
