#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! Sealing and opening throughput, 64 MiB in 1 MiB chunks, with both AES-256-GCM
//! implementations (aws-lc-rs, the bulk path; RustCrypto `aes-gcm`, the reference).
//! Compare with `openssl speed -evp aes-256-gcm` on the same machine.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nacre_sealed::header::DEFAULT_CHUNK;
use nacre_sealed::{AwsLcGcm, ChunkCipher, DataKey, RustCryptoGcm, SealParams, open, seal};

const LEN: usize = 64 << 20;

fn bench(c: &mut Criterion) {
    let key = DataKey::generate().unwrap();
    let plain: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
    let params = SealParams {
        key_id: "bench".into(),
        key_version: 1,
        model_name: "bench".into(),
        model_version: "1".into(),
        chunk_size: DEFAULT_CHUNK,
    };
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
        g.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(blob.len());
                seal(Cursor::new(&plain), &mut out, cipher, &params, |_| {}).unwrap();
                black_box(out)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
