//! The owner's key file (`nacre seal --key-out`): JSON with the key id, version and the 256-bit
//! data key in hex. Parsed strictly; the key never reaches `Debug` output.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::stream::DataKey;

/// A data key with its identity.
#[derive(Debug)]
pub struct KeyFile {
    pub key_id: String,
    pub key_version: u32,
    pub key: DataKey,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    format: String,
    key_id: String,
    key_version: u32,
    data_key: String,
}

const FORMAT: &str = "nacre-data-key-v1";

impl KeyFile {
    pub fn to_json(&self) -> Result<Zeroizing<String>, SealError> {
        let json = Json {
            format: FORMAT.into(),
            key_id: self.key_id.clone(),
            key_version: self.key_version,
            data_key: hex_lower(self.key.expose()),
        };
        let out = serde_json::to_string_pretty(&json).map_err(|e| SealError::Header(e.to_string()));
        // The hex copy inside `json` is dropped here; zeroize it.
        let mut hex = Zeroizing::new(json.data_key);
        hex.clear();
        out.map(Zeroizing::new)
    }

    pub fn from_json(text: &str) -> Result<Self, SealError> {
        let bad = |what: &str| SealError::Header(format!("key file: {what}"));
        let json: Json = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let hex = Zeroizing::new(json.data_key);
        if json.format != FORMAT {
            return Err(bad("unknown format"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        if hex.len() != 64 {
            return Err(bad("data_key must be 64 hex digits"));
        }
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let s = core::str::from_utf8(pair).map_err(|_| bad("data_key is not hex"))?;
            key[i] = u8::from_str_radix(s, 16).map_err(|_| bad("data_key is not hex"))?;
        }
        Ok(KeyFile { key_id: json.key_id, key_version: json.key_version, key: DataKey::from_bytes(*key) })
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_junk() {
        let kf = KeyFile { key_id: "k".into(), key_version: 3, key: DataKey::from_bytes([0x5a; 32]) };
        let json = kf.to_json().unwrap();
        let back = KeyFile::from_json(&json).unwrap();
        assert_eq!(back.key.expose(), &[0x5a; 32]);
        assert_eq!((back.key_id.as_str(), back.key_version), ("k", 3));
        assert!(!format!("{back:?}").contains("5a"));
        assert!(KeyFile::from_json(&json.replace("nacre-data-key-v1", "v0")).is_err());
        assert!(KeyFile::from_json(&json.replace(&"5a".repeat(32), &"5a".repeat(31))).is_err());
        assert!(KeyFile::from_json(&json.replace(&"5a".repeat(32), &"zz".repeat(32))).is_err());
        assert!(KeyFile::from_json(&json.replace("\"key_id\"", "\"extra\": 1, \"key_id\"")).is_err());
    }
}
