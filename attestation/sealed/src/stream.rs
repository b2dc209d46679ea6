//! The body: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015; `aead::stream::StreamBE32`)
//! over chunks. Chunk `i` is sealed with nonce `prefix(7) || i (u32 BE) || last (1)` and the
//! header's SHA-256 as associated data, so chunks cannot be reordered, dropped, duplicated,
//! moved between files, or cut at a chunk boundary without detection. The chunks of each
//! identity shard are sealed and opened by one worker, which hashes the shard as it goes: the
//! shards run in parallel, and every byte is read once.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::header::{Algorithm, Format, Header, Layout, NONCE_PREFIX_LEN, TAG_LEN};
use crate::identity::{DigestSlots, ModelIdentity, finish, sha256};
use crate::plaintext::Plaintext;
use crate::source::Source;

/// A 256-bit data key; zeroized on drop, never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(Zeroizing::new(bytes))
    }

    /// Copies a key held elsewhere (e.g. a released `Zeroizing<[u8; 32]>`) straight into this
    /// key's wiped-on-drop storage. `from_bytes(*secret)` would first copy it into a by-value
    /// argument on the stack, which nothing wipes.
    pub fn copy_from(bytes: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(bytes);
        DataKey(key)
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
///
/// The shapes follow the data flow with the fewest copies: sealing reads the plaintext buffer
/// (which the hashing thread reads too) and writes a separate ciphertext buffer; opening reads
/// each chunk straight into the output buffer and decrypts it there.
pub trait ChunkCipher: Sync {
    /// Encrypts `plaintext` into `ciphertext` (same length) and returns the tag.
    fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
        ciphertext: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError>;
    /// Checks `tag` and decrypts `in_out` in place. On failure the contents of `in_out` are
    /// unspecified (possibly unauthenticated plaintext): the caller must discard them.
    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed>;
}

/// aws-lc-rs (the crypto provider the rest of Nacre uses).
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
    fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
        ciphertext: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let mut tag = [0u8; TAG_LEN];
        self.0
            .seal_out_of_place_scatter(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                plaintext,
                ciphertext,
                &[],
                &mut tag,
            )
            .map_err(|_| SealError::Crypto)?;
        Ok(tag)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        use aws_lc_rs::aead::{Aad, Nonce};
        self.0
            .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, in_out)
            .map(|_| ())
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
    fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
        ciphertext: &mut [u8],
    ) -> Result<[u8; TAG_LEN], SealError> {
        use aes_gcm::AeadInOut;
        let buf =
            aes_gcm::aead::inout::InOutBuf::new(plaintext, ciphertext).map_err(|_| SealError::Crypto)?;
        let tag = self.0.encrypt_inout_detached(&(*nonce).into(), aad, buf).map_err(|_| SealError::Crypto)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        use aes_gcm::AeadInOut;
        self.0
            .decrypt_inout_detached(&(*nonce).into(), aad, in_out.into(), &(*tag).into())
            .map_err(|_| AuthFailed)
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

/// What the owner chooses when sealing.
#[derive(Clone, Debug)]
pub struct SealParams {
    pub key_id: String,
    pub key_version: u32,
    pub model_name: String,
    pub model_version: String,
    pub chunk_size: u32,
    /// The identity's shard size (`header::MIN_SHARD..=MAX_SHARD`); to carry an OpenSSF Model
    /// Signing shard bundle, the bundle's own shard size.
    pub shard_size: u64,
    /// The publisher's signature bundle, verified by the caller before sealing.
    pub signature_bundle: Option<Vec<u8>>,
    /// The owner's guard manifest.
    pub guard_manifest: Option<Vec<u8>>,
}

impl SealParams {
    /// Default chunk and shard sizes, no slots.
    pub fn new(key_id: &str, key_version: u32, model_name: &str, model_version: &str) -> Self {
        SealParams {
            key_id: key_id.to_owned(),
            key_version,
            model_name: model_name.to_owned(),
            model_version: model_version.to_owned(),
            chunk_size: crate::header::DEFAULT_CHUNK,
            shard_size: crate::header::DEFAULT_SHARD,
            signature_bundle: None,
            guard_manifest: None,
        }
    }
}

/// Where a sealed model is written.
#[derive(Debug)]
pub enum Output<'a> {
    /// Written at offsets (the header last, once the identity is known); the file should be
    /// new and empty.
    File(&'a File),
    /// Replaces the vector's contents; each worker encrypts straight into its shard's place.
    Memory(&'a mut Vec<u8>),
}

/// Places an encrypted chunk (with its tag) at an offset within its shard's body.
type Emit<'a> = dyn Fn(u64, &[u8]) -> Result<(), SealError> + 'a;

/// One worker's buffers while sealing: a chunk of plaintext read from a file (wiped on drop)
/// and a chunk of ciphertext with its tag.
struct SealScratch {
    plain: Zeroizing<Vec<u8>>,
    sealed: Vec<u8>,
}

/// Seals `src` in one pass on `workers` threads. Each worker takes a shard, reads it chunk by
/// chunk, hashes each chunk into the shard's digest and encrypts it; the header, which holds the
/// identity computed from the shard digests, is written last. Memory: one chunk of plaintext
/// and one of ciphertext per worker. `progress` is called with the bytes encrypted so far.
pub fn seal<S: Source + ?Sized>(
    src: &S,
    out: Output<'_>,
    cipher: &dyn ChunkCipher,
    params: &SealParams,
    workers: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Header, SealError> {
    let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
    aws_lc_rs::rand::fill(&mut nonce_prefix).map_err(|_| SealError::Random)?;
    let mut header = Header {
        format: Format::V2,
        key_id: params.key_id.clone(),
        key_version: params.key_version,
        algorithm: Algorithm::Aes256Gcm,
        chunk_size: params.chunk_size,
        shard_size: Some(params.shard_size),
        plaintext_len: src.len(),
        model_identity: [0; 32],
        model_name: params.model_name.clone(),
        model_version: params.model_version.clone(),
        nonce_prefix,
        signature_bundle: params.signature_bundle.clone(),
        guard_manifest: params.guard_manifest.clone(),
    };
    let aad_bytes = header.aad_bytes()?;
    let aad = sha256(&aad_bytes);
    let body_start = aad_bytes.len();
    let layout = header.layout();
    let total = layout.chunk_count();
    let digests = DigestSlots::new(layout.shard_count());
    let done = AtomicU64::new(0);
    let chunk = params.chunk_size as usize;
    let input_changed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SealError::InputChanged,
        _ => SealError::Io(e),
    };

    // Seals shard `j`; `emit(k, ciphertext_and_tag_in_scratch)` places chunk k of the shard when
    // it was not encrypted in place (`region`).
    let seal_shard = |scratch: &mut SealScratch,
                      j: u64,
                      mut region: Option<&mut [u8]>,
                      emit: &Emit<'_>|
     -> Result<(), SealError> {
        let range = layout.shard_range(j);
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut k = 0u64;
        let mut p = range.start;
        while p < range.end {
            let n = (range.end - p).min(chunk as u64) as usize;
            let index = layout.first_chunk(j) + k;
            let nonce = nonce(&nonce_prefix, index, index + 1 == total)?;
            let plain: &[u8] = match src.as_slice() {
                Some(all) => &all[p as usize..p as usize + n],
                None => {
                    src.read_exact_at(&mut scratch.plain[..n], p).map_err(input_changed)?;
                    &scratch.plain[..n]
                }
            };
            ctx.update(plain);
            let at = (layout.chunk_offset(index, p) - layout.chunk_offset(layout.first_chunk(j), range.start))
                as usize;
            match region.as_deref_mut() {
                Some(region) => {
                    let (ciphertext, rest) = region[at..].split_at_mut(n);
                    let tag = cipher.seal(&nonce, &aad, plain, ciphertext)?;
                    rest[..TAG_LEN].copy_from_slice(&tag);
                }
                None => {
                    let tag = cipher.seal(&nonce, &aad, plain, &mut scratch.sealed[..n])?;
                    scratch.sealed[n..n + TAG_LEN].copy_from_slice(&tag);
                    emit(at as u64, &scratch.sealed[..n + TAG_LEN])?;
                }
            }
            progress(done.fetch_add(n as u64, Ordering::Relaxed) + n as u64);
            p += n as u64;
            k += 1;
        }
        digests.set(j, finish(ctx.finish()));
        Ok(())
    };
    let scratch = || SealScratch {
        plain: Zeroizing::new(if src.as_slice().is_some() { Vec::new() } else { vec![0; chunk] }),
        sealed: Vec::new(),
    };
    // An empty model is one empty final chunk: its tag alone.
    let empty_tag = match layout.len {
        0 => Some(cipher.seal(&nonce(&nonce_prefix, 0, true)?, &aad, &[], &mut [])?),
        _ => None,
    };
    // Shard j's body starts after every earlier shard's chunks and tags.
    let shard_body = |j: u64| layout.chunk_offset(layout.first_chunk(j), layout.shard_range(j).start);
    let shards = layout.shard_count();

    let final_file = match out {
        Output::Memory(buf) => {
            // Every byte is overwritten below (header, chunks, tags), so a buffer's old contents
            // need no zeroing: a fresh one comes from calloc (pages the kernel zeroes on first
            // touch anyway), a reused one is only cut or grown to the length.
            let n = body_start + layout.body_len() as usize;
            if buf.capacity() < n {
                *buf = vec![0; n];
            } else {
                buf.truncate(n);
                buf.resize(n, 0);
            }
            let (_, mut body) = buf.split_at_mut(body_start);
            if let Some(tag) = empty_tag {
                body.copy_from_slice(&tag);
            }
            let mut items = Vec::with_capacity(shards as usize);
            for j in 0..shards {
                let end = if j + 1 == shards { layout.body_len() } else { shard_body(j + 1) };
                let (this, rest) = body.split_at_mut((end - shard_body(j)) as usize);
                items.push((j, this));
                body = rest;
            }
            crate::workers::run(items, workers, scratch, |s, (j, region)| {
                seal_shard(s, j, Some(region), &|_, _| Ok(()))
            })?;
            header.model_identity = identity(&layout, digests.into_vec());
            let bytes = header.encode()?;
            buf[..body_start].copy_from_slice(&bytes);
            return Ok(header);
        }
        Output::File(file) => file,
    };
    let write_at = |bytes: &[u8], at: u64| final_file.write_all_at(bytes, at).map_err(SealError::Io);
    if let Some(tag) = empty_tag {
        write_at(&tag, body_start as u64)?;
    }
    let with_tag = || SealScratch { sealed: vec![0; chunk + TAG_LEN], ..scratch() };
    crate::workers::run((0..shards).collect(), workers, with_tag, |s, j| {
        let base = body_start as u64 + shard_body(j);
        seal_shard(s, j, None, &|at, bytes| write_at(bytes, base + at))
    })?;
    header.model_identity = identity(&layout, digests.into_vec());
    write_at(&header.encode()?, 0)?;
    Ok(header)
}

fn identity(layout: &Layout, shard_digests: Vec<[u8; 32]>) -> [u8; 32] {
    ModelIdentity { len: layout.len, shard_size: layout.shard, shard_digests }.identity()
}

/// An opened model: its header, the authenticated plaintext, and the digest of each shard as
/// recomputed from it (for v1, the one SHA-256 of the whole plaintext).
#[derive(Debug)]
pub struct Opened {
    pub header: Header,
    pub plaintext: Plaintext,
    pub shard_digests: Vec<[u8; 32]>,
}

impl Opened {
    /// The identity recomputed from the plaintext, with its shard manifest (v2 only).
    pub fn model_identity(&self) -> Option<ModelIdentity> {
        self.header.shard_size.map(|shard_size| ModelIdentity {
            len: self.header.plaintext_len,
            shard_size,
            shard_digests: self.shard_digests.clone(),
        })
    }
}

/// A cursor over a `Source`, to read the header.
struct SourceReader<'a, S: ?Sized> {
    src: &'a S,
    at: u64,
}

impl<S: Source + ?Sized> std::io::Read for SourceReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.src.len().saturating_sub(self.at)).min(buf.len() as u64) as usize;
        self.src.read_exact_at(&mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Opens a sealed model (v2, or v1) into one exactly-sized buffer, wiped on drop, on `workers`
/// threads. Each worker takes a shard, reads each of its chunks straight into its place in that
/// buffer, authenticates and decrypts it there and hashes it into the shard's digest. The
/// identity recomputed from the shard digests must equal the header's: a holder of the data
/// key cannot pass other weights off under a pinned identity. The input must be exactly as
/// long as the header says. On any failure the buffer is wiped and dropped, and a tampered chunk
/// is named (the lowest, if several).
pub fn open<S: Source + ?Sized>(
    src: &S,
    cipher: &dyn ChunkCipher,
    max_plaintext: u64,
    workers: usize,
) -> Result<Opened, SealError> {
    let (header, header_bytes) = Header::read(&mut SourceReader { src, at: 0 })?;
    if header.plaintext_len > max_plaintext {
        return Err(SealError::TooLarge { len: header.plaintext_len, max: max_plaintext });
    }
    let len = usize::try_from(header.plaintext_len)
        .map_err(|_| SealError::TooLarge { len: header.plaintext_len, max: max_plaintext })?;
    let body_start = header_bytes.len() as u64;
    let layout = header.layout();
    let expected = body_start + layout.body_len();
    if src.len() < expected {
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        return Err(SealError::Truncated {
            what: format!("body ({} of {} bytes)", src.len() - body_start, layout.body_len()),
            source: eof,
        });
    }
    if src.len() > expected {
        return Err(SealError::TrailingBytes);
    }
    let aad = sha256(&header.aad_bytes()?);
    let total = layout.chunk_count();
    let chunk = u64::from(header.chunk_size);
    let mut plain = Plaintext::zeroed(len)?;
    if len == 0 {
        let mut tag = [0u8; TAG_LEN];
        src.read_exact_at(&mut tag, body_start).map_err(|e| SealError::truncated_chunk(0, e))?;
        if cipher.open_in_place(&nonce(&header.nonce_prefix, 0, true)?, &aad, &mut [], &tag).is_err() {
            return Err(SealError::Tampered { chunk: 0 });
        }
    }
    let digests = DigestSlots::new(layout.shard_count());
    let shard_len = usize::try_from(layout.shard).unwrap_or(usize::MAX).max(1);
    let items: Vec<(u64, &mut [u8])> =
        plain.as_mut_slice().chunks_mut(shard_len).enumerate().map(|(j, s)| (j as u64, s)).collect();
    crate::workers::run(
        items,
        workers,
        || (),
        |(), (j, region)| {
            let start = layout.shard_range(j).start;
            let mut ctx = digest::Context::new(&digest::SHA256);
            let mut tag = [0u8; TAG_LEN];
            for (k, this) in region.chunks_mut(chunk as usize).enumerate() {
                let index = layout.first_chunk(j) + k as u64;
                let at = body_start + layout.chunk_offset(index, start + k as u64 * chunk);
                src.read_exact_at(this, at).map_err(|e| SealError::truncated_chunk(index, e))?;
                src.read_exact_at(&mut tag, at + this.len() as u64)
                    .map_err(|e| SealError::truncated_chunk(index, e))?;
                // On failure `this` may hold unauthenticated plaintext: it goes no further than
                // `plain`, which is wiped when dropped on the way out.
                let nonce = nonce(&header.nonce_prefix, index, index + 1 == total)?;
                if cipher.open_in_place(&nonce, &aad, this, &tag).is_err() {
                    return Err(SealError::Tampered { chunk: index });
                }
                ctx.update(this);
            }
            digests.set(j, finish(ctx.finish()));
            Ok(())
        },
    )?;
    let shard_digests = digests.into_vec();
    let recomputed = match header.format {
        Format::V1 => shard_digests.first().copied().unwrap_or_else(|| sha256(&[])),
        Format::V2 => identity(&layout, shard_digests.clone()),
    };
    if recomputed != header.model_identity {
        return Err(SealError::IdentityMismatch);
    }
    Ok(Opened { header, plaintext: plain, shard_digests })
}
