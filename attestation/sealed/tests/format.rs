#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! The sealed format against every way a host could change a sealed blob: version 2 (sharded
//! identity, slots, parallel workers) and the version 1 blobs that must still open.

use std::io::Cursor;

use nacre_sealed::header::{MAGIC, MAGIC_V1, MAX_SHARD, MIN_CHUNK, MIN_SHARD, TAG_LEN};
use nacre_sealed::identity::sha256;
use nacre_sealed::{
    AwsLcGcm, ChunkCipher, DataKey, Format, Header, ModelIdentity, Output, RustCryptoGcm, SealError,
    SealParams, Source, open, seal,
};
use proptest::prelude::*;

const CHUNK: u32 = MIN_CHUNK;
const MAX: u64 = 1 << 30;

fn params() -> SealParams {
    SealParams { chunk_size: CHUNK, shard_size: MIN_SHARD, ..SealParams::new("model-key", 1, "mlp", "1.0") }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7 + i / 4099) as u8).collect()
}

fn seal_params(cipher: &dyn ChunkCipher, plain: &[u8], p: &SealParams, workers: usize) -> (Header, Vec<u8>) {
    let mut out = Vec::new();
    let h = seal(plain, Output::Memory(&mut out), cipher, p, workers, &|_| {}).unwrap();
    (h, out)
}

fn seal_with(cipher: &dyn ChunkCipher, plain: &[u8]) -> (Header, Vec<u8>) {
    seal_params(cipher, plain, &params(), 2)
}

fn open_blob(blob: &[u8], cipher: &dyn ChunkCipher) -> Result<nacre_sealed::Opened, SealError> {
    open(blob, cipher, MAX, 3)
}

/// Everything before the body: magic, length, CBOR header and slots.
fn body_start(blob: &[u8]) -> usize {
    Header::read(&mut Cursor::new(blob)).unwrap().1.len()
}

/// Offset of chunk `i` of a blob sealed with `params()` (shards are a multiple of the chunk).
fn chunk_at(blob: &[u8], i: usize) -> usize {
    body_start(blob) + i * (CHUNK as usize + TAG_LEN)
}

fn keys() -> (AwsLcGcm, RustCryptoGcm) {
    let key = DataKey::generate().unwrap();
    (AwsLcGcm::new(&key).unwrap(), RustCryptoGcm::new(&key))
}

#[test]
fn round_trip_across_both_implementations_outputs_and_worker_counts() {
    let (fast, reference) = keys();
    let c = CHUNK as usize;
    let s = MIN_SHARD as usize;
    // A shard size that is not a multiple of the chunk (an OpenSSF Model Signing bundle's own
    // size can be anything): each shard's last chunk is short.
    let odd = SealParams { shard_size: MIN_SHARD + 1000, ..params() };
    for p in [params(), odd] {
        for len in [0, 1, c - 1, c, c + 1, s - 1, s, s + 1, 2 * s + 3 * c + 5] {
            let plain = data(len);
            for (sealer, opener, workers) in
                [(&fast as &dyn ChunkCipher, &reference as &dyn ChunkCipher, 1), (&reference, &fast, 3)]
            {
                let (h, blob) = seal_params(sealer, &plain, &p, workers);
                assert_eq!(h.format, Format::V2);
                assert_eq!(h.plaintext_len, len as u64);
                assert_eq!(blob.len() as u64, body_start(&blob) as u64 + h.body_len());
                let opened = open(&blob[..], opener, MAX, 4 - workers).unwrap();
                assert_eq!(opened.header, h);
                assert_eq!(opened.plaintext.as_slice(), plain.as_slice(), "len {len}");
                // The identity is the plaintext's alone: `nacre model digest` computes it too.
                let id = ModelIdentity::compute(&plain[..], p.shard_size, 2).unwrap();
                assert_eq!(id.identity(), h.model_identity);
                assert_eq!(opened.model_identity().unwrap(), id);
            }
        }
    }
}

/// Sealing into a buffer that held something else (longer, shorter, garbage) leaves exactly the
/// sealed model: nothing of the old contents survives.
#[test]
fn sealing_into_a_used_buffer_overwrites_all_of_it() {
    let (fast, _) = keys();
    let (big, small) = (data(2 * MIN_SHARD as usize + 9), data(CHUNK as usize + 3));
    for (first, second) in [(&big, &small), (&small, &big), (&small, &small)] {
        let mut buf = vec![0xA5; first.len() * 2];
        seal(&first[..], Output::Memory(&mut buf), &fast, &params(), 2, &|_| {}).unwrap();
        let h = seal(&second[..], Output::Memory(&mut buf), &fast, &params(), 2, &|_| {}).unwrap();
        assert_eq!(buf.len() as u64, body_start(&buf) as u64 + h.body_len());
        assert_eq!(open(&buf[..], &fast, MAX, 2).unwrap().plaintext.as_slice(), second.as_slice());
    }
}

#[test]
fn sealing_to_a_file_and_from_a_file_gives_the_same_model() {
    let (fast, reference) = keys();
    let plain = data(3 * MIN_SHARD as usize + 77);
    let dir = std::env::temp_dir().join(format!("nacre-sealed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.onnx");
    std::fs::write(&model, &plain).unwrap();
    let input = std::fs::File::open(&model).unwrap();
    let sealed_path = dir.join("model.sealed");
    let out = std::fs::File::create_new(&sealed_path).unwrap();
    let progress = std::sync::atomic::AtomicU64::new(0);
    let h = seal(
        &nacre_sealed::FileRange::whole(&input).unwrap(),
        Output::File(&out),
        &fast,
        &params(),
        2,
        &|done| {
            progress.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
        },
    )
    .unwrap();
    assert_eq!(progress.into_inner(), plain.len() as u64);
    let sealed = std::fs::File::open(&sealed_path).unwrap();
    let opened = open(&nacre_sealed::FileRange::whole(&sealed).unwrap(), &reference, MAX, 2).unwrap();
    assert_eq!(opened.header, h);
    assert_eq!(opened.plaintext.as_slice(), plain.as_slice());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_chunk_is_authenticated_and_named() {
    let (fast, reference) = keys();
    let c = CHUNK as usize;
    // Two shards of 256 chunks and a third of 4: flip a byte in chunks on both sides of each
    // shard boundary, and in the last tag; opened with both implementations.
    let (h, blob) = seal_with(&fast, &data(2 * MIN_SHARD as usize + 3 * c + 5));
    let count = h.chunk_count() as usize;
    assert_eq!(count, 2 * 256 + 4);
    for cipher in [&fast as &dyn ChunkCipher, &reference] {
        for chunk in [0, 1, 255, 256, 511, 512, count - 1] {
            let mut bad = blob.clone();
            bad[chunk_at(&blob, chunk) + 3] ^= 1;
            match open_blob(&bad, cipher) {
                Err(SealError::Tampered { chunk: k }) => assert_eq!(k, chunk as u64),
                other => panic!("chunk {chunk}: {:?}", other.map(|o| o.header)),
            }
        }
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(
            matches!(open_blob(&bad, cipher), Err(SealError::Tampered { chunk }) if chunk == count as u64 - 1)
        );
        // Two damaged chunks: the lowest is named whatever the scheduling.
        let mut bad = blob.clone();
        bad[chunk_at(&blob, 300)] ^= 1;
        bad[chunk_at(&blob, 20)] ^= 1;
        assert!(matches!(open_blob(&bad, cipher), Err(SealError::Tampered { chunk: 20 })));
    }
}

#[test]
fn reorder_truncate_extend_splice_and_wrong_key_fail() {
    let (cipher, _) = keys();
    let c = CHUNK as usize;
    let (_, blob) = seal_with(&cipher, &data(3 * c));
    let hl = body_start(&blob);
    let chunk = |i: usize| &blob[hl + i * (c + TAG_LEN)..hl + (i + 1) * (c + TAG_LEN)];
    // Swap chunks 0 and 1.
    let mut swapped = blob[..hl].to_vec();
    for i in [1, 0, 2] {
        swapped.extend_from_slice(chunk(i));
    }
    assert!(matches!(open_blob(&swapped, &cipher), Err(SealError::Tampered { chunk: 0 })));
    // Cut at a chunk boundary and inside a chunk: the reader knows the length from the header.
    for cut in [hl + 2 * (c + TAG_LEN), hl + 2 * (c + TAG_LEN) + 100, hl] {
        let r = open_blob(&blob[..cut], &cipher);
        assert!(matches!(r, Err(SealError::Truncated { .. })), "cut at {cut}: {:?}", r.map(|o| o.header));
    }
    // The last chunk re-used as chunk 1 (its last flag differs).
    let mut last_early = blob[..hl].to_vec();
    for i in [0, 2, 2] {
        last_early.extend_from_slice(chunk(i));
    }
    assert!(matches!(open_blob(&last_early, &cipher), Err(SealError::Tampered { chunk: 1 })));
    // Trailing bytes.
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(open_blob(&longer, &cipher), Err(SealError::TrailingBytes)));
    // Splicing two blobs sealed under the same key: a chunk of the other, and the other's
    // header over this body (its nonce prefix and identity differ).
    let (_, other) = seal_with(&cipher, &data(3 * c));
    let mut spliced = blob.clone();
    spliced[hl..hl + c + TAG_LEN].copy_from_slice(&other[hl..hl + c + TAG_LEN]);
    assert!(matches!(open_blob(&spliced, &cipher), Err(SealError::Tampered { chunk: 0 })));
    let mut other_header = other[..hl].to_vec();
    other_header.extend_from_slice(&blob[hl..]);
    assert!(matches!(open_blob(&other_header, &cipher), Err(SealError::Tampered { chunk: 0 })));
    // Another key.
    let wrong = AwsLcGcm::new(&DataKey::generate().unwrap()).unwrap();
    assert!(matches!(open_blob(&blob, &wrong), Err(SealError::Tampered { chunk: 0 })));
    // A size limit below the model.
    assert!(matches!(open(&blob[..], &cipher, 10, 1), Err(SealError::TooLarge { .. })));
}

/// Offset of the CBOR unsigned integer that follows the text key `key` in the header.
fn field_value_at(blob: &[u8], key: &str) -> usize {
    let mut needle = vec![0x60 + key.len() as u8];
    needle.extend_from_slice(key.as_bytes());
    blob.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
}

#[test]
fn header_is_parsed_strictly() {
    let (cipher, _) = keys();
    let p = SealParams {
        signature_bundle: Some(b"{\"bundle\":1}".to_vec()),
        guard_manifest: Some(b"guard".to_vec()),
        ..params()
    };
    let (h, blob) = seal_params(&cipher, &data(100), &p, 1);
    let hl = body_start(&blob);
    let mut bad_magic = blob.clone();
    bad_magic[0] = b'X';
    assert!(matches!(open_blob(&bad_magic, &cipher), Err(SealError::Header(_))));
    // A future generation is refused by name.
    let mut v3 = blob.clone();
    v3[7] = b'3';
    let r = open_blob(&v3, &cipher);
    assert!(matches!(&r, Err(SealError::Header(m)) if m.contains("generation")), "{:?}", r.map(|o| o.header));
    // Any change to the header or slot bytes: refused as a header, chunk 0 fails (associated
    // data), or, for the identity, the recomputed identity differs.
    let identity_at = blob.windows(32).position(|w| w == h.model_identity).unwrap();
    for i in 8..hl {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        match open_blob(&bad, &cipher) {
            Err(SealError::IdentityMismatch) => {
                assert!((identity_at..identity_at + 32).contains(&i), "byte {i}")
            }
            Err(_) => assert!(!(identity_at..identity_at + 32).contains(&i), "byte {i}"),
            Ok(_) => panic!("header byte {i} changed and the model opened"),
        }
    }
    // A CBOR version other than 2 under the version-2 magic.
    let mut version = blob.clone();
    let at = field_value_at(&blob, "version");
    assert_eq!(version[at], 0x02);
    version[at] = 0x03;
    let r = open_blob(&version, &cipher);
    assert!(matches!(&r, Err(SealError::Header(m)) if m.contains("version 3")), "{:?}", r.map(|o| o.header));
    // Shard sizes outside the range, written canonically (uint32 0x1a), are refused on open.
    let at = field_value_at(&blob, "shard_size");
    assert_eq!(blob[at], 0x1a);
    for shard in [(MIN_SHARD - 1) as u32, 4096, 0] {
        let mut bad = blob.clone();
        bad[at + 1..at + 5].copy_from_slice(&shard.to_be_bytes());
        let r = open_blob(&bad, &cipher);
        assert!(matches!(&r, Err(SealError::Header(m)) if m.contains("shard size")), "{shard}");
    }
    // A slot longer than allowed, and one that runs past the end.
    let at = field_value_at(&blob, "signature_len");
    let mut huge = blob.clone();
    huge[at] = 0x1a; // uint32 follows; it would not re-encode canonically either way
    assert!(matches!(open_blob(&huge, &cipher), Err(SealError::Header(_))));
    assert!(matches!(Header::read(&mut Cursor::new(&blob[..hl - 1])), Err(SealError::Truncated { .. })));
    // Semantically invalid headers are refused at encode time too.
    for bad in [
        Header { chunk_size: 5000, ..h.clone() },
        Header { shard_size: Some(4096), ..h.clone() },
        Header { shard_size: Some(MAX_SHARD + 1), ..h.clone() },
        Header { shard_size: None, ..h.clone() },
        Header { model_name: "a\nb".into(), ..h.clone() },
        Header { signature_bundle: Some(Vec::new()), ..h.clone() },
        Header { guard_manifest: Some(vec![0; 9 << 20]), ..h.clone() },
        Header { format: Format::V1, shard_size: None, ..h.clone() },
    ] {
        assert!(bad.encode().is_err(), "{bad:?}");
    }
    // Header length beyond the limit.
    let mut huge = blob.clone();
    huge[8..12].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(open_blob(&huge, &cipher), Err(SealError::Header(_))));
}

#[test]
fn slots_are_carried_and_authenticated() {
    let (cipher, _) = keys();
    let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#.to_vec();
    let guard = b"guard manifest v1".to_vec();
    let p = SealParams {
        signature_bundle: Some(bundle.clone()),
        guard_manifest: Some(guard.clone()),
        ..params()
    };
    let (h, blob) = seal_params(&cipher, &data(5000), &p, 2);
    let opened = open_blob(&blob, &cipher).unwrap();
    assert_eq!(opened.header.signature_bundle.as_deref(), Some(&bundle[..]));
    assert_eq!(opened.header.guard_manifest.as_deref(), Some(&guard[..]));
    assert_eq!(h.guard_digest(), sha256(&guard));
    assert_eq!(Header { guard_manifest: None, ..h.clone() }.guard_digest(), [0; 32]);
    // The slots sit just before the body; a changed slot byte fails chunk 0.
    let hl = body_start(&blob);
    for at in [hl - guard.len() - bundle.len(), hl - 1] {
        let mut bad = blob.clone();
        bad[at] ^= 0x20;
        assert!(matches!(open_blob(&bad, &cipher), Err(SealError::Tampered { chunk: 0 })), "slot byte {at}");
    }
}

#[test]
fn version_1_blobs_still_open_and_say_so() {
    // Sealed by the version-1 code (commit 59b684d) under the key 0x42 × 32; the plaintext is
    // `(i * 31 + 7) as u8` for 3 × 4096 + 5 bytes.
    let blob = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1.sealed")).unwrap();
    let plain: Vec<u8> = (0..3 * 4096 + 5).map(|i: usize| (i * 31 + 7) as u8).collect();
    let key = DataKey::from_bytes([0x42; 32]);
    for cipher in [&AwsLcGcm::new(&key).unwrap() as &dyn ChunkCipher, &RustCryptoGcm::new(&key)] {
        let opened = open(&blob[..], cipher, MAX, 2).unwrap();
        assert_eq!(opened.header.format, Format::V1);
        assert_eq!(opened.header.shard_size, None);
        assert_eq!(opened.header.model_identity, sha256(&plain), "a v1 identity is the plain SHA-256");
        assert_eq!(opened.plaintext.as_slice(), plain.as_slice());
        assert!(opened.model_identity().is_none());
    }
    let cipher = AwsLcGcm::new(&key).unwrap();
    // Each generation's bytes under the other's magic are refused.
    let mut as_v2 = blob.clone();
    as_v2[..8].copy_from_slice(&MAGIC);
    assert!(matches!(open_blob(&as_v2, &cipher), Err(SealError::Header(_))));
    let (_, v2) = seal_with(&cipher, &plain);
    let mut as_v1 = v2.clone();
    as_v1[..8].copy_from_slice(&MAGIC_V1);
    assert!(matches!(open_blob(&as_v1, &cipher), Err(SealError::Header(_))));
    // The version-1 tamper checks still hold.
    let mut bad = blob.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(matches!(open_blob(&bad, &cipher), Err(SealError::Tampered { chunk: 3 })));
    assert!(matches!(open_blob(&blob[..blob.len() - 5], &cipher), Err(SealError::Truncated { .. })));
}

#[test]
fn the_identity_is_the_spec_manifest_and_relates_to_an_oms_manifest() {
    let plain = data(2 * MIN_SHARD as usize + 10);
    let id = ModelIdentity::compute(&plain[..], MIN_SHARD, 3).unwrap();
    let s = MIN_SHARD as usize;
    let shards: Vec<[u8; 32]> = plain.chunks(s).map(sha256).collect();
    assert_eq!(id.shard_digests, shards);
    // docs/sealed-format.md: SHA-256("NACRE-MODEL-IDENTITY-2" ‖ len u64 BE ‖ shard u64 BE ‖ digests).
    let mut manifest = b"NACRE-MODEL-IDENTITY-2".to_vec();
    manifest.extend_from_slice(&(plain.len() as u64).to_be_bytes());
    manifest.extend_from_slice(&MIN_SHARD.to_be_bytes());
    shards.iter().for_each(|d| manifest.extend_from_slice(d));
    assert_eq!(id.identity(), sha256(&manifest));
    // OMS: the subject digest is the SHA-256 of the shard digests concatenated in order.
    assert_eq!(id.oms_subject_digest(), sha256(&shards.concat()));
    // The same bytes under another shard size, or one more byte: another identity.
    assert_ne!(ModelIdentity::compute(&plain[..], MIN_SHARD + 1, 1).unwrap().identity(), id.identity());
    assert_ne!(
        ModelIdentity::compute(&plain[..plain.len() - 1], MIN_SHARD, 1).unwrap().identity(),
        id.identity()
    );
    assert!(ModelIdentity::compute(&plain[..], 4096, 1).is_err());
    // A file gives the same identity as memory.
    let path = std::env::temp_dir().join(format!("nacre-identity-{}", std::process::id()));
    std::fs::write(&path, &plain).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let from_file = ModelIdentity::compute(&nacre_sealed::FileRange::whole(&file).unwrap(), MIN_SHARD, 2);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(from_file.unwrap(), id);
}

/// Builds a version-2 blob by hand from the spec (docs/sealed-format.md): shards cut into
/// chunks, chunk `i` (numbered across the body) under nonce `prefix ‖ i (u32 BE) ‖ last`,
/// associated data the SHA-256 of everything before the body with the identity zeroed.
fn seal_by_spec(cipher: &dyn ChunkCipher, header: &Header, plain: &[u8]) -> Vec<u8> {
    let mut blob = header.encode().unwrap();
    let aad = sha256(&Header { model_identity: [0; 32], ..header.clone() }.encode().unwrap());
    let shard = header.shard_size.unwrap() as usize;
    let chunks: Vec<&[u8]> = if plain.is_empty() {
        vec![&[]]
    } else {
        plain.chunks(shard).flat_map(|s| s.chunks(header.chunk_size as usize)).collect()
    };
    let count = chunks.len();
    assert_eq!(count as u64, header.chunk_count());
    for (i, p) in chunks.into_iter().enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..7].copy_from_slice(&header.nonce_prefix);
        nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        nonce[11] = u8::from(i + 1 == count);
        let mut c = vec![0u8; p.len()];
        let tag = cipher.seal(&nonce, &aad, p, &mut c).unwrap();
        blob.extend_from_slice(&c);
        blob.extend_from_slice(&tag);
    }
    blob
}

#[test]
fn body_matches_the_spec_and_the_identity_is_checked() {
    let (fast, reference) = keys();
    let odd = SealParams { shard_size: MIN_SHARD + 1000, ..params() };
    let plain = data(2 * MIN_SHARD as usize + 3 * CHUNK as usize + 5);
    let (header, blob) = seal_params(&fast, &plain, &odd, 2);
    // Re-encrypting under the parsed header by the spec gives back the same bytes.
    assert_eq!(seal_by_spec(&reference, &header, &plain), blob);
    // Every chunk authenticates, but the header claims another identity: only someone holding
    // the key can build this, and opening still refuses it.
    let mut lying = header.clone();
    lying.model_identity[0] ^= 1;
    let blob = seal_by_spec(&fast, &lying, &plain);
    for opener in [&fast as &dyn ChunkCipher, &reference] {
        assert!(matches!(open_blob(&blob, opener), Err(SealError::IdentityMismatch)));
    }
}

/// A model file that shrinks while it is being sealed: reads past `cut` fail.
struct Shrinks {
    data: Vec<u8>,
    cut: usize,
}

impl Source for Shrinks {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.data[..self.cut].read_exact_at(buf, offset)
    }
}

#[test]
fn sealing_refuses_an_input_that_shrinks() {
    let (cipher, _) = keys();
    let data = data(2 * MIN_SHARD as usize + 5);
    let input = Shrinks { cut: data.len() - 3, data };
    let r = seal(&input, Output::Memory(&mut Vec::new()), &cipher, &params(), 2, &|_| {});
    assert!(matches!(r, Err(SealError::InputChanged)), "{r:?}");
}

#[test]
fn key_and_plaintext_are_never_printed() {
    let key = DataKey::from_bytes([0xAB; 32]);
    let shown = format!("{key:?}");
    assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
    let cipher = AwsLcGcm::new(&key).unwrap();
    let (_, blob) = seal_with(&cipher, b"secret weights");
    let opened = open_blob(&blob, &cipher).unwrap();
    let shown = format!("{:?}", opened.plaintext);
    assert!(!shown.contains("secret") && !shown.contains("115"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_models_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let key = DataKey::generate().unwrap();
        let (_, blob) = seal_with(&AwsLcGcm::new(&key).unwrap(), &plain);
        let opened = open(&blob[..], &RustCryptoGcm::new(&key), MAX, 2).unwrap();
        prop_assert_eq!(opened.plaintext.as_slice(), plain.as_slice());
    }

    /// Arbitrary header bytes under either magic: never a panic.
    #[test]
    fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), v1 in any::<bool>()) {
        let mut input = if v1 { MAGIC_V1.to_vec() } else { MAGIC.to_vec() };
        input.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        input.extend_from_slice(&bytes);
        let _ = Header::read(&mut Cursor::new(&input));
    }
}
