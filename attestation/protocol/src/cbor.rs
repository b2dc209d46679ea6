//! Strict CBOR: a body is exactly one data item of the expected shape. Trailing bytes, unknown
//! fields (every message is `deny_unknown_fields`) and over-deep nesting are refused.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Nesting limit for untrusted bodies; our messages nest at most four levels.
const RECURSION_LIMIT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CborError {
    #[error("CBOR: {0}")]
    Decode(String),
    #[error("CBOR: {0} trailing bytes after the message")]
    Trailing(usize),
    #[error("CBOR encoding: {0}")]
    Encode(String),
}

pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::with_capacity(256);
    ciborium::into_writer(value, &mut out).map_err(|e| CborError::Encode(e.to_string()))?;
    Ok(out)
}

pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    let mut reader = bytes;
    let value = ciborium::de::from_reader_with_recursion_limit(&mut reader, RECURSION_LIMIT)
        .map_err(|e| CborError::Decode(e.to_string()))?;
    if !reader.is_empty() {
        return Err(CborError::Trailing(reader.len()));
    }
    Ok(value)
}
