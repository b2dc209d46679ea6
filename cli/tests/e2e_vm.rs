#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! The whole chain in a sim CVM under QEMU TCG: a sealed model, the attestation service holding
//! its key under a policy that names signed reference values, a guest image built for the
//! model, the host agent launching it with the sealed disk, the service relay and the serving
//! port; the enclave gets the key, unseals, serves; the client verifies and infers.
//!
//! Then the same image with one changed initrd byte: another measurement, so the release is
//! denied (and audited), and the enclave never serves the model.

#[path = "../../images/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{input, scratch};
use nacre_attestation_client::Client;
use nacre_attestation_service::config::Config;
use nacre_attestation_service::service::Service;
use nacre_client::{AttestedSession, ClientError, ClientPolicy};
use nacre_host::agent::Agent;
use nacre_host::spec::{Backend, LaunchSpec};
use nacre_host::vm::Tools;
use nacre_sealed::{AwsLcGcm, DataKey, SealParams};

const NACRE: &str = env!("CARGO_BIN_EXE_nacre");

fn enclave() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-enclave.sh");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The rest of the first console line starting with any of `prefixes`.
async fn console_line(console: &Path, prefixes: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(console).unwrap_or_default();
        for line in text.lines().map(str::trim) {
            if prefixes.iter().any(|p| line.starts_with(p)) {
                return line.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "none of {prefixes:?} on the console:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Kills the VM's QEMU if the test fails before stopping it.
struct KillOnDrop(PathBuf);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse::<u32>().ok())
            && nacre_host::vm::alive(pid)
        {
            nacre_host::vm::kill(pid);
        }
    }
}

fn launch_spec(
    name: &str,
    image: &Path,
    initrd: &Path,
    sealed: &Path,
    port: u16,
    svc: std::net::SocketAddr,
) -> LaunchSpec {
    LaunchSpec {
        name: name.into(),
        backend: Backend::Sim,
        kernel: image.join("vmlinuz"),
        initrd: initrd.to_owned(),
        cmdline: std::fs::read_to_string(image.join("cmdline")).unwrap().trim().to_owned(),
        firmware: None,
        vcpus: 1,
        vcpu_type: "EPYC-Milan".into(),
        memory_mib: 512,
        sealed_model: Some(sealed.to_owned()),
        serve_port: Some(port),
        attestation_service: Some(svc),
        host_data: None,
        cbitpos: 51,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_model_served_in_a_sim_cvm_and_a_changed_initrd_gets_no_key() {
    let dir = scratch("e2e-vm");
    let (kernel, modules, seabios) =
        (input("NACRE_KERNEL"), input("NACRE_KERNEL_MODULES"), input("NACRE_SEABIOS"));
    let enclave = enclave();

    // Sim chip, image signer, attestation service (its certificate names the guest-side address).
    let ca = nacre_sim::SimCa::generate(nacre_sim::SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
    ca.write_to(&dir.join("sim")).unwrap();
    let (signing_key, signer) = nacre_protocol::reference::generate_signing_key().unwrap();
    std::fs::write(dir.join("image-signing.key"), &signing_key).unwrap();
    let init = nacre_attestation_service::setup::init(
        &dir.join("svc"),
        "127.0.0.1:0".parse().unwrap(),
        &["10.0.2.100".to_owned()],
        None,
        Some(&dir.join("sim/ark.pem")),
    )
    .unwrap();
    let text = std::fs::read_to_string(&init.config).unwrap();
    std::fs::write(&init.config, format!("trusted_image_signers = [\"{}\"]\n{text}", hex::encode(signer)))
        .unwrap();
    let config = Config::load(&init.config).unwrap();
    let service = Arc::new(Service::start(&config).await.unwrap());
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let svc_addr = listener.local_addr().unwrap();
    let tls = nacre_attestation_service::http::tls_config(&config.tls_cert, &config.tls_key).unwrap();
    tokio::spawn(nacre_attestation_service::http::serve(
        service.clone(),
        listener,
        tls,
        std::future::pending(),
    ));
    let ca_pem = std::fs::read(&init.ca_cert).unwrap();
    let token = std::fs::read_to_string(&init.admin_token).unwrap().trim().to_owned();
    let admin = Client::new(&format!("https://{svc_addr}"), &ca_pem).unwrap().with_token(token);

    // The model owner seals the model (its key is registered once the image's reference values are).
    let onnx = nacre_model::sample::mlp_onnx();
    let key = DataKey::generate().unwrap();
    let params = SealParams {
        key_id: "e2e-mlp".into(),
        key_version: 1,
        model_name: "e2e-mlp".into(),
        model_version: "1".into(),
        chunk_size: 64 << 10,
    };
    let mut sealed = Vec::new();
    let header = nacre_sealed::seal(
        std::io::Cursor::new(&onnx),
        &mut sealed,
        &AwsLcGcm::new(&key).unwrap(),
        &params,
        |_| {},
    )
    .unwrap();
    let sealed_path = dir.join("e2e-mlp.sealed");
    std::fs::write(&sealed_path, &sealed).unwrap();

    // The image for that model, and its signed reference values, imported into the service.
    let image = dir.join("image");
    let out = Command::new(NACRE)
        .args(["image", "build", "--name", "e2e-guest", "--service-url", "https://10.0.2.100:8443"])
        .arg("--out")
        .arg(&image)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--modules")
        .arg(&modules)
        .arg("--enclave")
        .arg(&enclave)
        .arg("--service-ca")
        .arg(&init.ca_cert)
        .arg("--sealed")
        .arg(&sealed_path)
        .arg("--signing-key")
        .arg(dir.join("image-signing.key"))
        .arg("--sim-firmware")
        .arg(&seabios)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (doc, sig) = (
        std::fs::read(image.join("reference-values.json")).unwrap(),
        std::fs::read(image.join("reference-values.sig")).unwrap(),
    );
    admin.import_reference_values(&doc, &sig).await.unwrap();
    admin
        .create_key("e2e-mlp", key.expose(), "reference_values = [\"e2e-guest\"]\ninsecure_sim = true\n")
        .await
        .unwrap();

    // The host agent launches the guest: sealed disk, relay to the service, serving port.
    let identity = Arc::new(nacre_host::sp::SimIdentity::load(&dir.join("sim")).unwrap());
    let tools = Tools { qemu: "qemu-system-x86_64".into(), nacre: NACRE.into(), sim: Some(identity) };
    let agent = Agent::open(&dir.join("state"), tools).await.unwrap();
    let port = free_port();
    let good = agent
        .launch(launch_spec("good", &image, &image.join("initrd"), &sealed_path, port, svc_addr))
        .await
        .unwrap();
    let _guard = KillOnDrop(good.dir.join("qemu.pid"));
    let started = Instant::now();
    let line = console_line(
        &good.dir.join("console.log"),
        &["NACRE-ENCLAVE-SERVING", "NACRE-ENCLAVE-FAILED"],
        Duration::from_secs(300),
    )
    .await;
    assert!(line.starts_with("NACRE-ENCLAVE-SERVING"), "{line}");
    eprintln!("launch → serving: {:.1} s", started.elapsed().as_secs_f64());

    // The client: signed reference values, the sim root (insecure, development), the model digest.
    let policy_path = dir.join("client-policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "model_digest = \"{}\"\ninsecure_sim_root = \"sim/ark.pem\"\n\n[[reference_values]]\n\
             document = \"image/reference-values.json\"\nsignature = \"image/reference-values.sig\"\nsigner = \"{}\"\n",
            hex::encode(header.model_digest),
            hex::encode(signer)
        ),
    )
    .unwrap();
    let policy = ClientPolicy::load(&policy_path).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let mut session = AttestedSession::connect(&url, &policy).await.unwrap();
    assert_eq!(hex::encode(session.peer().claims().measurement), good.measurement);
    let x = [0.5f32, -1.0, 2.0, 0.25];
    let out = session
        .infer(
            "e2e-mlp",
            &serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]}),
        )
        .await
        .unwrap();
    let got: Vec<f64> =
        out["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let want = nacre_model::sample::mlp_reference(&x);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want.iter()) {
        assert!((g - f64::from(*w)).abs() < 1e-5, "{got:?} vs {want:?}");
    }
    agent.stop("good").await.unwrap();

    // One changed initrd byte (a comment in the measured configuration): the guest boots, but
    // its measurement is not in the reference values, so no key, no model, no serving.
    let mut initrd = std::fs::read(image.join("initrd")).unwrap();
    let at = initrd.windows(10).position(|w| w == b"# Measured").expect("the config comment");
    initrd[at + 2] = b'm';
    let bad_initrd = dir.join("initrd-changed");
    std::fs::write(&bad_initrd, &initrd).unwrap();
    let port = free_port();
    let bad = agent
        .launch(launch_spec("changed", &image, &bad_initrd, &sealed_path, port, svc_addr))
        .await
        .unwrap();
    let _guard = KillOnDrop(bad.dir.join("qemu.pid"));
    assert_ne!(bad.measurement, good.measurement);
    let line = console_line(
        &bad.dir.join("console.log"),
        &["NACRE-ENCLAVE-SERVING", "NACRE-ENCLAVE-FAILED"],
        Duration::from_secs(300),
    )
    .await;
    assert!(line.starts_with("NACRE-ENCLAVE-FAILED key release:"), "{line}");
    let audit = admin.audit_export().await.unwrap();
    let denial = audit.iter().rev().find(|r| r.action == "deny").expect("the denial is audited");
    assert_eq!(denial.key_id.as_deref(), Some("e2e-mlp"));
    assert!(denial.reason.as_deref().unwrap_or("").contains(&bad.measurement), "{:?}", denial.reason);
    assert_eq!(denial.measurement.as_deref(), Some(bad.measurement.as_str()), "{denial:?}");
    assert_eq!(audit.iter().filter(|r| r.action == "release").count(), 1, "only the good guest got the key");
    match AttestedSession::connect(&format!("https://127.0.0.1:{port}"), &policy).await {
        Err(ClientError::Certificate(_)) => {}
        other => panic!("the changed guest must not pass attestation: {other:?}"),
    }
    agent.stop("changed").await.unwrap();
}
