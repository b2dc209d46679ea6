//! The Python package `nacre` (python/; scripts/python-package.sh installs it into the models
//! virtualenv) against the host-process enclave: `tests/python/nacre_package.py`'s checks, and
//! `tests/python/triton_client.py` with its CA from the package's own verification. Between
//! them the enclave's counters, read through a Rust `AttestedSession`, show that a refused
//! policy let no inference through.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::SERVING;
use super::clients::{make_model, python, repo};
use super::common::{MEASUREMENT, Options, Stack, sha256};
use nacre_client::AttestedSession;

const TOKEN: &str = "python-package-token-0123456789";
/// The enclave closes a connection idle this long (seconds): the session's reconnection check.
const IDLE_SECS: u64 = 3;

/// A client policy file as `Stack::client_policy` builds it (the sim root, one measurement).
fn policy_file(stack: &Stack, name: &str, measurement: [u8; 48], model_identity: [u8; 32]) -> PathBuf {
    let text = format!(
        "model_identity = \"{}\"\ninsecure_sim_root = \"{}\"\n[appraisal.sim]\nmeasurements = [\"{}\"]\n",
        hex::encode(model_identity),
        stack.sim_ark.display(),
        hex::encode(measurement)
    );
    let path = stack.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Fails, saying what to run, when the models virtualenv has no `nacre` package: the test
/// cannot build it while `cargo test` holds the target directory's lock.
fn require_package() {
    let out = Command::new(python()).args(["-c", "import nacre, nacre._native"]).output().unwrap();
    assert!(
        out.status.success(),
        "`import nacre` fails in {}: run scripts/python-package.sh (it builds and installs the Python \
         package) before cargo test\n{}",
        python().display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a Python script of tests/python with `args`; its output, having asserted that it passed.
fn run(script: &str, args: &[&str]) -> String {
    let out =
        Command::new(python()).arg(repo().join("tests/python").join(script)).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let what = args.first().copied().unwrap_or_default();
    assert_ne!(out.status.code(), Some(3), "{script}: run scripts/python-package.sh first:\n{text}");
    let failed = text.lines().any(|l| l.starts_with("FAIL"));
    assert!(out.status.success() && !failed, "{script} {what} failed:\n{text}");
    eprintln!("{script} {what}:\n{text}");
    text
}

/// Inference requests the enclave has counted for `model`, served or failed.
fn inference_requests(stack: &Stack, model: &str) -> u64 {
    stack.rt.block_on(async {
        let mut s = AttestedSession::connect(&stack.url, &stack.policy()).await.unwrap();
        let metrics = String::from_utf8(s.get("/metrics").await.unwrap().to_vec()).unwrap();
        let label = format!("model=\"{model}\"");
        metrics
            .lines()
            .filter(|l| {
                (l.starts_with("nv_inference_request_success{")
                    || l.starts_with("nv_inference_request_failure{"))
                    && l.contains(&label)
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    })
}

fn utf8(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn python_package_verifies_before_anything_is_sent() {
    require_package();
    let dir = super::common::scratch("python-package");
    let model_file = dir.join("fraud-mlp.onnx");
    let model = make_model(&["fraud-mlp"], &model_file);
    let mut options = Options::new(model, "fraud-mlp");
    options.extra_config = format!(
        "inference_token_sha256 = \"{}\"\nidle_timeout_secs = {IDLE_SECS}\n",
        hex::encode(sha256(TOKEN.as_bytes()))
    );
    let stack = Stack::start(options);
    stack.wait_for("NACRE-ENCLAVE-SERVING", SERVING);
    let url = stack.url.as_str();
    let policy = policy_file(&stack, "policy.toml", MEASUREMENT, stack.model_identity);
    let wrong_digest = policy_file(&stack, "wrong-digest.toml", MEASUREMENT, [0x5a; 32]);
    let wrong_measurement = policy_file(&stack, "wrong-measurement.toml", [0x5a; 48], stack.model_identity);
    // Requires the key release cosigned by a witness the service does not push to: refused at
    // the log step, after both attestations passed.
    let unwitnessed = policy_file(&stack, "unwitnessed.toml", MEASUREMENT, stack.model_identity);
    let witness =
        nacre_tlog::NoteSigner::from_seed("witness.test/w", nacre_tlog::KeyKind::Cosignature, &[9; 32])
            .unwrap()
            .public()
            .vkey();
    let mut text = std::fs::read_to_string(&unwitnessed).unwrap();
    text +=
        &format!("[log]\nkey = {:?}\nwitnesses = [{witness:?}]\n", stack.service.store().log_key().vkey());
    std::fs::write(&unwitnessed, text).unwrap();
    let token_file = stack.dir.join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    // Another self-signed certificate than the enclave's: the attestation service's CA.
    let wrong_ca = stack.dir.join("service-ca.pem");
    let spki = stack.rt.block_on(async {
        let s = AttestedSession::connect(url, &stack.policy()).await.unwrap();
        hex::encode(s.peer().spki_sha256())
    });
    let digest = hex::encode(stack.model_identity);

    // 1. Accepted with every step passed, the Rust client's key; the sim root needs the opt-in.
    run(
        "nacre_package.py",
        &["accept", "--url", url, "--policy", utf8(&policy), "--spki", &spki, "--model-identity", &digest],
    );

    // 2. Refusals at the attested certificate; the enclave counts no inference request.
    let before = inference_requests(&stack, "fraud-mlp");
    run(
        "nacre_package.py",
        &[
            "refusals",
            "--url",
            url,
            "--policy",
            utf8(&policy),
            "--wrong-digest",
            utf8(&wrong_digest),
            "--wrong-measurement",
            utf8(&wrong_measurement),
            "--unwitnessed",
            utf8(&unwitnessed),
        ],
    );
    assert_eq!(inference_requests(&stack, "fraud-mlp"), before, "a refused policy let an inference through");

    // 3. tritonclient (HTTP and gRPC) with the package's ready-made arguments: the CA is the
    // certificate nacre.verify accepted; every output matches onnxruntime's.
    let host_port = url.strip_prefix("https://").unwrap();
    let out = run(
        "triton_client.py",
        &[
            "--url",
            host_port,
            "--policy",
            utf8(&policy),
            "--allow-insecure-sim",
            "--token-file",
            utf8(&token_file),
            "--model",
            "fraud-mlp",
            "--model-file",
            utf8(&model_file),
            "--protocol",
            "both",
            "--batch",
            "4",
        ],
    );
    assert!(out.contains("nacre.verify") && out.contains("refused without its token(s)"), "{out}");
    let served = inference_requests(&stack, "fraud-mlp");
    assert!(
        served >= before + 8,
        "tritonclient's inferences did not reach the enclave: {before} -> {served}"
    );

    // 4. The re-verify-once wrapper: a failed pin recovers once; a second failure raises.
    run(
        "nacre_package.py",
        &[
            "reverify",
            "--url",
            url,
            "--policy",
            utf8(&policy),
            "--token-file",
            utf8(&token_file),
            "--wrong-ca",
            utf8(&wrong_ca),
            "--model",
            "fraud-mlp",
            "--model-file",
            utf8(&model_file),
        ],
    );

    // 5. The attested session: requests on the verified connection, a 401 as a Response, a
    // reconnection verified anew after the enclave closed the idle connection.
    let idle = IDLE_SECS.to_string();
    run(
        "nacre_package.py",
        &[
            "session",
            "--url",
            url,
            "--policy",
            utf8(&policy),
            "--token-file",
            utf8(&token_file),
            "--model",
            "fraud-mlp",
            "--model-file",
            utf8(&model_file),
            "--idle-timeout",
            &idle,
        ],
    );
    assert!(inference_requests(&stack, "fraud-mlp") > served, "the session's inferences were not counted");
}
