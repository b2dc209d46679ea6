#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! Sealing and opening throughput, 64 MiB in memory, with both AES-256-GCM implementations
//! (aws-lc-rs, the bulk path; RustCrypto `aes-gcm`, the reference), and the two primitives
//! that bound them: SHA-256 (the model digest; sequential) and AES-256-GCM alone.
//! `scripts/bench-sealed.sh` runs this beside `openssl speed` and prints the ratios.
//!
//! What is timed: `open` from an in-memory reader, including allocating the output buffer,
//! faulting it in, and wiping and unmapping it on drop (the guest pays all of it once per
//! model). `seal` from an in-memory reader into a sink whose memory is reused across
//! iterations: the sink is the caller's (a file in practice), not the library's.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nacre_sealed::header::DEFAULT_CHUNK;
use nacre_sealed::{AwsLcGcm, ChunkCipher, DataKey, RustCryptoGcm, SealParams, open, seal};

const LEN: usize = 64 << 20;

fn plaintext() -> Vec<u8> {
    (0..LEN).map(|i| (i % 251) as u8).collect()
}

fn params(chunk_size: u32) -> SealParams {
    SealParams {
        key_id: "bench".into(),
        key_version: 1,
        model_name: "bench".into(),
        model_version: "1".into(),
        chunk_size,
    }
}

fn sealed(c: &mut Criterion) {
    let key = DataKey::generate().unwrap();
    let plain = plaintext();
    let params = params(DEFAULT_CHUNK);
    let fast = AwsLcGcm::new(&key).unwrap();
    let reference = RustCryptoGcm::new(&key);
    let ciphers: [(&str, &dyn ChunkCipher); 2] = [("aws-lc-rs", &fast), ("aes-gcm", &reference)];
    let mut g = c.benchmark_group("sealed_64MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    for (name, cipher) in ciphers {
        let mut blob = Vec::with_capacity(LEN + (1 << 16));
        seal(Cursor::new(&plain), &mut blob, cipher, &params, |_| {}).unwrap();
        g.bench_function(format!("open/{name}"), |b| {
            b.iter(|| black_box(open(Cursor::new(&blob), cipher, u64::MAX).unwrap()))
        });
        let mut sink = Vec::with_capacity(blob.len());
        g.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| {
                sink.clear();
                seal(Cursor::new(&plain), &mut sink, cipher, &params, |_| {}).unwrap();
                black_box(&sink);
            })
        });
    }
    g.finish();
}

/// The bound: opening cannot beat SHA-256 of the plaintext; sealing hashes it twice, once
/// before the first chunk can be encrypted.
fn primitives(c: &mut Criterion) {
    let key = DataKey::generate().unwrap();
    let plain = plaintext();
    let mut g = c.benchmark_group("primitive_64MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);
    g.bench_function("sha256/aws-lc-rs", |b| {
        b.iter(|| black_box(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &plain)))
    });
    g.bench_function("sha256/sha2", |b| {
        use sha2::Digest;
        b.iter(|| black_box(sha2::Sha256::digest(&plain)))
    });
    let fast = AwsLcGcm::new(&key).unwrap();
    let reference = RustCryptoGcm::new(&key);
    let ciphers: [(&str, &dyn ChunkCipher); 2] = [("aws-lc-rs", &fast), ("aes-gcm", &reference)];
    let mut out = vec![0u8; LEN];
    let chunk = DEFAULT_CHUNK as usize;
    for (name, cipher) in ciphers {
        g.bench_function(format!("aes256gcm_1MiB_chunks/{name}"), |b| {
            b.iter(|| {
                for (p, c) in plain.chunks(chunk).zip(out.chunks_mut(chunk)) {
                    black_box(cipher.seal(&[7; 12], &[0; 32], p, c).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, sealed, primitives);
criterion_main!(benches);
