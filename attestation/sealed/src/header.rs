//! The sealed-model header: `MAGIC || u32 BE length || CBOR(header)`. See docs/sealed-format.md.

use serde::{Deserialize, Serialize};

use crate::error::SealError;

/// File magic: "NACRE", "SM" (sealed model), format generation 1.
pub const MAGIC: [u8; 8] = *b"NACRESM1";
/// The only header version this code writes and reads.
pub const VERSION: u32 = 1;
/// Upper bound on the encoded header (names are short; anything larger is hostile).
pub const MAX_HEADER_LEN: usize = 4096;
/// Chunk sizes are powers of two in this range: big enough to amortise per-chunk cost, small
/// enough that opening needs only one chunk of working memory.
pub const MIN_CHUNK: u32 = 4 << 10;
pub const MAX_CHUNK: u32 = 16 << 20;
/// Default chunk size: 1 MiB.
pub const DEFAULT_CHUNK: u32 = 1 << 20;
/// AES-256-GCM tag length.
pub const TAG_LEN: usize = 16;
/// STREAM nonce prefix length for a 12-byte nonce (7 + 4-byte counter + 1-byte last flag).
pub const NONCE_PREFIX_LEN: usize = 7;
/// Longest model name, version or key id.
pub const MAX_NAME_LEN: usize = 256;

/// The AEAD of the body. One value today; the field exists so that a reader can refuse
/// anything else by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "AES-256-GCM")]
    Aes256Gcm,
}

/// The authenticated, self-describing header of a sealed model. Its SHA-256 (over the magic,
/// length and CBOR bytes as written) is the associated data of every chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub version: u32,
    pub key_id: String,
    pub key_version: u32,
    pub algorithm: Algorithm,
    pub chunk_size: u32,
    pub plaintext_len: u64,
    /// SHA-256 of the plaintext model: the model digest clients and policies refer to.
    #[serde(with = "serde_bytes")]
    pub model_digest: [u8; 32],
    pub model_name: String,
    pub model_version: String,
    /// Random per file: with a fresh data key per model it is belt and braces, but it keeps
    /// nonces unique even if a key were ever reused.
    #[serde(with = "serde_bytes")]
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    /// Number of chunks in the body: `ceil(len / chunk)`, and at least one (an empty model is
    /// one empty final chunk, so truncation to nothing is still detected).
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_len.div_ceil(u64::from(self.chunk_size)).max(1)
    }

    /// Exact length of the body: every chunk plus its tag.
    pub fn body_len(&self) -> u64 {
        self.plaintext_len + self.chunk_count() * TAG_LEN as u64
    }

    fn validate(&self) -> Result<(), SealError> {
        if self.version != VERSION {
            return Err(SealError::Header(format!("unsupported version {}", self.version)));
        }
        if !self.chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(SealError::Header(format!(
                "chunk size {} is not a power of two in 4 KiB..16 MiB",
                self.chunk_size
            )));
        }
        for (what, s) in [
            ("key id", &self.key_id),
            ("model name", &self.model_name),
            ("model version", &self.model_version),
        ] {
            if s.len() > MAX_NAME_LEN || s.chars().any(char::is_control) {
                return Err(SealError::Header(format!(
                    "{what} is longer than {MAX_NAME_LEN} bytes or has control characters"
                )));
            }
        }
        if self.key_id.is_empty() {
            return Err(SealError::Header("empty key id".into()));
        }
        // The STREAM counter is 32 bits.
        if self.chunk_count() > u64::from(u32::MAX) {
            return Err(SealError::Header("too many chunks for a 32-bit STREAM counter".into()));
        }
        Ok(())
    }

    /// `MAGIC || len || CBOR`.
    pub fn encode(&self) -> Result<Vec<u8>, SealError> {
        self.validate()?;
        let mut cbor = Vec::with_capacity(256);
        ciborium::into_writer(self, &mut cbor).map_err(|e| SealError::Header(e.to_string()))?;
        if cbor.len() > MAX_HEADER_LEN {
            return Err(SealError::Header("header too large".into()));
        }
        let mut out = Vec::with_capacity(12 + cbor.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(cbor.len() as u32).to_be_bytes());
        out.extend_from_slice(&cbor);
        Ok(out)
    }

    /// Reads and checks a header from the start of `r`; returns it with its exact bytes.
    pub fn read(r: &mut impl std::io::Read) -> Result<(Header, Vec<u8>), SealError> {
        let mut prefix = [0u8; 12];
        r.read_exact(&mut prefix).map_err(|e| SealError::truncated("header", e))?;
        if prefix[..8] != MAGIC {
            return Err(SealError::Header("not a Nacre sealed model (bad magic)".into()));
        }
        let len = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
        if len == 0 || len > MAX_HEADER_LEN {
            return Err(SealError::Header(format!("header length {len} out of range")));
        }
        let mut bytes = prefix.to_vec();
        bytes.resize(12 + len, 0);
        r.read_exact(&mut bytes[12..]).map_err(|e| SealError::truncated("header", e))?;
        let header: Header =
            ciborium::from_reader(&bytes[12..]).map_err(|e| SealError::Header(format!("CBOR: {e}")))?;
        header.validate()?;
        // One encoding only: re-encoding must give back the bytes read (no trailing bytes,
        // no alternative integer or length encodings, fields in their order).
        if header.encode()? != bytes {
            return Err(SealError::Header("non-canonical header encoding".into()));
        }
        Ok((header, bytes))
    }
}
