//! The body: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015; `aead::stream::StreamBE32`)
//! over fixed-size chunks. Chunk `i` is sealed with nonce `prefix(7) || i (u32 BE) || last (1)`
//! and the header's SHA-256 as associated data, so chunks cannot be reordered, dropped,
//! duplicated, moved between files, or cut at a chunk boundary without detection.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::thread;

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::header::{Header, NONCE_PREFIX_LEN, TAG_LEN};
use crate::plaintext::Plaintext;

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
pub trait ChunkCipher {
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

/// SHA-256 on a second thread. The format needs a SHA-256 of the whole plaintext, which is
/// sequential and here (SHA-NI, ≈ 1.5 GB/s) slower than AES-GCM, so it is the bound on
/// sealing and opening; on its own thread it overlaps the reading and ciphering of the next
/// chunk instead of adding to it. Chunks are hashed in the order they are handed over, and
/// each is handed back through `recycle` once hashed so that its buffer can be reused.
struct Sha256Worker<'scope, B> {
    to_worker: mpsc::Sender<B>,
    from_worker: mpsc::Receiver<B>,
    worker: thread::ScopedJoinHandle<'scope, [u8; 32]>,
}

impl<'scope, B: AsRef<[u8]> + Send + 'scope> Sha256Worker<'scope, B> {
    fn spawn<'env>(scope: &'scope thread::Scope<'scope, 'env>) -> Result<Self, SealError> {
        let (to_worker, chunks) = mpsc::channel::<B>();
        let (hashed, from_worker) = mpsc::channel::<B>();
        let worker = thread::Builder::new()
            .name("nacre-sha256".into())
            .spawn_scoped(scope, move || {
                let mut ctx = digest::Context::new(&digest::SHA256);
                for chunk in chunks {
                    ctx.update(chunk.as_ref());
                    // The owner may stop recycling (it is returning early): not an error.
                    let _ = hashed.send(chunk);
                }
                let mut out = [0u8; 32];
                out.copy_from_slice(ctx.finish().as_ref());
                out
            })
            .map_err(SealError::Io)?;
        Ok(Sha256Worker { to_worker, from_worker, worker })
    }

    fn update(&self, chunk: B) {
        // The worker runs until `to_worker` is dropped, unless it panicked; then the scope
        // re-raises that panic and nothing computed here is used.
        let _ = self.to_worker.send(chunk);
    }

    /// A chunk already hashed; waits for one if none is.
    fn recycle(&self) -> Result<B, SealError> {
        // Disconnected only if the worker panicked, which the scope re-raises.
        self.from_worker.recv().map_err(|_| SealError::Crypto)
    }

    /// The digest of everything handed over, and the chunks not yet recycled.
    fn finish(self) -> ([u8; 32], Vec<B>) {
        drop(self.to_worker);
        let digest = self.worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (digest, self.from_worker.try_iter().collect())
    }
}

/// Plaintext buffers while sealing: one being read, one being hashed. With one hashing
/// thread a third would only wait.
const SEAL_BUFFERS: usize = 2;

/// A sealing buffer of `len` bytes: a spare one, else the next the hashing thread is done with.
fn take_buffer<'scope>(
    spare: &mut Vec<Zeroizing<Vec<u8>>>,
    sha: &Sha256Worker<'scope, Zeroizing<Vec<u8>>>,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut buf = match spare.pop() {
        Some(b) => b,
        None => sha.recycle()?,
    };
    // Capacity is one chunk throughout, so this never reallocates (a reallocation would
    // leave an unwiped copy behind).
    buf.resize(len, 0);
    Ok(buf)
}

/// Seals `input` to `out` in constant memory (three chunks). The input is read twice: the
/// model digest is in the header, which is the associated data of every chunk, so the whole
/// plaintext must be hashed before the first chunk can be encrypted; the second pass hashes
/// again and refuses an input that changed in between. `progress` is called with the bytes
/// encrypted so far.
pub fn seal<R: Read + Seek, W: Write>(
    mut input: R,
    mut out: W,
    cipher: &dyn ChunkCipher,
    params: &SealParams,
    mut progress: impl FnMut(u64),
) -> Result<Header, SealError> {
    let chunk = params.chunk_size as usize;
    thread::scope(|scope| {
        // Pass 1: length and digest; reading the next chunk overlaps hashing this one.
        let sha = Sha256Worker::spawn(scope)?;
        let mut spare: Vec<_> =
            (0..SEAL_BUFFERS).map(|_| Zeroizing::new(Vec::with_capacity(chunk))).collect();
        let mut plaintext_len = 0u64;
        loop {
            let mut buf = take_buffer(&mut spare, &sha, chunk)?;
            let n = read_full(&mut input, &mut buf)?;
            buf.truncate(n);
            sha.update(buf);
            plaintext_len += n as u64;
            if n < chunk {
                break;
            }
        }
        let (model_digest, hashed) = sha.finish();
        spare.extend(hashed);

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

        // Pass 2: encrypt chunk i while chunk i−1 is re-hashed. The input must not have
        // changed in between.
        input.seek(SeekFrom::Start(0)).map_err(SealError::Io)?;
        let sha = Sha256Worker::spawn(scope)?;
        let mut sealed = vec![0u8; chunk.min(usize::try_from(plaintext_len).unwrap_or(chunk))];
        let count = header.chunk_count();
        let mut done = 0u64;
        for i in 0..count {
            let want = (plaintext_len - done).min(chunk as u64) as usize;
            let mut buf = take_buffer(&mut spare, &sha, want)?;
            if read_full(&mut input, &mut buf)? != want {
                return Err(SealError::InputChanged);
            }
            let ciphertext = &mut sealed[..want];
            let tag = cipher.seal(&nonce(&nonce_prefix, i, i + 1 == count)?, &aad, &buf, ciphertext)?;
            sha.update(buf);
            out.write_all(ciphertext).map_err(SealError::Io)?;
            out.write_all(&tag).map_err(SealError::Io)?;
            done += want as u64;
            progress(done);
        }
        let (check, _) = sha.finish();
        if check != model_digest || read_full(&mut input, &mut [0u8; 1])? != 0 {
            return Err(SealError::InputChanged);
        }
        out.flush().map_err(SealError::Io)?;
        Ok(header)
    })
}

/// Opens a sealed model into one exactly-sized buffer, wiped on drop. Each chunk is read
/// straight into its place in that buffer and decrypted there, so peak memory is the
/// plaintext alone. Every chunk is authenticated before the next is read; the SHA-256 of the
/// plaintext is computed on a second thread, a chunk behind, and must equal the header's
/// model digest; trailing bytes are an error. On any failure the buffer is wiped and dropped.
pub fn open<R: Read>(
    mut input: R,
    cipher: &dyn ChunkCipher,
    max_plaintext: u64,
) -> Result<(Header, Plaintext), SealError> {
    let (header, header_bytes) = Header::read(&mut input)?;
    if header.plaintext_len > max_plaintext {
        return Err(SealError::TooLarge { len: header.plaintext_len, max: max_plaintext });
    }
    let len = usize::try_from(header.plaintext_len)
        .map_err(|_| SealError::TooLarge { len: header.plaintext_len, max: max_plaintext })?;
    let aad = header_hash(&header_bytes);
    let chunk = header.chunk_size as usize;
    let count = header.chunk_count();
    let mut plain = Plaintext::zeroed(len)?;
    let mut rest = plain.as_mut_slice();
    let digest = thread::scope(|scope| {
        let sha = Sha256Worker::spawn(scope)?;
        let mut tag = [0u8; TAG_LEN];
        for i in 0..count {
            let n = rest.len().min(chunk);
            let (this, tail) = core::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            input.read_exact(this).map_err(|e| SealError::truncated_chunk(i, e))?;
            input.read_exact(&mut tag).map_err(|e| SealError::truncated_chunk(i, e))?;
            // On failure `this` may hold unauthenticated plaintext: it goes no further than
            // `plain`, which is wiped when dropped on the way out.
            if cipher
                .open_in_place(&nonce(&header.nonce_prefix, i, i + 1 == count)?, &aad, this, &tag)
                .is_err()
            {
                return Err(SealError::Tampered { chunk: i });
            }
            sha.update(&*this);
        }
        if read_full(&mut input, &mut [0u8; 1])? != 0 {
            return Err(SealError::TrailingBytes);
        }
        Ok(sha.finish().0)
    })?;
    if digest != header.model_digest {
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
