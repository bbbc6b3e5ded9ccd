//! Versioned encoding of internal records: one version byte, then postcard.
//!
//! User arguments and results are not encoded here: they stay JSON (`serde_json`) so the
//! CLI can show them and added fields are tolerated across deploys.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::Error;

/// The record envelope version written by this build.
const RECORD_VERSION: u8 = 1;

/// Encodes an internal record in its versioned envelope.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    // Most records fit; growing a Vec byte by byte showed up in profiles.
    let mut out = Vec::with_capacity(192);
    out.push(RECORD_VERSION);
    postcard::to_io(value, &mut out)
        .map_err(|e| Error::Storage(format!("cannot encode record: {e}")))?;
    Ok(out)
}

/// Decodes an internal record. A newer envelope or undecodable bytes are `Corrupt`-class
/// errors: the caller decides how to report them (the file is never rewritten because of them).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => postcard::from_bytes(body)
            .map_err(|e| Error::Storage(format!("undecodable record: {e}"))),
        Some((v, _)) => Err(Error::Storage(format!(
            "record envelope version {v} is not supported by this build (reads {RECORD_VERSION})"
        ))),
        None => Err(Error::Storage("empty record".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_unknown_version() {
        let bytes = encode(&(7u32, "x".to_string())).unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        let back: (u32, String) = decode(&bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));
        let mut newer = bytes.clone();
        newer[0] = RECORD_VERSION + 1;
        assert!(decode::<(u32, String)>(&newer).is_err());
        assert!(decode::<(u32, String)>(&[]).is_err());
    }
}
