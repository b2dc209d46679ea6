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

/// How a Rust client sends the request.
#[derive(Clone, Copy, Debug)]
enum Wire {
    /// KServe v2 JSON over HTTP/1.1.
    Json,
    /// The binary tensor extension over HTTP/1.1 (raw little-endian inputs and outputs).
    Binary,
    /// `inference.GRPCInferenceService/ModelInfer` over HTTP/2, raw contents.
    Grpc,
    /// `GET /v2/health/ready` over HTTP/1.1: the HTTPS round trip without inference (the floor).
    Health,
}

/// One request in every form the benchmark sends it.
#[derive(Clone)]
struct Request {
    model: String,
    json: Vec<u8>,
    binary: (Vec<u8>, usize),
    grpc: nacre_oip::inference::ModelInferRequest,
}

impl Request {
    fn new(model: &str, metadata: &serde_json::Value, tensors: &Tensors) -> Self {
        let names: Vec<String> = metadata["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect();
        let raw: Vec<Vec<u8>> = tensors
            .iter()
            .map(|t| {
                let mut out = Vec::new();
                t.data.write_le(&mut out);
                out
            })
            .collect();
        let json_inputs: Vec<serde_json::Value> = names
            .iter()
            .zip(tensors)
            .map(|(n, t)| {
                let nacre_model::TensorData::Fp32(v) = &t.data else { panic!("FP32 inputs") };
                json!({"name": n, "shape": t.shape, "datatype": "FP32", "data": v})
            })
            .collect();
        let header_inputs: Vec<serde_json::Value> = names
            .iter()
            .zip(tensors)
            .zip(&raw)
            .map(|((n, t), r)| {
                json!({"name": n, "shape": t.shape, "datatype": "FP32", "parameters": {"binary_data_size": r.len()}})
            })
            .collect();
        let header =
            serde_json::to_vec(&json!({"inputs": header_inputs, "parameters": {"binary_data_output": true}}))
                .unwrap();
        let json_len = header.len();
        let mut body = header;
        for r in &raw {
            body.extend_from_slice(r);
        }
        use nacre_oip::inference::model_infer_request::InferInputTensor;
        let grpc = nacre_oip::inference::ModelInferRequest {
            model_name: model.to_owned(),
            inputs: names
                .iter()
                .zip(tensors)
                .map(|(n, t)| InferInputTensor {
                    name: n.clone(),
                    datatype: "FP32".into(),
                    shape: t.shape.iter().map(|&d| d as i64).collect(),
                    ..Default::default()
                })
                .collect(),
            raw_input_contents: raw.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        Request {
            model: model.to_owned(),
            json: serde_json::to_vec(&json!({ "inputs": json_inputs })).unwrap(),
            binary: (body, json_len),
            grpc,
        }
    }
}

/// One client connection sending `request` over `wire`, `n` times, one at a time: the
/// latency of each.
async fn client(
    mut s: AttestedSession,
    wire: Wire,
    request: Request,
    n: usize,
) -> (AttestedSession, Vec<f64>) {
    use hyper::{HeaderMap, Method, header::HeaderValue};
    let target = format!("/v2/models/{}/infer", request.model);
    let mut grpc = s.grpc();
    let (binary_body, json_len) = (hyper::body::Bytes::from(request.binary.0.clone()), request.binary.1);
    let json_body = hyper::body::Bytes::from(request.json.clone());
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let st = Instant::now();
        match wire {
            Wire::Json => {
                let mut h = HeaderMap::new();
                h.insert("content-type", HeaderValue::from_static("application/json"));
                let r = s.send(Method::POST, &target, h, json_body.clone()).await.unwrap();
                assert_eq!(r.status(), 200, "{:?}", r.body());
            }
            Wire::Binary => {
                let mut h = HeaderMap::new();
                h.insert("inference-header-content-length", HeaderValue::from(json_len));
                h.insert("content-type", HeaderValue::from_static("application/octet-stream"));
                let r = s.send(Method::POST, &target, h, binary_body.clone()).await.unwrap();
                assert_eq!(r.status(), 200, "{:?}", r.body());
                assert!(r.headers().contains_key("inference-header-content-length"));
            }
            Wire::Health => {
                let r = s
                    .send(Method::GET, "/v2/health/ready", HeaderMap::new(), hyper::body::Bytes::new())
                    .await;
                assert_eq!(r.unwrap().status(), 200);
            }
            Wire::Grpc => {
                let g = grpc.as_mut().unwrap();
                let out = g.model_infer(request.grpc.clone()).await.unwrap().into_inner();
                assert!(!out.raw_output_contents.is_empty());
            }
        }
        samples.push(st.elapsed().as_secs_f64());
    }
    (s, samples)
}

/// `connections` clients at once, `iters` requests in all: every latency, and requests/s.
fn load(stack: &Stack, wire: Wire, request: &Request, connections: usize, iters: usize) -> (Vec<f64>, f64) {
    let policy = stack.policy();
    stack.rt.block_on(async {
        let per = iters.div_ceil(connections);
        // Connected (and verified) one by one before the clock starts: the enclave queues at
        // most 8 fresh attestations.
        let mut sessions = Vec::new();
        for _ in 0..connections {
            let http = if matches!(wire, Wire::Grpc) {
                nacre_client::Wire::Http2
            } else {
                nacre_client::Wire::Http1
            };
            sessions.push(AttestedSession::connect_with(&stack.url, &policy, http).await.unwrap());
        }
        // Warmed up (connections, allocator, the model's first runs) before the clock starts.
        let mut warm = Vec::new();
        for session in sessions {
            warm.push(client(session, wire, request.clone(), 20).await.0);
        }
        let t = Instant::now();
        let mut tasks = Vec::new();
        for session in warm {
            tasks.push(tokio::spawn(client(session, wire, request.clone(), per)));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap().1);
        }
        let rate = all.len() as f64 / t.elapsed().as_secs_f64();
        (all, rate)
    })
}

/// tract in-process, one thread, sequential: the floor the serving rows are compared with.
/// The plans run alternately, one call each in turn, so that the machine's load drifts over
/// both alike (run one after the other, their p50s swapped places between runs).
fn in_process(models: &[&nacre_model::Model], tensors: &Tensors, iters: usize) -> Vec<(Vec<f64>, f64)> {
    for model in models {
        for _ in 0..100 {
            model.run(tensors.clone()).unwrap();
        }
    }
    let mut samples = vec![Vec::with_capacity(iters); models.len()];
    let mut busy = vec![0.0; models.len()];
    for _ in 0..iters {
        for (i, model) in models.iter().enumerate() {
            let input = tensors.clone();
            let s = Instant::now();
            std::hint::black_box(model.run(input).unwrap());
            let d = s.elapsed().as_secs_f64();
            samples[i].push(d);
            busy[i] += d;
        }
    }
    samples.into_iter().zip(busy).map(|(s, b)| (s, iters as f64 / b)).collect()
}

/// `scripts/bench_tritonclient.py` (tritonclient, default arguments, one process per
/// connection), when `NACRE_PYTHON` names the models virtualenv's Python.
fn tritonclient(
    url: &str,
    tls_ca: Option<&std::path::Path>,
    model: &str,
    request_file: &std::path::Path,
    protocol: &str,
    connections: usize,
    iters: usize,
) -> Option<(f64, f64, f64)> {
    let python = std::env::var("NACRE_PYTHON").ok()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_tritonclient.py");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(script).args(["--url", url, "--model", model, "--protocol", protocol]);
    cmd.arg("--request").arg(request_file);
    cmd.args(["--connections", &connections.to_string(), "--iters", &iters.to_string()]);
    match tls_ca {
        Some(ca) => cmd.arg("--ca").arg(ca),
        None => cmd.arg("--plaintext"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "bench_tritonclient.py: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some((v["p50_us"].as_f64()?, v["p99_us"].as_f64()?, v["per_sec"].as_f64()?))
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
        Err(_) => vec![("sample-mlp".into(), nacre_model::sample::mlp_onnx_batched())],
    };
    let rate_limits = "rate_per_second = 1000000\nrate_burst = 1000000\n";
    let mut rows = Vec::new();
    let mut batching_rows = Vec::new();
    let mut server_rows = Vec::new();
    let mut op_rows = Vec::new();
    let mut handshake_rows = Vec::new();
    for (name, onnx) in &models {
        let mut options = Options::new(onnx.clone(), name);
        // The per-client limit would throttle the benchmark's clients.
        options.extra_config = rate_limits.into();
        let stack = Stack::start(options);
        stack.wait_for("NACRE-ENCLAVE-SERVING", Duration::from_secs(120));
        let policy = stack.policy();
        let (metadata, tensors, pem) = stack.rt.block_on(async {
            let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
            let metadata = s.metadata(name).await.unwrap();
            let (_, tensors) = request_for(&metadata);
            (metadata, tensors, s.peer().certificate_pem())
        });
        let request = Request::new(name, &metadata, &tensors);
        let request_file = stack.dir.join("request.json");
        std::fs::write(&request_file, &request.json).unwrap();
        let ca = stack.dir.join("enclave-cert.pem");
        std::fs::write(&ca, pem).unwrap();

        // tract in-process: the same model bytes, the same input; both plans.
        let generic = nacre_model::Model::load_with(onnx, false).unwrap();
        let batch1 = nacre_model::Model::load(onnx).unwrap();
        let plans: Vec<(&nacre_model::Model, &str)> = if batch1.has_batch1_plan() {
            vec![(&generic, "generic plan"), (&batch1, "batch-1 plan (served)")]
        } else {
            vec![(&generic, "generic plan (served)")]
        };
        let models_only: Vec<&nacre_model::Model> = plans.iter().map(|(m, _)| *m).collect();
        for ((samples, rate), (_, label)) in in_process(&models_only, &tensors, iters).into_iter().zip(&plans)
        {
            rows.push(row(format!("{name}: tract in-process, {label}"), samples, rate));
        }

        // Where tract's time goes, by operator (the served plan).
        let ops = nacre_model::profile::by_operator(&batch1, &tensors, 500).unwrap();
        let total: f64 = ops.iter().map(|(_, d)| d.as_secs_f64()).sum::<f64>() / 500.0 * 1e6;
        let top: Vec<String> =
            ops.iter().take(6).map(|(op, d)| format!("{op} {:.1}", d.as_secs_f64() / 500.0 * 1e6)).collect();
        op_rows.push(format!("| {name} | {total:.1} | {} |", top.join(", ")));

        if rows.len() <= 2 {
            // Once: the HTTPS round trip on a kept-alive connection, no inference.
            let (samples, rate) = load(&stack, Wire::Health, &request, 1, iters);
            rows.push(row("floor: Rust client, GET /v2/health/ready, 1 conn.".into(), samples, rate));
        }
        for (wire, label) in [(Wire::Json, "JSON"), (Wire::Binary, "binary"), (Wire::Grpc, "gRPC")] {
            for connections in [1, 4, 16] {
                let (samples, rate) = load(&stack, wire, &request, connections, iters);
                rows.push(row(format!("{name}: Rust client, {label}, {connections} conn."), samples, rate));
            }
        }

        // Where a request's time goes inside the server (Triton's statistics, all requests so far).
        let stats = stack.rt.block_on(async {
            let mut s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
            let body = s.get(&format!("/v2/models/{name}/stats")).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        });
        let st = &stats["model_stats"][0]["inference_stats"];
        let avg = |k: &str| st[k]["ns"].as_f64().unwrap() / st[k]["count"].as_f64().unwrap().max(1.0) / 1e3;
        server_rows.push(format!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            avg("success"),
            avg("queue"),
            avg("compute_input"),
            avg("compute_infer"),
            avg("compute_output")
        ));

        // tritonclient, default arguments: straight to the enclave (the verified certificate
        // as its CA), and through `nacre proxy`.
        let host_port = stack.url.trim_start_matches("https://").to_owned();
        let proxy_addr = stack.rt.block_on(async {
            let listener = nacre_client::proxy::bind_loopback("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let config = nacre_client::proxy::ProxyConfig {
                upstream: stack.url.clone(),
                policy: stack.policy(),
                token: None,
                upstream_token: None,
            };
            let (proxy, _) = nacre_client::proxy::Proxy::start(config).await.unwrap();
            tokio::spawn(proxy.serve(listener, std::future::pending()));
            addr
        });
        for (via, url, tls) in [
            ("tritonclient", &host_port, Some(ca.as_path())),
            ("tritonclient via nacre proxy", &proxy_addr, None),
        ] {
            for protocol in ["http", "grpc"] {
                for connections in [1, 4, 16] {
                    let Some((p50, p99, rate)) =
                        tritonclient(url, tls, name, &request_file, protocol, connections, iters)
                    else {
                        continue;
                    };
                    rows.push(Row {
                        what: format!("{name}: {via}, {protocol}, {connections} conn."),
                        p50_us: p50,
                        p99_us: p99,
                        per_sec: rate,
                    });
                }
            }
        }

        if handshake_rows.is_empty() {
            handshake_rows = handshakes(&stack);
        }
        drop(stack);

        // Dynamic batching: 16 connections, binary and gRPC, with and without.
        if batch1.batchable() {
            for (label, batching) in [
                ("off", ""),
                ("max 16 rows, 500 µs", "[batching]\nmax_batch_size = 16\nmax_queue_delay_us = 500\n"),
            ] {
                let mut options = Options::new(onnx.clone(), name);
                options.extra_config = format!("{rate_limits}{batching}");
                let stack = Stack::start(options);
                stack.wait_for("NACRE-ENCLAVE-SERVING", Duration::from_secs(120));
                for (wire, wire_label) in [(Wire::Binary, "binary"), (Wire::Grpc, "gRPC")] {
                    let (samples, rate) = load(&stack, wire, &request, 16, iters * 2);
                    batching_rows.push(row(
                        format!("{name}: {wire_label}, 16 conn., batching {label}"),
                        samples,
                        rate,
                    ));
                }
            }
        }
    }

    println!("\n| path (batch 1) | p50 µs | p99 µs | requests/s |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.1} | {:.1} | {:.0} |", r.what, r.p50_us, r.p99_us, r.per_sec);
    }
    println!(
        "\n| inside the server, mean per request (µs) | handler, arrival to response | queue | compute input | compute infer | compute output |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &server_rows {
        println!("{r}");
    }
    println!("\n| tract, µs per run by operator (served plan, profiled) | sum | largest |");
    println!("|---|---:|---|");
    for r in &op_rows {
        println!("{r}");
    }
    println!("\n| dynamic batching (batch-1 requests) | p50 µs | p99 µs | requests/s |");
    println!("|---|---:|---:|---:|");
    for r in &batching_rows {
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
