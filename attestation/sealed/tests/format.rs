#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! The sealed format against every way a host could change a sealed blob.

use std::io::Cursor;

use nacre_sealed::header::{MIN_CHUNK, TAG_LEN};
use nacre_sealed::{
    AwsLcGcm, ChunkCipher, DataKey, Header, RustCryptoGcm, SealError, SealParams, open, seal,
};
use proptest::prelude::*;

const CHUNK: u32 = MIN_CHUNK;
const MAX: u64 = 1 << 30;

fn params() -> SealParams {
    SealParams {
        key_id: "model-key".into(),
        key_version: 1,
        model_name: "mlp".into(),
        model_version: "1.0".into(),
        chunk_size: CHUNK,
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

fn seal_with(cipher: &dyn ChunkCipher, plain: &[u8]) -> (Header, Vec<u8>) {
    let mut out = Vec::new();
    let h = seal(Cursor::new(plain), &mut out, cipher, &params(), |_| {}).unwrap();
    (h, out)
}

fn header_len(blob: &[u8]) -> usize {
    12 + u32::from_be_bytes(blob[8..12].try_into().unwrap()) as usize
}

#[test]
fn round_trip_across_both_implementations() {
    let key = DataKey::generate().unwrap();
    let fast = AwsLcGcm::new(&key).unwrap();
    let reference = RustCryptoGcm::new(&key);
    let c = CHUNK as usize;
    for len in [0, 1, c - 1, c, c + 1, 3 * c + 5] {
        let plain = data(len);
        for (sealer, opener) in
            [(&fast as &dyn ChunkCipher, &reference as &dyn ChunkCipher), (&reference, &fast)]
        {
            let (h, blob) = seal_with(sealer, &plain);
            assert_eq!(h.plaintext_len, len as u64);
            assert_eq!(blob.len() as u64, header_len(&blob) as u64 + h.body_len());
            let (h2, out) = open(Cursor::new(&blob), opener, MAX).unwrap();
            assert_eq!(h2, h);
            assert_eq!(out.as_slice(), plain.as_slice(), "len {len}");
        }
    }
}

#[test]
fn every_chunk_is_authenticated_and_named() {
    let key = DataKey::generate().unwrap();
    let cipher = AwsLcGcm::new(&key).unwrap();
    let c = CHUNK as usize;
    let (_, blob) = seal_with(&cipher, &data(3 * c + 5));
    let hl = header_len(&blob);
    for chunk in 0..4u64 {
        let at = hl + chunk as usize * (c + TAG_LEN) + 3;
        let mut bad = blob.clone();
        bad[at] ^= 1;
        match open(Cursor::new(&bad), &cipher, MAX) {
            Err(SealError::Tampered { chunk: k }) => assert_eq!(k, chunk),
            other => panic!("chunk {chunk}: {other:?}"),
        }
    }
    // A flipped tag byte of the last chunk.
    let mut bad = blob.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(open(Cursor::new(&bad), &cipher, MAX), Err(SealError::Tampered { chunk: 3 })));
}

#[test]
fn reorder_truncate_extend_splice_and_wrong_key_fail() {
    let key = DataKey::generate().unwrap();
    let cipher = AwsLcGcm::new(&key).unwrap();
    let c = CHUNK as usize;
    let (_, blob) = seal_with(&cipher, &data(3 * c));
    let hl = header_len(&blob);
    let chunk = |i: usize| &blob[hl + i * (c + TAG_LEN)..hl + (i + 1) * (c + TAG_LEN)];
    // Swap chunks 0 and 1.
    let mut swapped = blob[..hl].to_vec();
    for i in [1, 0, 2] {
        swapped.extend_from_slice(chunk(i));
    }
    assert!(matches!(open(Cursor::new(&swapped), &cipher, MAX), Err(SealError::Tampered { chunk: 0 })));
    // Cut at a chunk boundary: the reader knows three chunks are due.
    let cut = &blob[..hl + 2 * (c + TAG_LEN)];
    let r = open(Cursor::new(cut), &cipher, MAX);
    assert!(matches!(r, Err(SealError::Truncated { .. })), "{r:?}");
    // The last chunk re-used as chunk 1 (its last flag differs).
    let mut last_early = blob[..hl].to_vec();
    for i in [0, 2, 2] {
        last_early.extend_from_slice(chunk(i));
    }
    assert!(matches!(open(Cursor::new(&last_early), &cipher, MAX), Err(SealError::Tampered { chunk: 1 })));
    // Trailing bytes.
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(open(Cursor::new(&longer), &cipher, MAX), Err(SealError::TrailingBytes)));
    // A chunk spliced in from another blob sealed under the same key.
    let (_, other) = seal_with(&cipher, &data(3 * c));
    let mut spliced = blob.clone();
    spliced[hl..hl + c + TAG_LEN].copy_from_slice(&other[hl..hl + c + TAG_LEN]);
    assert!(matches!(open(Cursor::new(&spliced), &cipher, MAX), Err(SealError::Tampered { chunk: 0 })));
    // Another key.
    let wrong = AwsLcGcm::new(&DataKey::generate().unwrap()).unwrap();
    assert!(matches!(open(Cursor::new(&blob), &wrong, MAX), Err(SealError::Tampered { chunk: 0 })));
    // A size limit below the model.
    assert!(matches!(open(Cursor::new(&blob), &cipher, 10), Err(SealError::TooLarge { .. })));
}

#[test]
fn header_is_parsed_strictly() {
    let key = DataKey::generate().unwrap();
    let cipher = AwsLcGcm::new(&key).unwrap();
    let (h, blob) = seal_with(&cipher, &data(100));
    let hl = header_len(&blob);
    let mut bad_magic = blob.clone();
    bad_magic[0] = b'X';
    assert!(matches!(open(Cursor::new(&bad_magic), &cipher, MAX), Err(SealError::Header(_))));
    // Any change to the header bytes: either refused as a header or chunk 0 fails (AAD).
    for i in 12..hl {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        assert!(open(Cursor::new(&bad), &cipher, MAX).is_err(), "header byte {i}");
    }
    // Semantically invalid headers are refused at encode time too.
    let mut v2 = h.clone();
    v2.version = 2;
    assert!(v2.encode().is_err());
    let mut odd = h.clone();
    odd.chunk_size = 5000;
    assert!(odd.encode().is_err());
    let mut ctl = h;
    ctl.model_name = "a\nb".into();
    assert!(ctl.encode().is_err());
    // Header length beyond the limit.
    let mut huge = blob.clone();
    huge[8..12].copy_from_slice(&100_000u32.to_be_bytes());
    assert!(matches!(open(Cursor::new(&huge), &cipher, MAX), Err(SealError::Header(_))));
}

#[test]
fn key_is_never_printed() {
    let key = DataKey::from_bytes([0xAB; 32]);
    let shown = format!("{key:?}");
    assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_models_round_trip(plain in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let key = DataKey::generate().unwrap();
        let (_, blob) = seal_with(&AwsLcGcm::new(&key).unwrap(), &plain);
        let (_, out) = open(Cursor::new(&blob), &RustCryptoGcm::new(&key), MAX).unwrap();
        prop_assert_eq!(out.as_slice(), plain.as_slice());
    }

    /// Arbitrary header bytes: never a panic.
    #[test]
    fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut input = b"NACRESM1".to_vec();
        input.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        input.extend_from_slice(&bytes);
        let _ = Header::read(&mut Cursor::new(&input));
    }
}

/// Builds a body by hand from the spec (docs/sealed-format.md): chunk `i` under nonce
/// `prefix ‖ i (u32 BE) ‖ last`, associated data `SHA-256(magic ‖ length ‖ header)`.
fn seal_by_spec(cipher: &dyn ChunkCipher, header: &Header, plain: &[u8]) -> Vec<u8> {
    let mut blob = header.encode().unwrap();
    let aad = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &blob);
    let count = header.chunk_count() as usize;
    let chunks: Vec<&[u8]> =
        if plain.is_empty() { vec![&[]] } else { plain.chunks(header.chunk_size as usize).collect() };
    assert_eq!(chunks.len(), count);
    for (i, p) in chunks.into_iter().enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..7].copy_from_slice(&header.nonce_prefix);
        nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        nonce[11] = u8::from(i + 1 == count);
        let mut c = vec![0u8; p.len()];
        let tag = cipher.seal(&nonce, aad.as_ref(), p, &mut c).unwrap();
        blob.extend_from_slice(&c);
        blob.extend_from_slice(&tag);
    }
    blob
}

#[test]
fn body_matches_the_spec_and_the_model_digest_is_checked() {
    let key = DataKey::generate().unwrap();
    let fast = AwsLcGcm::new(&key).unwrap();
    let reference = RustCryptoGcm::new(&key);
    let plain = data(3 * CHUNK as usize + 5);
    let (header, blob) = seal_with(&fast, &plain);
    // Re-encrypting under the parsed header by the spec gives back the same bytes.
    assert_eq!(seal_by_spec(&reference, &header, &plain), blob);
    // Every chunk authenticates, but the header claims another model digest: only someone
    // holding the key can build this, and opening still refuses it.
    let mut lying = header.clone();
    lying.model_digest[0] ^= 1;
    let blob = seal_by_spec(&fast, &lying, &plain);
    for opener in [&fast as &dyn ChunkCipher, &reference] {
        assert!(matches!(open(Cursor::new(&blob), opener, MAX), Err(SealError::DigestMismatch)));
    }
}

/// A model file rewritten while it is being sealed: the second pass reads other bytes.
struct ChangesAfterFirstPass {
    data: Vec<u8>,
    second: Vec<u8>,
    pos: usize,
    passes: u32,
}

impl std::io::Read for ChangesAfterFirstPass {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let src = if self.passes == 0 { &self.data } else { &self.second };
        let n = buf.len().min(src.len().saturating_sub(self.pos));
        buf[..n].copy_from_slice(&src[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl std::io::Seek for ChangesAfterFirstPass {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        assert_eq!(to, std::io::SeekFrom::Start(0));
        self.pos = 0;
        self.passes += 1;
        Ok(0)
    }
}

#[test]
fn sealing_refuses_an_input_that_changes_between_passes() {
    let cipher = AwsLcGcm::new(&DataKey::generate().unwrap()).unwrap();
    let c = CHUNK as usize;
    let data = data(3 * c + 5);
    let mut flipped = data.clone();
    flipped[2 * c + 1] ^= 1;
    let mut longer = data.clone();
    longer.push(0);
    for second in [flipped, data[..data.len() - 1].to_vec(), data[..c].to_vec(), longer] {
        let input = ChangesAfterFirstPass { data: data.clone(), second, pos: 0, passes: 0 };
        let r = seal(input, Vec::new(), &cipher, &params(), |_| {});
        assert!(matches!(r, Err(SealError::InputChanged)), "{r:?}");
    }
}

#[test]
fn plaintext_is_never_printed() {
    let cipher = AwsLcGcm::new(&DataKey::generate().unwrap()).unwrap();
    let (_, blob) = seal_with(&cipher, b"secret weights");
    let (_, plain) = open(Cursor::new(&blob), &cipher, MAX).unwrap();
    let shown = format!("{plain:?}");
    assert!(!shown.contains("secret") && !shown.contains("115"), "{shown}");
}
