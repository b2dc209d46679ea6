#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code: a failure is the report
//! Verification cost on the real vectors, against bare-crypto baselines.
//!
//! - `snp/cached_chain`: full appraisal of `snp/genoa-v3-azure-trustee` by one long-lived
//!   `SnpVerifier` (chain cache warm after the first call). Target: ≤ 1.2× `baseline/p384_verify`.
//! - `snp/full_chain`: the same with a new `SnpVerifier` per iteration (ARK, ASK, VCEK, CRL).
//! - `baseline/p384_verify`: one ECDSA P-384/SHA-384 verification of the same report with its
//!   VCEK key, pre-parsed (`ParsedPublicKey`, as in the verifier's cache);
//!   `baseline/p384_verify_unparsed` parses the key every time.
//! - `tdx/verify`: full appraisal of `tdx/v4-b0c06f-phala`. Target: ≤ 1.1× `baseline/dcap_qvl_verify`.
//! - `baseline/dcap_qvl_verify`: bare `dcap_qvl` verification of the same (trimmed) quote.
//! - `breakdown/*`: the parts of the cached SNP path, measured separately (no targets).
//! - `PAIRED` lines: each target pair again, interleaved call by call (robust to load drift).
//!
//! `scripts/bench.sh` runs this and prints the ratios.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, ParsedPublicKey, UnparsedPublicKey};
use criterion::{Criterion, criterion_group, criterion_main};
use nacre_tests::{read_vector, unix, vectors_dir};
use nacre_verifier::tdx::{collateral_from_json, quote_len};
use nacre_verifier::x509;
use nacre_verifier::{
    Appraiser, CertSet, ExpectedReportData, Policy, SnpEvidence, SnpRoots, SnpVerifier, TdxEvidence,
    TdxVerifier,
};
use nacre_wire::snp::SnpReport;

const SNP_DIR: &str = "snp/genoa-v3-azure-trustee";
const SNP_NOW: &str = "2025-10-01T00:00:00Z";
const TDX_DIR: &str = "tdx/v4-b0c06f-phala";
const TDX_NOW: i64 = 1_751_623_200;

/// Offset of the signature in an SNP report; R and S are 72-byte little-endian fields.
const SIG_OFF: usize = 0x2A0;

/// The vector's certificates and CRL, loaded as `tests/vectors.rs` does.
fn snp_certs() -> CertSet {
    let dir = vectors_dir().join(SNP_DIR);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut set = CertSet::default();
    for name in names.iter().filter(|n| n.ends_with(".pem") || n.ends_with(".der")) {
        set.add(&std::fs::read(dir.join(name)).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!((set.certs.len(), set.crls.len()), (3, 1), "ARK, ASK, VCEK and one CRL");
    set
}

/// The VCEK's uncompressed P-384 point.
fn vcek_point() -> Vec<u8> {
    let pem = read_vector(&format!("{SNP_DIR}/vcek.pem"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    cert.public_key().subject_public_key.data.to_vec()
}

/// The report's signature as big-endian `r || s` (48 bytes each).
fn sig_rs(report: &[u8]) -> [u8; 96] {
    let mut out = [0u8; 96];
    out[..48].copy_from_slice(&report[SIG_OFF..SIG_OFF + 48]);
    out[48..].copy_from_slice(&report[SIG_OFF + 72..SIG_OFF + 72 + 48]);
    out[..48].reverse();
    out[48..].reverse();
    out
}

/// The verifier's chain cache key for this vector (Genoa CPUID, VCEK).
fn cache_key(certs: &CertSet) -> [u8; 32] {
    nacre_verifier::snp::chain_cache_key(
        certs,
        Some(nacre_wire::snp::Product::Genoa),
        nacre_wire::snp::SigningKey::Vcek,
    )
}

fn snp(c: &mut Criterion) {
    let report = read_vector(&format!("{SNP_DIR}/report.bin"));
    let certs = snp_certs();
    let now = unix(SNP_NOW);
    let appraiser = Appraiser::new(Policy::default());
    let evidence = SnpEvidence { report: &report, certs: &certs };
    let appraise = |v: &SnpVerifier| {
        appraiser.appraise(v, evidence, ExpectedReportData::InsecureUnbound, now).expect("genuine vector")
    };

    let verifier = SnpVerifier::new(SnpRoots::Amd);
    appraise(&verifier); // warms the chain cache

    let point = vcek_point();
    let sig = sig_rs(&report);
    let signed = &report[..SIG_OFF];
    let key = ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &point).unwrap();
    key.verify_sig(signed, &sig).expect("baseline: report signature verifies with the VCEK");

    // Each benchmark right after its baseline: on a shared machine the load drifts less in between.
    let mut g = c.benchmark_group("baseline");
    g.bench_function("p384_verify", |b| b.iter(|| black_box(&key).verify_sig(black_box(signed), &sig)));
    g.finish();
    let mut g = c.benchmark_group("snp");
    g.bench_function("cached_chain", |b| b.iter(|| appraise(black_box(&verifier))));
    g.bench_function("full_chain", |b| b.iter(|| appraise(&SnpVerifier::new(SnpRoots::Amd))));
    g.finish();
    let mut g = c.benchmark_group("baseline");
    g.bench_function("p384_verify_unparsed", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, black_box(&point))
                .verify(black_box(signed), &sig)
        })
    });
    g.finish();

    // The parts of the cached path, to see where time beyond the one ECDSA verification goes.
    let mut g = c.benchmark_group("breakdown");
    g.bench_function("snp_authenticate", |b| {
        b.iter(|| verifier.authenticate(black_box(&report), &certs, false).unwrap())
    });
    g.bench_function("snp_cache_key_sha256", |b| b.iter(|| cache_key(black_box(&certs))));
    g.bench_function("snp_report_parse", |b| b.iter(|| SnpReport::parse(black_box(&report)).unwrap()));
    let map: Mutex<HashMap<[u8; 32], Arc<[u8; 64]>>> =
        Mutex::new(HashMap::from([(cache_key(&certs), Arc::new([0; 64]))]));
    let k = cache_key(&certs);
    g.bench_function("snp_mutex_map_hit", |b| {
        b.iter(|| map.lock().ok().and_then(|m| m.get(black_box(&k)).cloned()).unwrap())
    });
    let claims = appraise(&verifier).into_inner();
    g.bench_function("snp_claims_clone_drop", |b| b.iter(|| black_box(&claims).clone()));
    // And of the cold chain: X.509 parsing and one RSA-PSS-4096 verification (there are four:
    // ARK self-signature, ASK, VCEK and CRL).
    g.bench_function("snp_parse_certs_crl", |b| {
        b.iter(|| {
            let parsed: Vec<_> =
                certs.certs.iter().map(|d| x509::parse_cert(black_box(d)).unwrap()).collect();
            let crl = x509::parse_crl(black_box(&certs.crls[0])).unwrap();
            (parsed.len(), crl.iter_revoked_certificates().count())
        })
    });
    let parsed: Vec<_> = certs.certs.iter().map(|d| x509::parse_cert(d).unwrap()).collect();
    let role = |cn: &str| parsed.iter().position(|c| c.subject().to_string().contains(cn)).unwrap();
    let (ark, ask) = (&parsed[role("CN=ARK-")], &parsed[role("CN=SEV-Genoa")]);
    x509::verify_cert_signature(ask, ark, "ASK").expect("ASK signed by ARK");
    g.bench_function("snp_rsa4096_pss_verify", |b| {
        b.iter(|| x509::verify_cert_signature(black_box(ask), ark, "ASK").unwrap())
    });
    g.finish();

    if paired_wanted() {
        paired(
            "snp/cached_chain",
            "baseline/p384_verify",
            3000,
            || drop(black_box(appraise(black_box(&verifier)))),
            || black_box(black_box(&key).verify_sig(black_box(signed), &sig)).unwrap(),
        );
    }
}

fn tdx(c: &mut Criterion) {
    let quote = read_vector(&format!("{TDX_DIR}/quote.bin"));
    let collateral = collateral_from_json(&read_vector(&format!("{TDX_DIR}/collateral.json"))).unwrap();
    let end = quote_len(&quote).unwrap();
    assert!(end < quote.len(), "the vector carries trailing padding");
    let trimmed = &quote[..end];

    let verifier = TdxVerifier::new();
    let appraiser = Appraiser::new(Policy::default());
    let appraise = || {
        appraiser
            .appraise(
                &verifier,
                TdxEvidence { quote: black_box(&quote), collateral: &collateral, event_log: None },
                ExpectedReportData::InsecureUnbound,
                TDX_NOW,
            )
            .expect("genuine vector")
    };
    appraise();
    let bare = dcap_qvl::verify::QuoteVerifier::new_prod();
    let now = TDX_NOW as u64;
    bare.verify(trimmed, &collateral, now).expect("baseline: dcap-qvl verifies the quote");

    let mut g = c.benchmark_group("tdx");
    g.bench_function("verify", |b| b.iter(appraise));
    g.finish();
    let mut g = c.benchmark_group("baseline");
    g.bench_function("dcap_qvl_verify", |b| {
        b.iter(|| bare.verify(black_box(trimmed), &collateral, now).unwrap())
    });
    g.finish();

    if paired_wanted() {
        paired(
            "tdx/verify",
            "baseline/dcap_qvl_verify",
            400,
            || drop(black_box(appraise())),
            || drop(black_box(bare.verify(black_box(trimmed), &collateral, now).unwrap())),
        );
    }
}

/// Only in a real benchmark run (`cargo bench` passes `--bench`), not in `cargo test --benches`.
fn paired_wanted() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Interleaved A/B timing of a benchmark and its baseline, alternating which goes first, so
/// that both see the same load on a shared machine (criterion measures them minutes apart).
/// Prints one `PAIRED {json}` line, read by `scripts/bench.sh`.
fn paired(bench: &str, baseline: &str, pairs: usize, mut a: impl FnMut(), mut b: impl FnMut()) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_nanos() as f64
    };
    for _ in 0..pairs / 10 {
        a();
        b();
    }
    let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let (da, db) = if i % 2 == 0 {
            let da = time(&mut a);
            (da, time(&mut b))
        } else {
            let db = time(&mut b);
            (time(&mut a), db)
        };
        ta.push(da);
        tb.push(db);
        ratios.push(da / db);
    }
    let (ma, mb, mr) = (median(&mut ta), median(&mut tb), median(&mut ratios));
    let line = serde_json::json!({
        "bench": bench,
        "baseline": baseline,
        "pairs": pairs,
        "bench_median_ns": ma,
        "baseline_median_ns": mb,
        "ratio_of_medians": ma / mb,
        "median_pair_ratio": mr,
    });
    println!("PAIRED {line}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = snp, tdx
}
criterion_main!(benches);
