//! How internal records are stored: a one-byte envelope version, then the record's parts,
//! each a postcard value. User arguments and results are not encoded here: they stay JSON
//! (`serde_json`) so tools can show them and added fields are tolerated across deploys.
//!
//! postcard is compact and fast, but not self-describing: a struct's fields are read back in
//! order with nothing to mark where one ends, so a struct that gains a field can no longer
//! read what was written without it. A record therefore never changes shape in place. It is
//! a sequence of parts: the first is what the first release of the record wrote, and a later
//! release that needs more fields appends a part of its own (a struct whose fields all mean
//! something when absent). A reader takes the parts it knows, in order; a part the bytes end
//! before reads as its `Default` (an older build wrote the record), and bytes left after the
//! last part it knows are refused (a newer build wrote them — the file's format version
//! refuses such files first — or the record is damaged). See `docs/design.md`, "Record
//! evolution".

use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// The envelope version written by this build. It changes only if records stop being
/// sequences of postcard parts; a new part is not a new envelope.
const ENVELOPE: u8 = 1;

/// Writes one record: the envelope, then each part in order.
pub(crate) struct Encoder {
    out: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new() -> Encoder {
        // Most records fit; growing a Vec byte by byte showed up in profiles.
        let mut out = Vec::with_capacity(192);
        out.push(ENVELOPE);
        Encoder { out }
    }

    /// Appends the next part.
    pub(crate) fn part<T: Serialize>(mut self, part: &T) -> Result<Encoder, Error> {
        postcard::to_io(part, &mut self.out)
            .map_err(|e| Error::storage_from("cannot encode record", e))?;
        Ok(self)
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// Reads one record's parts back, in the order they were written.
pub(crate) struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Checks the envelope. A newer envelope or an empty value is an error (the caller
    /// decides how to report it; the file is never rewritten because of it).
    pub(crate) fn new(bytes: &'a [u8]) -> Result<Decoder<'a>, Error> {
        match bytes.split_first() {
            Some((&ENVELOPE, rest)) => Ok(Decoder { rest }),
            Some((v, _)) => Err(Error::storage(format!(
                "record envelope version {v} is not supported by this build (reads {ENVELOPE})"
            ))),
            None => Err(Error::storage("empty record")),
        }
    }

    /// A part every version of the record has.
    pub(crate) fn part<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let (part, rest) = postcard::take_from_bytes(self.rest)
            .map_err(|e| Error::storage_from("undecodable record", e))?;
        self.rest = rest;
        Ok(part)
    }

    /// A part added by a later release: its `Default` when the record was written before it.
    pub(crate) fn later_part<T: DeserializeOwned + Default>(&mut self) -> Result<T, Error> {
        if self.rest.is_empty() {
            return Ok(T::default());
        }
        self.part()
    }

    /// Ends the record: every byte must have been read.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Error::storage(format!(
                "a record has {} byte(s) after the parts this build reads: written by a newer \
                 taskspool, or damaged",
                self.rest.len()
            )))
        }
    }
}

/// Encodes a record of one part.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    Ok(Encoder::new().part(value)?.finish())
}

/// Decodes a record of one part.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut decoder = Decoder::new(bytes)?;
    let value = decoder.part()?;
    decoder.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[test]
    fn round_trip_and_rejects_unknown_version() {
        let bytes = encode(&(7u32, "x".to_string())).unwrap();
        assert_eq!(bytes[0], ENVELOPE);
        let back: (u32, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        let mut newer = bytes.clone();
        newer[0] = ENVELOPE + 1;
        assert!(decode::<(u32, String)>(&newer).is_err());
        assert!(decode::<(u32, String)>(&[]).is_err());
    }

    /// A record as a first release wrote it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Core {
        id: u64,
        name: String,
    }

    /// What a later release added, in a part of its own.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Added {
        note: Option<String>,
        tries: u32,
    }

    fn write_new(core: &Core, added: &Added) -> Vec<u8> {
        Encoder::new()
            .part(core)
            .unwrap()
            .part(added)
            .unwrap()
            .finish()
    }

    fn read_new(bytes: &[u8]) -> Result<(Core, Added), Error> {
        let mut d = Decoder::new(bytes)?;
        let core = d.part()?;
        let added = d.later_part()?;
        d.finish()?;
        Ok((core, added))
    }

    /// A later part reads as its default in a record written before it existed, and as
    /// written otherwise; a reader that does not know a part refuses the bytes instead of
    /// dropping them.
    #[test]
    fn a_record_gains_a_part_without_breaking_what_was_written_before() {
        let core = Core {
            id: 9,
            name: "a".into(),
        };
        let old = encode(&core).unwrap();
        assert_eq!(read_new(&old).unwrap(), (core, Added::default()));

        let core = Core {
            id: 10,
            name: "b".into(),
        };
        let added = Added {
            note: Some("n".into()),
            tries: 3,
        };
        let new = write_new(&core, &added);
        let (core_back, added_back) = read_new(&new).unwrap();
        assert_eq!((core_back.id, added_back.tries), (10, 3));
        assert_eq!(added_back.note.as_deref(), Some("n"));
        let err = decode::<Core>(&new).unwrap_err();
        assert!(err.to_string().contains("newer taskspool"), "{err}");
        // A cut record is an error, not a default.
        assert!(read_new(&new[..new.len() - 1]).is_err());
    }
}
