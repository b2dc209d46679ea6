//! The body: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015; `aead::stream::StreamBE32`)
//! over fixed-size chunks. Chunk `i` is sealed with nonce `prefix(7) || i (u32 BE) || last (1)`
//! and the header's SHA-256 as associated data, so chunks cannot be reordered, dropped,
//! duplicated, moved between files, or cut at a chunk boundary without detection.

use std::io::{Read, Seek, SeekFrom, Write};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::header::{Header, NONCE_PREFIX_LEN, TAG_LEN};

/// A 256-bit data key; zeroized on drop, never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(Zeroizing::new(bytes))
    }

    /// A fresh random key from the operating system's CSPRNG (via aws-lc).
    pub fn generate() -> Result<Self, SealError> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| SealError::Random)?;
        Ok(DataKey(k))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl core::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A chunk did not authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthFailed;

/// One AES-256-GCM implementation. Two exist so that each checks the other: the RustCrypto
/// `aes-gcm` crate is the reference; aws-lc-rs is the fast path.
pub trait ChunkCipher {
    /// Encrypts `buf` in place and returns the tag.
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], SealError>;
    /// Checks `tag` and decrypts `ciphertext` into `out` (same length); on failure `out` must
    /// not be used.
    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthFailed>;
}

/// aws-lc-rs (the crypto provider the rest of Nacre uses; ~10 GB/s here).
#[allow(missing_debug_implementations)] // holds key material
pub struct AwsLcGcm(aws_lc_rs::aead::LessSafeKey);

impl AwsLcGcm {
    pub fn new(key: &DataKey) -> Result<Self, SealError> {
        let k = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, key.expose())
            .map_err(|_| SealError::Crypto)?;
        Ok(AwsLcGcm(aws_lc_rs::aead::LessSafeKey::new(k)))
    }
}

impl ChunkCipher for AwsLcGcm {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], SealError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| SealError::Crypto)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthFailed> {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.0
            .open_separate_gather(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), ciphertext, tag, out)
            .map_err(|_| AuthFailed)
    }
}

/// RustCrypto `aes-gcm`, the reference implementation.
#[allow(missing_debug_implementations)] // holds key material
pub struct RustCryptoGcm(aes_gcm::Aes256Gcm);

impl RustCryptoGcm {
    pub fn new(key: &DataKey) -> Self {
        use aes_gcm::KeyInit;
        RustCryptoGcm(aes_gcm::Aes256Gcm::new(&(*key.expose()).into()))
    }
}

impl ChunkCipher for RustCryptoGcm {
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], SealError> {
        use aes_gcm::AeadInOut;
        let tag = self
            .0
            .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
            .map_err(|_| SealError::Crypto)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8; TAG_LEN],
        out: &mut [u8],
    ) -> Result<(), AuthFailed> {
        use aes_gcm::AeadInOut;
        let buf = aes_gcm::aead::inout::InOutBuf::new(ciphertext, out).map_err(|_| AuthFailed)?;
        self.0.decrypt_inout_detached(&(*nonce).into(), aad, buf, &(*tag).into()).map_err(|_| AuthFailed)
    }
}

fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u64, last: bool) -> Result<[u8; 12], SealError> {
    let counter = u32::try_from(index).map_err(|_| SealError::Header("chunk counter overflow".into()))?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Ok(n)
}

fn header_hash(header_bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, header_bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What the owner chooses when sealing.
#[derive(Clone, Debug)]
pub struct SealParams {
    pub key_id: String,
    pub key_version: u32,
    pub model_name: String,
    pub model_version: String,
    pub chunk_size: u32,
}

/// Seals `input` (read twice: once to hash, once to encrypt; constant memory) to `out`.
/// `progress` is called with the bytes encrypted so far.
pub fn seal<R: Read + Seek, W: Write>(
    mut input: R,
    mut out: W,
    cipher: &dyn ChunkCipher,
    params: &SealParams,
    mut progress: impl FnMut(u64),
) -> Result<Header, SealError> {
    let chunk = params.chunk_size as usize;
    let mut buf = Zeroizing::new(vec![0u8; chunk]);
    // Pass 1: length and digest.
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut plaintext_len = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        hasher.update(&buf[..n]);
        plaintext_len += n as u64;
        if n < chunk {
            break;
        }
    }
    let mut model_digest = [0u8; 32];
    model_digest.copy_from_slice(hasher.finish().as_ref());
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    aws_lc_rs::rand::fill(&mut nonce_prefix).map_err(|_| SealError::Random)?;
    let header = Header {
        version: crate::header::VERSION,
        key_id: params.key_id.clone(),
        key_version: params.key_version,
        algorithm: crate::header::Algorithm::Aes256Gcm,
        chunk_size: params.chunk_size,
        plaintext_len,
        model_digest,
        model_name: params.model_name.clone(),
        model_version: params.model_version.clone(),
        nonce_prefix,
    };
    let header_bytes = header.encode()?;
    let aad = header_hash(&header_bytes);
    out.write_all(&header_bytes).map_err(SealError::Io)?;
    // Pass 2: encrypt. The input must not have changed in between.
    input.seek(SeekFrom::Start(0)).map_err(SealError::Io)?;
    let mut check = digest::Context::new(&digest::SHA256);
    let count = header.chunk_count();
    let mut done = 0u64;
    for i in 0..count {
        let want = (plaintext_len - done).min(chunk as u64) as usize;
        let n = read_full(&mut input, &mut buf[..want])?;
        if n != want {
            return Err(SealError::InputChanged);
        }
        check.update(&buf[..n]);
        let tag = cipher.seal(&nonce(&nonce_prefix, i, i + 1 == count)?, &aad, &mut buf[..n])?;
        out.write_all(&buf[..n]).map_err(SealError::Io)?;
        out.write_all(&tag).map_err(SealError::Io)?;
        done += n as u64;
        progress(done);
    }
    if check.finish().as_ref() != model_digest || read_full(&mut input, &mut buf[..1])? != 0 {
        return Err(SealError::InputChanged);
    }
    out.flush().map_err(SealError::Io)?;
    Ok(header)
}

/// Opens a sealed model into one exactly-sized, zeroize-on-drop buffer: peak memory is the
/// plaintext plus one chunk of ciphertext. Every chunk is authenticated before the next is read, the model
/// digest is checked at the end, and trailing bytes are an error.
pub fn open<R: Read>(
    mut input: R,
    cipher: &dyn ChunkCipher,
    max_plaintext: u64,
) -> Result<(Header, Zeroizing<Vec<u8>>), SealError> {
    let (header, header_bytes) = Header::read(&mut input)?;
    if header.plaintext_len > max_plaintext {
        return Err(SealError::TooLarge { len: header.plaintext_len, max: max_plaintext });
    }
    let len = usize::try_from(header.plaintext_len)
        .map_err(|_| SealError::TooLarge { len: header.plaintext_len, max: max_plaintext })?;
    let aad = header_hash(&header_bytes);
    let mut plain = Zeroizing::new(vec![0u8; len]);
    let chunk = header.chunk_size as usize;
    let count = header.chunk_count();
    let mut tag = [0u8; TAG_LEN];
    let mut sealed = vec![0u8; chunk.min(len)];
    for i in 0..count {
        let start = (i as usize) * chunk;
        let end = (start + chunk).min(len);
        let ciphertext = &mut sealed[..end - start];
        input.read_exact(ciphertext).map_err(|e| SealError::truncated_chunk(i, e))?;
        input.read_exact(&mut tag).map_err(|e| SealError::truncated_chunk(i, e))?;
        let out = &mut plain[start..end];
        if cipher.open(&nonce(&header.nonce_prefix, i, i + 1 == count)?, &aad, ciphertext, &tag, out).is_err()
        {
            out.fill(0);
            return Err(SealError::Tampered { chunk: i });
        }
    }
    let mut extra = [0u8; 1];
    if read_full(&mut input, &mut extra)? != 0 {
        return Err(SealError::TrailingBytes);
    }
    if digest::digest(&digest::SHA256, &plain).as_ref() != header.model_digest {
        return Err(SealError::DigestMismatch);
    }
    Ok((header, plain))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, SealError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SealError::Io(e)),
        }
    }
    Ok(n)
}
