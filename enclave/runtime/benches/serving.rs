//! Serving benchmark: the enclave's HTTPS inference path (the `nacre-enclave` binary as a host
//! process, sim attester over the secure processor's socket, so no TCG emulation is in the
//! figure) against tract in-process on the same model and input; and the attested TLS
//! handshake against a plain TLS 1.3 handshake. Prints markdown tables.
//!
//! `NACRE_BENCH_MODELS="name=path.onnx,name2=path2.onnx"` picks the models (default: the
//! built-in sample MLP). `NACRE_BENCH_ITERS` sets the sequential request count (default 2000).
//! `scripts/bench-serving.sh` runs this with the demo models and adds onnxruntime's figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Options, Stack};
use nacre_client::AttestedSession;
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Row {
    what: String,
    p50_us: f64,
    p99_us: f64,
    per_sec: f64,
}

fn row(what: String, mut samples: Vec<f64>, per_sec: f64) -> Row {
    samples.sort_by(f64::total_cmp);
    Row { what, p50_us: percentile(&samples, 0.5) * 1e6, p99_us: percentile(&samples, 0.99) * 1e6, per_sec }
}

/// Input tensors as `nacre_model::Model::run` takes them.
type Tensors = Vec<nacre_model::Tensor>;

/// A deterministic batch-1 request for `metadata`'s inputs (dynamic dimensions = 1).
fn request_for(metadata: &serde_json::Value) -> (serde_json::Value, Tensors) {
    let mut inputs = Vec::new();
    let mut tensors = Vec::new();
    let mut seed = 0x2545_f491_u32;
    for input in metadata["inputs"].as_array().unwrap() {
        let shape: Vec<usize> =
            input["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap().max(1) as usize).collect();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        inputs.push(json!({"name": input["name"], "shape": shape, "datatype": "FP32", "data": data}));
        tensors.push(nacre_model::Tensor { shape, data: nacre_model::TensorData::Fp32(data) });
    }
    (json!({ "inputs": inputs }), tensors)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` (and test harness probing)
    }
    let iters: usize = std::env::var("NACRE_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let models: Vec<(String, Vec<u8>)> = match std::env::var("NACRE_BENCH_MODELS") {
        Ok(list) => list
            .split(',')
            .map(|item| {
                let (name, path) = item.split_once('=').expect("name=path");
                (name.to_owned(), std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}")))
            })
            .collect(),
        Err(_) => vec![("sample-mlp".into(), nacre_model::sample::mlp_onnx())],
    };
    let mut rows = Vec::new();
    let mut handshake_rows = Vec::new();
    for (name, onnx) in &models {
        let mut options = Options::new(onnx.clone(), name);
        // The per-client limit would throttle the benchmark's single client.
        options.extra_config = "rate_per_second = 1000000\nrate_burst = 1000000\n".into();
        let stack = Stack::start(options);
        stack.wait_for("NACRE-ENCLAVE-SERVING", Duration::from_secs(120));
        let policy = stack.policy();
        let (request, tensors) = stack.rt.block_on(async {
            let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
            request_for(&s.metadata(name).await.unwrap())
        });

        // tract in-process: the same model bytes, the same input.
        let model = nacre_model::Model::load(onnx).unwrap();
        for _ in 0..100 {
            model.run(tensors.clone()).unwrap();
        }
        let mut samples = Vec::with_capacity(iters);
        let t = Instant::now();
        for _ in 0..iters {
            let input = tensors.clone();
            let s = Instant::now();
            std::hint::black_box(model.run(input).unwrap());
            samples.push(s.elapsed().as_secs_f64());
        }
        let rate = iters as f64 / t.elapsed().as_secs_f64();
        rows.push(row(format!("{name}: tract in-process"), samples, rate));

        // Through the enclave's HTTPS API: one kept-alive attested connection, sequential.
        let (samples, rate) = stack.rt.block_on(async {
            let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
            for _ in 0..100 {
                s.infer(name, &request).await.unwrap();
            }
            let mut samples = Vec::with_capacity(iters);
            let t = Instant::now();
            for _ in 0..iters {
                let st = Instant::now();
                std::hint::black_box(s.infer(name, &request).await.unwrap());
                samples.push(st.elapsed().as_secs_f64());
            }
            (samples, iters as f64 / t.elapsed().as_secs_f64())
        });
        rows.push(row(format!("{name}: enclave HTTPS, 1 connection"), samples, rate));

        // Throughput with 4 concurrent connections.
        let (samples, rate) = stack.rt.block_on(async {
            let per = iters / 4;
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let (url, policy, request, name) =
                    (stack.url.clone(), policy.clone(), request.clone(), name.clone());
                tasks.push(tokio::spawn(async move {
                    let mut s = AttestedSession::connect(&url, &policy).await.unwrap();
                    let mut samples = Vec::with_capacity(per);
                    for _ in 0..per {
                        let st = Instant::now();
                        s.infer(&name, &request).await.unwrap();
                        samples.push(st.elapsed().as_secs_f64());
                    }
                    samples
                }));
            }
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            let rate = all.len() as f64 / t.elapsed().as_secs_f64();
            (all, rate)
        });
        rows.push(row(format!("{name}: enclave HTTPS, 4 connections"), samples, rate));

        if handshake_rows.is_empty() {
            handshake_rows = handshakes(&stack);
        }
    }

    println!("\n| path (batch 1) | p50 µs | p99 µs | requests/s |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.1} | {:.1} | {:.0} |", r.what, r.p50_us, r.p99_us, r.per_sec);
    }
    println!("\n| handshake (loopback) | p50 µs | p99 µs | per second (sequential) |");
    println!("|---|---:|---:|---:|");
    for r in &handshake_rows {
        println!("| {} | {:.1} | {:.1} | {:.0} |", r.what, r.p50_us, r.p99_us, r.per_sec);
    }
}

/// Plain TLS 1.3 (the attestation service's CA-issued certificate, WebPKI verification) vs the
/// attested handshake (certificate evidence appraised) vs the whole attested session
/// (+ a fresh, channel-bound attestation: one more report from the secure processor).
fn handshakes(stack: &Stack) -> Vec<Row> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let n = 200;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&stack.service_ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let plain = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let policy = stack.policy();
    let verifier = nacre_atls::AttestedServerVerifier::new(policy.attestation.clone());
    let attested = Arc::new(verifier.client_config().unwrap());
    let service = stack.service_url.trim_start_matches("https://").to_owned();
    let enclave = stack.url.trim_start_matches("https://").to_owned();
    stack.rt.block_on(async {
        let mut out = Vec::new();
        for (what, config, addr) in [
            ("plain TLS 1.3 handshake (CA-issued certificate)", plain.clone(), service.clone()),
            (
                "attested TLS handshake (evidence in the certificate appraised)",
                attested.clone(),
                enclave.clone(),
            ),
        ] {
            let mut samples = Vec::new();
            let t = Instant::now();
            for _ in 0..n {
                let st = Instant::now();
                let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await.unwrap();
                samples.push(st.elapsed().as_secs_f64());
                drop(tls);
            }
            out.push(row(what.into(), samples, n as f64 / t.elapsed().as_secs_f64()));
        }
        // The secure processor answers at most 50 reports/s per VM: pace the fresh attestations.
        let mut samples = Vec::new();
        let mut busy = 0.0;
        for _ in 0..100 {
            let st = Instant::now();
            AttestedSession::connect(&stack.url, &policy).await.unwrap();
            let d = st.elapsed().as_secs_f64();
            samples.push(d);
            busy += d;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        out.push(row(
            "attested session (handshake + fresh channel-bound attestation, both verified)".into(),
            samples,
            100.0 / busy,
        ));
        out
    })
}
