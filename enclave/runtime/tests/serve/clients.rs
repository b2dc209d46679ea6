//! Standard clients, unmodified, against the host-process enclave: `tritonclient` from PyPI
//! (`tests/python/triton_client.py`) with its default arguments — binary tensors in and out,
//! no outputs named — and with JSON, every answer compared with onnxruntime's. The client
//! trusts exactly the certificate the Rust client verified (its attestation checked first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::SERVING;
use super::common::{Options, Stack};
use nacre_client::AttestedSession;
use nacre_client::proxy::{self, Proxy, ProxyConfig, ProxyError};

/// The models virtualenv's Python (`scripts/inputs.sh`: onnx, onnxruntime, tritonclient).
pub(super) fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = repo().join("scripts/inputs.sh");
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed (it installs the pinned Python packages):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().find_map(|l| l.strip_prefix("NACRE_PYTHON=")).expect("NACRE_PYTHON");
        PathBuf::from(line)
    })
}

pub(super) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `scripts/models.py make WHAT OUT.onnx`.
pub(super) fn make_model(what: &[&str], out: &Path) -> Vec<u8> {
    let status = Command::new(python())
        .arg(repo().join("scripts/models.py"))
        .arg("make")
        .args(what)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "models.py make {what:?}");
    std::fs::read(out).unwrap()
}

/// Verifies the enclave as a Rust client would and writes the verified certificate where a
/// client library takes its CA file.
fn verified_certificate(stack: &Stack) -> PathBuf {
    let policy = stack.policy();
    let pem = stack.rt.block_on(async {
        let s = AttestedSession::connect(&stack.url, &policy).await.unwrap();
        s.peer().certificate_pem()
    });
    let path = stack.dir.join("enclave-cert.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

/// Runs `tests/python/triton_client.py` against the stack; returns its output, having
/// asserted that it succeeded.
fn triton_client(stack: &Stack, model: &str, model_file: &Path, extra: &[&str]) -> String {
    let ca = verified_certificate(stack);
    let host_port = stack.url.strip_prefix("https://").unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/python/triton_client.py"))
        .args(["--url", host_port, "--model", model])
        .arg("--ca")
        .arg(&ca)
        .arg("--model-file")
        .arg(model_file)
        .args(extra)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "triton_client.py {model} {extra:?} failed:\n{text}");
    text
}

#[test]
fn tritonclient_http_and_grpc_with_default_arguments_match_onnxruntime() {
    let dir = super::common::scratch("tritonclient");
    let model_file = dir.join("fraud-mlp.onnx");
    let model = make_model(&["fraud-mlp"], &model_file);
    let stack = Stack::start(Options::new(model, "fraud-mlp"));
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let out = triton_client(&stack, "fraud-mlp", &model_file, &["--protocol", "both", "--batch", "4"]);
    eprintln!("{out}");
    assert!(out.contains("ok") && !out.contains("FAIL"), "{out}");
    // The server counted what the client sent, under Triton's metric names.
    stack.rt.block_on(async {
        let mut s = AttestedSession::connect(&stack.url, &stack.policy()).await.unwrap();
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("nv_inference_request_success{"))
            .unwrap_or_else(|| panic!("{metrics}"));
        assert!(line.contains("model=\"fraud-mlp\""), "{line}");
        let count: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 3, "{line}");
    });
}

#[test]
fn every_datatype_round_trips_through_tritonclient() {
    let dir = super::common::scratch("dtypes");
    for datatype in [
        "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32",
        "FP64", "BYTES",
    ] {
        let model_file = dir.join(format!("dtype-{datatype}.onnx"));
        let model = make_model(&["dtype", datatype], &model_file);
        let name = format!("dtype-{}", datatype.to_lowercase());
        let stack = Stack::start(Options::new(model, &name));
        stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
        let out = triton_client(&stack, &name, &model_file, &["--protocol", "both"]);
        assert!(!out.contains("FAIL"), "{datatype}: {out}");
    }
}

/// The inferences the enclave has counted for `model` (Triton's success counter).
fn inferences(stack: &Stack, model: &str) -> u64 {
    stack.rt.block_on(async {
        let mut s = AttestedSession::connect(&stack.url, &stack.policy()).await.unwrap();
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        metrics
            .lines()
            .find(|l| {
                l.starts_with("nv_inference_request_success{") && l.contains(&format!("model=\"{model}\""))
            })
            .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
    })
}

/// Starts `nacre proxy` in process (as the CLI does) on a loopback port.
fn start_proxy(
    stack: &Stack,
    policy: nacre_client::ClientPolicy,
    token: Option<&str>,
) -> Result<(Arc<Proxy>, String), ProxyError> {
    stack.rt.block_on(async {
        let listener = proxy::bind_loopback("127.0.0.1:0".parse().unwrap()).await?;
        let addr = listener.local_addr().unwrap().to_string();
        let config = ProxyConfig {
            upstream: stack.url.clone(),
            policy,
            token: token.map(str::to_owned),
            upstream_token: None,
        };
        let (proxy, verification) = Proxy::start(config).await?;
        assert!(verification.accepted);
        tokio::spawn(proxy.clone().serve(listener, std::future::pending()));
        Ok((proxy, addr))
    })
}

/// `nacre proxy`: tritonclient over plain loopback HTTP and gRPC, with default arguments, gets
/// onnxruntime's outputs from the verified enclave; without the proxy's token it is refused
/// (407 / UNAUTHENTICATED). A proxy whose policy the enclave does not meet refuses to start,
/// and the enclave sees no inference. When the enclave closes the upstream connection (idle),
/// the next request goes over a new connection verified from the start.
#[test]
fn nacre_proxy_forwards_tritonclient_only_over_a_verified_connection() {
    let dir = super::common::scratch("proxy");
    let model_file = dir.join("fraud-mlp.onnx");
    let model = make_model(&["fraud-mlp"], &model_file);
    let mut options = Options::new(model, "fraud-mlp");
    options.extra_config = "idle_timeout_secs = 2\n".into();
    let stack = Stack::start(options);
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);

    // Refusals first: a wrong model digest, a wrong measurement. Nothing is forwarded.
    let before = inferences(&stack, "fraud-mlp");
    for (what, policy) in [
        ("model digest", stack.client_policy(super::common::MEASUREMENT, [0x5a; 32])),
        ("measurement", stack.client_policy([0x5a; 48], stack.model_identity)),
    ] {
        match start_proxy(&stack, policy, None) {
            Err(ProxyError::Refused(v)) => {
                assert!(!v.accepted);
                assert_eq!(v.steps[1].status, nacre_client::report::Status::Failed, "{what}: {v}");
                assert_eq!(v.steps[2].status, nacre_client::report::Status::NotRun, "{what}: {v}");
            }
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: a proxy started on a policy the enclave does not meet"),
        }
    }
    assert_eq!(inferences(&stack, "fraud-mlp"), before, "a refused proxy let an inference through");

    let token = "proxy-token-0123456789";
    let (proxy, addr) = start_proxy(&stack, stack.policy(), Some(token)).unwrap();
    assert_eq!(proxy.verifications(), 1);
    let token_file = dir.join("proxy-token");
    std::fs::write(&token_file, token).unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/python/triton_client.py"))
        .args(["--url", &addr, "--model", "fraud-mlp", "--plaintext", "--protocol", "both", "--batch", "4"])
        .arg("--proxy-token-file")
        .arg(&token_file)
        .arg("--model-file")
        .arg(&model_file)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("FAIL"), "through the proxy:\n{text}");
    assert!(text.contains("refused without its token(s)"), "{text}");
    assert!(inferences(&stack, "fraud-mlp") >= before + 6, "the inferences did not reach the enclave");
    assert!(proxy.forwarded() > 0);

    // The enclave closes the idle upstream connection; the next request is verified anew.
    std::thread::sleep(Duration::from_secs(4));
    let ready = stack.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/v2/health/ready")
            .header("host", &addr)
            .header("proxy-authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        sender.send_request(req).await.unwrap().status()
    });
    assert_eq!(ready, 200);
    assert_eq!(proxy.verifications(), 2, "the reconnect was not verified again");
}

/// Dynamic batching (`[batching]` in the measured configuration): concurrent clients' requests
/// are merged into fewer runs of the model (Triton's statistics count fewer executions than
/// inferences), every client gets its own rows back — equal to tract's on that input alone —
/// and tritonclient sees a batching model's configuration and still matches onnxruntime.
#[test]
fn dynamic_batching_merges_concurrent_requests_and_answers_each_its_own_rows() {
    let dir = super::common::scratch("batching");
    let model_file = dir.join("fraud-mlp.onnx");
    let model = make_model(&["fraud-mlp"], &model_file);
    let reference = nacre_model::Model::load(&model).unwrap();
    let mut options = Options::new(model, "fraud-mlp");
    options.extra_config = "[batching]\nmax_batch_size = 16\nmax_queue_delay_us = 5000\n".into();
    let stack = Stack::start(options);
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let features = |client: usize, i: usize| -> Vec<f32> {
        (0..30).map(|f| ((client * 131 + i * 17 + f * 7) % 97) as f32 / 48.5 - 1.0).collect()
    };
    let (clients, per_client) = (8, 12);
    let answers = stack.rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (url, policy) = (stack.url.clone(), stack.policy());
            tasks.push(tokio::spawn(async move {
                let mut s = AttestedSession::connect(&url, &policy).await.unwrap();
                let mut out = Vec::new();
                for i in 0..per_client {
                    let request = serde_json::json!({"inputs": [{
                        "name": "features", "shape": [1, 30], "datatype": "FP32", "data": features(c, i)
                    }]});
                    let response = s.infer("fraud-mlp", &request).await.unwrap();
                    out.push((c, i, response));
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(answers.len(), clients * per_client);
    for (c, i, response) in &answers {
        let input =
            nacre_model::Tensor { shape: vec![1, 30], data: nacre_model::TensorData::Fp32(features(*c, *i)) };
        let alone = reference.run(vec![input]).unwrap();
        let nacre_model::TensorData::Fp32(want) = &alone[0].data else { panic!() };
        let got: Vec<f32> = response["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), want.len(), "{response}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "client {c} request {i}: {got:?} vs {want:?}");
        }
    }
    let stats = stack.rt.block_on(async {
        let mut s = AttestedSession::connect(&stack.url, &stack.policy()).await.unwrap();
        let body = s.get("/v2/models/fraud-mlp/stats").await.unwrap();
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    });
    let model_stats = &stats["model_stats"][0];
    let (inferences, executions) =
        (model_stats["inference_count"].as_u64().unwrap(), model_stats["execution_count"].as_u64().unwrap());
    assert_eq!(inferences, (clients * per_client) as u64, "{stats}");
    assert!(executions < inferences, "no request was batched with another: {stats}");
    let out = triton_client(&stack, "fraud-mlp", &model_file, &["--protocol", "both", "--batch", "3"]);
    assert!(out.contains("max_batch_size 16") && !out.contains("FAIL"), "{out}");
}
