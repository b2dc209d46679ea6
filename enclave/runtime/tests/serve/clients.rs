//! Standard clients, unmodified, against the host-process enclave: `tritonclient` from PyPI
//! (`tests/python/triton_client.py`) with its default arguments — binary tensors in and out,
//! no outputs named — and with JSON, every answer compared with onnxruntime's. The client
//! trusts exactly the certificate the Rust client verified (its attestation checked first).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::SERVING;
use super::common::{Options, Stack};
use nacre_client::AttestedSession;

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
