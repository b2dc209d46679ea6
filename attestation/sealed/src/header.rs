//! The sealed-model header: `MAGIC || u32 BE length || CBOR(header) || slots`. See
//! docs/sealed-format.md. Version 2 is written; version 1 (whole-file SHA-256 identity, no slots)
//! is still read.

use serde::{Deserialize, Serialize};

use crate::error::SealError;

/// Version 2's magic: "NACRE", "SM" (sealed model), format generation 2.
pub const MAGIC: [u8; 8] = *b"NACRESM2";
/// Version 1's magic; still opened, never written.
pub const MAGIC_V1: [u8; 8] = *b"NACRESM1";
/// Upper bound on the encoded CBOR header (names are short; anything larger is hostile). The
/// slots are bounded on their own.
pub const MAX_HEADER_LEN: usize = 4096;
/// Chunk sizes are powers of two in this range: big enough to amortise per-chunk cost, small
/// enough that sealing and opening need one chunk of working memory per worker.
pub const MIN_CHUNK: u32 = 4 << 10;
pub const MAX_CHUNK: u32 = 16 << 20;
/// Default chunk size: 1 MiB.
pub const DEFAULT_CHUNK: u32 = 1 << 20;
/// Identity shard sizes: any length in this range, so that an OpenSSF Model Signing shard
/// manifest (1,000,000,000 bytes by default) can be matched exactly. The lower bound keeps the
/// shard manifest of the largest model small (64 GiB / 1 MiB × 32 B = 2 MiB).
pub const MIN_SHARD: u64 = 1 << 20;
pub const MAX_SHARD: u64 = 4 << 30;
/// Default shard size: 4 MiB, so that a model of a few hundred MiB already has a shard for
/// each core of a large confidential VM.
pub const DEFAULT_SHARD: u64 = 4 << 20;
/// Largest publisher signature bundle (a Sigstore bundle with a certificate chain is a few KiB).
pub const MAX_SIGNATURE_LEN: u32 = 64 << 10;
/// Largest guard manifest (reference statistics, self-tests and background rows).
pub const MAX_GUARD_LEN: u32 = 8 << 20;
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

/// Which generation of the format a sealed model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Identity = SHA-256 of the whole plaintext; no slots. Read only.
    V1,
    /// Identity = SHA-256 of the shard manifest (crate::identity); optional slots.
    V2,
}

impl core::fmt::Display for Format {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Format::V1 => "v1",
            Format::V2 => "v2",
        })
    }
}

/// The authenticated, self-describing header of a sealed model, with its slots: everything
/// before the body. Its hash is the associated data of every chunk (`Header::aad_bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    pub key_id: String,
    pub key_version: u32,
    pub algorithm: Algorithm,
    pub chunk_size: u32,
    /// The identity's shard size (v2); `None` for v1, whose identity is one SHA-256.
    pub shard_size: Option<u64>,
    pub plaintext_len: u64,
    /// The model identity clients and policies pin (crate::identity). For v1, the SHA-256 of
    /// the plaintext.
    pub model_identity: [u8; 32],
    pub model_name: String,
    pub model_version: String,
    /// Random per file: with a fresh data key per model it is belt and braces, but it keeps
    /// nonces unique even if a key were ever reused.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The publisher's OpenSSF Model Signing bundle (Sigstore bundle JSON), as given at sealing.
    pub signature_bundle: Option<Vec<u8>>,
    /// The owner's guard manifest, as given at sealing.
    pub guard_manifest: Option<Vec<u8>>,
}

/// Version 2's CBOR header, field for field in this order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireV2 {
    version: u32,
    key_id: String,
    key_version: u32,
    algorithm: Algorithm,
    chunk_size: u32,
    shard_size: u64,
    plaintext_len: u64,
    #[serde(with = "serde_bytes")]
    model_identity: [u8; 32],
    model_name: String,
    model_version: String,
    #[serde(with = "serde_bytes")]
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// Lengths of the slots that follow the CBOR header, in this order; 0 = absent.
    signature_len: u32,
    guard_manifest_len: u32,
}

/// Version 1's CBOR header (docs/sealed-format.md, "Version 1").
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireV1 {
    version: u32,
    key_id: String,
    key_version: u32,
    algorithm: Algorithm,
    chunk_size: u32,
    plaintext_len: u64,
    #[serde(with = "serde_bytes")]
    model_digest: [u8; 32],
    model_name: String,
    model_version: String,
    #[serde(with = "serde_bytes")]
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    /// The body's chunk and shard geometry.
    pub fn layout(&self) -> Layout {
        Layout {
            len: self.plaintext_len,
            // v1 is one shard: its chunks run across the whole plaintext.
            shard: self.shard_size.unwrap_or(u64::MAX),
            chunk: u64::from(self.chunk_size),
        }
    }

    /// Number of chunks in the body (at least one: an empty model is one empty final chunk, so
    /// truncation to nothing is still detected).
    pub fn chunk_count(&self) -> u64 {
        self.layout().chunk_count()
    }

    /// Exact length of the body: every chunk plus its tag.
    pub fn body_len(&self) -> u64 {
        self.layout().body_len()
    }

    /// SHA-256 of the guard manifest, or all zeros without one (the attested-TLS binding's
    /// guard field).
    pub fn guard_digest(&self) -> [u8; 32] {
        self.guard_manifest.as_deref().map_or([0; 32], crate::identity::sha256)
    }

    fn validate(&self) -> Result<(), SealError> {
        if !self.chunk_size.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(SealError::Header(format!(
                "chunk size {} is not a power of two in 4 KiB..16 MiB",
                self.chunk_size
            )));
        }
        match (self.format, self.shard_size) {
            (Format::V1, None) => {}
            (Format::V2, Some(s)) if (MIN_SHARD..=MAX_SHARD).contains(&s) => {}
            (Format::V2, Some(s)) => {
                return Err(SealError::Header(format!("shard size {s} is outside 1 MiB..4 GiB")));
            }
            _ => return Err(SealError::Header("the shard size does not fit the format version".into())),
        }
        if self.format == Format::V1 && (self.signature_bundle.is_some() || self.guard_manifest.is_some()) {
            return Err(SealError::Header("version 1 has no slots".into()));
        }
        for (what, slot, max) in [
            ("signature bundle", &self.signature_bundle, MAX_SIGNATURE_LEN),
            ("guard manifest", &self.guard_manifest, MAX_GUARD_LEN),
        ] {
            if let Some(s) = slot
                && (s.is_empty() || s.len() > max as usize)
            {
                return Err(SealError::Header(format!("{what} of {} bytes: 1..{max} allowed", s.len())));
            }
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

    fn cbor(&self) -> Result<Vec<u8>, SealError> {
        let mut cbor = Vec::with_capacity(320);
        let slot_len = |s: &Option<Vec<u8>>| s.as_ref().map_or(0, |s| s.len() as u32);
        let written = match self.format {
            Format::V2 => ciborium::into_writer(
                &WireV2 {
                    version: 2,
                    key_id: self.key_id.clone(),
                    key_version: self.key_version,
                    algorithm: self.algorithm,
                    chunk_size: self.chunk_size,
                    shard_size: self.shard_size.unwrap_or_default(),
                    plaintext_len: self.plaintext_len,
                    model_identity: self.model_identity,
                    model_name: self.model_name.clone(),
                    model_version: self.model_version.clone(),
                    nonce_prefix: self.nonce_prefix,
                    signature_len: slot_len(&self.signature_bundle),
                    guard_manifest_len: slot_len(&self.guard_manifest),
                },
                &mut cbor,
            ),
            Format::V1 => ciborium::into_writer(
                &WireV1 {
                    version: 1,
                    key_id: self.key_id.clone(),
                    key_version: self.key_version,
                    algorithm: self.algorithm,
                    chunk_size: self.chunk_size,
                    plaintext_len: self.plaintext_len,
                    model_digest: self.model_identity,
                    model_name: self.model_name.clone(),
                    model_version: self.model_version.clone(),
                    nonce_prefix: self.nonce_prefix,
                },
                &mut cbor,
            ),
        };
        written.map_err(|e| SealError::Header(e.to_string()))?;
        if cbor.len() > MAX_HEADER_LEN {
            return Err(SealError::Header("header too large".into()));
        }
        Ok(cbor)
    }

    /// `MAGIC || len || CBOR || slots`: everything before the body, as stored.
    pub fn encode(&self) -> Result<Vec<u8>, SealError> {
        self.validate()?;
        let cbor = self.cbor()?;
        let slots = self.signature_bundle.iter().chain(&self.guard_manifest);
        let mut out = Vec::with_capacity(12 + cbor.len() + slots.clone().map(Vec::len).sum::<usize>());
        out.extend_from_slice(match self.format {
            Format::V1 => &MAGIC_V1,
            Format::V2 => &MAGIC,
        });
        out.extend_from_slice(&(cbor.len() as u32).to_be_bytes());
        out.extend_from_slice(&cbor);
        for slot in slots {
            out.extend_from_slice(slot);
        }
        Ok(out)
    }

    /// The bytes whose SHA-256 is every chunk's associated data: for v2, everything before the
    /// body with the model identity set to zeros. The identity cannot be covered: it is the hash
    /// of the plaintext, known only after the single sealing pass has encrypted every chunk. It
    /// needs no key to be trusted either: opening recomputes it from the authenticated plaintext
    /// and refuses a header that states another. For v1, everything before the body.
    pub fn aad_bytes(&self) -> Result<Vec<u8>, SealError> {
        match self.format {
            Format::V1 => self.encode(),
            Format::V2 => Header { model_identity: [0; 32], ..self.clone() }.encode(),
        }
    }

    /// Reads and checks a header and its slots from the start of `r`; returns it with its exact
    /// bytes (everything before the body).
    pub fn read(r: &mut impl std::io::Read) -> Result<(Header, Vec<u8>), SealError> {
        let mut prefix = [0u8; 12];
        r.read_exact(&mut prefix).map_err(|e| SealError::truncated("header", e))?;
        let format = match &prefix[..8] {
            m if m == MAGIC => Format::V2,
            m if m == MAGIC_V1 => Format::V1,
            m if m.starts_with(b"NACRESM") => {
                return Err(SealError::Header(format!(
                    "sealed-format generation {:?} is not supported (this build reads 1 and 2)",
                    char::from(m[7])
                )));
            }
            _ => return Err(SealError::Header("not a Nacre sealed model (bad magic)".into())),
        };
        let len = u32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize;
        if len == 0 || len > MAX_HEADER_LEN {
            return Err(SealError::Header(format!("header length {len} out of range")));
        }
        let mut bytes = prefix.to_vec();
        bytes.resize(12 + len, 0);
        r.read_exact(&mut bytes[12..]).map_err(|e| SealError::truncated("header", e))?;
        let cbor = &bytes[12..];
        let cbor_err = |e: ciborium::de::Error<std::io::Error>| SealError::Header(format!("CBOR: {e}"));
        let header = match format {
            Format::V2 => {
                let w: WireV2 = ciborium::from_reader(cbor).map_err(cbor_err)?;
                if w.version != 2 {
                    return Err(SealError::Header(format!("unsupported version {}", w.version)));
                }
                let mut slot = |what: &str, n: u32, max: u32| -> Result<Option<Vec<u8>>, SealError> {
                    if n == 0 {
                        return Ok(None);
                    }
                    if n > max {
                        return Err(SealError::Header(format!("{what} of {n} bytes: at most {max} allowed")));
                    }
                    let mut s = vec![0u8; n as usize];
                    r.read_exact(&mut s).map_err(|e| SealError::truncated(what, e))?;
                    Ok(Some(s))
                };
                let signature_bundle = slot("signature bundle", w.signature_len, MAX_SIGNATURE_LEN)?;
                let guard_manifest = slot("guard manifest", w.guard_manifest_len, MAX_GUARD_LEN)?;
                Header {
                    format,
                    key_id: w.key_id,
                    key_version: w.key_version,
                    algorithm: w.algorithm,
                    chunk_size: w.chunk_size,
                    shard_size: Some(w.shard_size),
                    plaintext_len: w.plaintext_len,
                    model_identity: w.model_identity,
                    model_name: w.model_name,
                    model_version: w.model_version,
                    nonce_prefix: w.nonce_prefix,
                    signature_bundle,
                    guard_manifest,
                }
            }
            Format::V1 => {
                let w: WireV1 = ciborium::from_reader(cbor).map_err(cbor_err)?;
                if w.version != 1 {
                    return Err(SealError::Header(format!("unsupported version {}", w.version)));
                }
                Header {
                    format,
                    key_id: w.key_id,
                    key_version: w.key_version,
                    algorithm: w.algorithm,
                    chunk_size: w.chunk_size,
                    shard_size: None,
                    plaintext_len: w.plaintext_len,
                    model_identity: w.model_digest,
                    model_name: w.model_name,
                    model_version: w.model_version,
                    nonce_prefix: w.nonce_prefix,
                    signature_bundle: None,
                    guard_manifest: None,
                }
            }
        };
        header.validate()?;
        // One encoding only: re-encoding must give back the bytes read (no trailing bytes,
        // no alternative integer or length encodings, fields in their order).
        // The length field is part of the comparison, so equal prefixes mean equal CBOR.
        let encoded = header.encode()?;
        if encoded.get(..bytes.len()) != Some(&bytes[..]) {
            return Err(SealError::Header("non-canonical header encoding".into()));
        }
        Ok((header, encoded))
    }
}

/// Where each chunk of the body lies. The plaintext is cut into shards of `shard` bytes (the
/// last may be shorter), and each shard into chunks of `chunk` bytes (each shard's last may be
/// shorter), so that every chunk belongs to one shard and the shards can be sealed and opened
/// independently. Chunks are numbered across the whole body (the STREAM counter); each is
/// followed by its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub len: u64,
    pub shard: u64,
    pub chunk: u64,
}

impl Layout {
    /// Shards holding plaintext (none for an empty model).
    pub fn shard_count(&self) -> u64 {
        self.len.div_ceil(self.shard)
    }

    /// Plaintext range of shard `j`.
    pub fn shard_range(&self, j: u64) -> core::ops::Range<u64> {
        let start = j * self.shard;
        start..self.len.min(start.saturating_add(self.shard))
    }

    /// The global number of shard `j`'s first chunk: every earlier shard is full.
    pub fn first_chunk(&self, j: u64) -> u64 {
        if j == 0 { 0 } else { j * self.shard.div_ceil(self.chunk) }
    }

    pub fn chunk_count(&self) -> u64 {
        match self.shard_count() {
            0 => 1,
            n => {
                let last = self.shard_range(n - 1);
                self.first_chunk(n - 1) + (last.end - last.start).div_ceil(self.chunk)
            }
        }
    }

    pub fn body_len(&self) -> u64 {
        self.len + self.chunk_count() * TAG_LEN as u64
    }

    /// Offset in the body of chunk `index`, whose plaintext starts at `plain_offset`.
    pub fn chunk_offset(&self, index: u64, plain_offset: u64) -> u64 {
        plain_offset + index * TAG_LEN as u64
    }
}
