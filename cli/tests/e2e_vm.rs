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
use nacre_sealed::{AwsLcGcm, DataKey, Output, SealParams};

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
        serve_address: std::net::Ipv4Addr::LOCALHOST,
        attestation_service: Some(svc.to_string().parse().unwrap()),
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
    let params = SealParams { chunk_size: 64 << 10, ..SealParams::new("e2e-mlp", 1, "e2e-mlp", "1") };
    let mut sealed = Vec::new();
    let header = nacre_sealed::seal(
        &onnx[..],
        Output::Memory(&mut sealed),
        &AwsLcGcm::new(&key).unwrap(),
        &params,
        2,
        &|_| {},
    )
    .unwrap();
    let sealed_path = dir.join("e2e-mlp.sealed");
    std::fs::write(&sealed_path, &sealed).unwrap();

    // The image for that model, requiring a bearer token for inference (issue 14), and its
    // signed reference values, imported into the service.
    const TOKEN: &str = "e2e-inference-token-0123456789";
    let token_file = dir.join("inference.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
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
        .arg("--inference-token-file")
        .arg(&token_file)
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
            "model_identity = \"{}\"\ninsecure_sim_root = \"sim/ark.pem\"\n\n[[reference_values]]\n\
             document = \"image/reference-values.json\"\nsignature = \"image/reference-values.sig\"\nsigner = \"{}\"\n",
            hex::encode(header.model_identity),
            hex::encode(signer)
        ),
    )
    .unwrap();
    let policy = ClientPolicy::load(&policy_path).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let mut session = AttestedSession::connect(&url, &policy).await.unwrap();
    assert_eq!(hex::encode(session.peer().claims().measurement), good.measurement);
    let x = [0.5f32, -1.0, 2.0, 0.25];
    let request =
        serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]});
    // The image's measured configuration requires the token: without it, 401.
    match session.infer("e2e-mlp", &request).await {
        Err(ClientError::Status { status: 401, .. }) => {}
        other => panic!("inference without the image's token must be refused: {other:?}"),
    }
    let mut session = AttestedSession::connect(&url, &policy).await.unwrap().with_token(TOKEN);
    let out = session.infer("e2e-mlp", &request).await.unwrap();
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

/// A Platform that "authenticates" a fixed TD claim set: the TDX evidence we cannot produce
/// without hardware (a quote is signed by Intel's PCK chain), so that the policies built by the
/// service, the client and `nacre image build` can be judged on TD registers we choose.
struct SyntheticTd([u8; 48], [[u8; 48]; 4]);

impl nacre_verifier::pipeline::Platform for SyntheticTd {
    type Evidence<'a> = ();
    fn authenticate(
        &self,
        _: (),
        _: &nacre_verifier::pipeline::AuthContext,
    ) -> Result<nacre_verifier::Claims, nacre_verifier::VerifyError> {
        use nacre_verifier::claims::{PlatformClaims, TdReport, TdxClaims, TdxTcbStatus};
        let td = TdReport {
            quote_version: 4,
            mrtd: self.0,
            rtmr: self.1,
            report_data: [0; 64],
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            mrseam: [0; 48],
            td_attributes: [0; 8],
            xfam: [0; 8],
            tee_tcb_svn: [0; 16],
        };
        Ok(nacre_verifier::Claims {
            tee: nacre_wire::Tee::Tdx,
            measurement: self.0,
            report_data: [0; 64],
            debug: false,
            validity: Vec::new(),
            warnings: Vec::new(),
            platform: PlatformClaims::Tdx(Box::new(TdxClaims {
                tcb_status: TdxTcbStatus::UpToDate,
                advisory_ids: Vec::new(),
                td,
                event_log: None,
            })),
        })
    }
}

/// A TCG2 crypto-agile event log (as in the CCEL table) of SHA-384 events `(mr_index, digest)`.
fn tcg_log(events: impl Iterator<Item = (u32, [u8; 48])>) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes()); // platform class
    spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, UINTN 8 bytes
    spec.extend_from_slice(&1u32.to_le_bytes());
    spec.extend_from_slice(&0x000cu16.to_le_bytes()); // SHA-384
    spec.extend_from_slice(&48u16.to_le_bytes());
    spec.push(0);
    let mut log = 1u32.to_le_bytes().to_vec();
    log.extend_from_slice(&3u32.to_le_bytes()); // EV_NO_ACTION
    log.extend_from_slice(&[0; 20]);
    log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    log.extend_from_slice(&spec);
    for (mr_index, digest) in events {
        log.extend_from_slice(&mr_index.to_le_bytes());
        log.extend_from_slice(&0x8000_0007u32.to_le_bytes()); // EV_EFI_ACTION
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0x000cu16.to_le_bytes());
        log.extend_from_slice(&digest);
        log.extend_from_slice(&0u32.to_le_bytes());
    }
    log
}

/// Issue 13, "done when": `nacre image build` writes a TDX entry for the image (MRTD, RTMR1 and
/// RTMR2 computed from the bytes written, RTMR0 as supplied for a stated shape) and a TDX
/// policy. The service's release policy, the client's policy and that policy file (what
/// `nacre evidence verify --policy` loads) all accept a TD with exactly those registers and
/// refuse one whose initrd differs by a byte (RTMR2) or that booted another kernel (RTMR1),
/// naming the register.
#[test]
fn tdx_reference_values_of_an_image_admit_its_boot_chain_only() {
    use nacre_images::measure::tdx::{BootInputs, LaunchShape, measure};
    use nacre_verifier::pipeline::{Appraiser, ExpectedReportData};
    use nacre_verifier::{PolicyViolation, VerifyError};

    let dir = scratch("tdx-image");
    let (kernel, modules, tdvf) = (input("NACRE_KERNEL"), input("NACRE_KERNEL_MODULES"), input("NACRE_TDVF"));
    let ca = nacre_sim::SimCa::generate(nacre_sim::SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
    ca.write_to(&dir.join("sim")).unwrap();
    let (signing_key, signer) = nacre_protocol::reference::generate_signing_key().unwrap();
    std::fs::write(dir.join("image-signing.key"), &signing_key).unwrap();
    let key = DataKey::generate().unwrap();
    let params = SealParams { chunk_size: 64 << 10, ..SealParams::new("tdx-mlp", 1, "tdx-mlp", "1") };
    let mut sealed = Vec::new();
    let onnx = nacre_model::sample::mlp_onnx();
    nacre_sealed::seal(
        &onnx[..],
        Output::Memory(&mut sealed),
        &AwsLcGcm::new(&key).unwrap(),
        &params,
        2,
        &|_| {},
    )
    .unwrap();
    std::fs::write(dir.join("m.sealed"), &sealed).unwrap();
    // The stated shape: 2 GiB, 1 vCPU, QEMU 10.1.0. Its RTMR0 is a stand-in for the value a
    // reference TD of that shape reports (this machine cannot run one).
    let rtmr0 = [0x5a; 48];
    let image = dir.join("image");
    let out = Command::new(NACRE)
        .args([
            "image",
            "build",
            "--name",
            "tdx-guest",
            "--tee",
            "tdx",
            "--service-url",
            "https://10.0.2.100:8443",
        ])
        .arg("--out")
        .arg(&image)
        .arg("--kernel")
        .arg(&kernel)
        .arg("--modules")
        .arg(&modules)
        .arg("--enclave")
        .arg(enclave())
        .arg("--service-ca")
        .arg(dir.join("sim/ark.pem"))
        .arg("--sealed")
        .arg(dir.join("m.sealed"))
        .arg("--signing-key")
        .arg(dir.join("image-signing.key"))
        .arg("--tdx-firmware")
        .arg(&tdvf)
        .arg("--tdx-launch")
        .arg(format!("memory_mib=2048,vcpus=1,qemu=10.1.0,rtmr0={}", hex::encode(rtmr0)))
        .args(["--snp-min-tcb", r#"{"genoa":{"bootloader":10,"tee":0,"snp":23,"microcode":84}}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc = std::fs::read(image.join("reference-values.json")).unwrap();
    let sig = std::fs::read(image.join("reference-values.sig")).unwrap();
    let values = nacre_protocol::reference::ReferenceValues::verify(&doc, &sig, &[signer]).unwrap();
    assert_eq!(values.format, nacre_protocol::reference::FORMAT);
    let genoa = values.snp_min_tcb.as_ref().and_then(|f| f.for_product(nacre_wire::snp::Product::Genoa));
    assert_eq!(genoa.map(|t| t.microcode), Some(84), "the publisher's floor is signed in");
    let tdx: Vec<_> = values.measurements.iter().filter(|m| m.tee == "tdx").collect();
    assert_eq!(tdx.len(), 1, "one TDX entry per --tdx-launch");
    assert_eq!(
        (tdx[0].memory_mib, tdx[0].vcpus, tdx[0].qemu_version.as_deref()),
        (Some(2048), Some(1), Some("10.1.0"))
    );

    // The registers of the image as written (the code proven against calculate-tdx-mrs), and of
    // the same launch with one initrd byte changed, and with another kernel.
    let read = |name: &str| std::fs::read(image.join(name)).unwrap();
    let (firmware, vmlinuz, initrd) = (std::fs::read(&tdvf).unwrap(), read("vmlinuz"), read("initrd"));
    let cmdline = String::from_utf8(read("cmdline")).unwrap().trim().to_owned();
    let shape = LaunchShape { memory_bytes: 2048 << 20, vcpus: 1, qemu: "10.1.0".parse().unwrap() };
    let registers = |kernel: &[u8], initrd: &[u8]| {
        let m = measure(
            &shape,
            &BootInputs { firmware: &firmware, kernel, initrd: Some(initrd), cmdline: &cmdline },
        )
        .unwrap();
        (m.mrtd, [rtmr0, m.rtmr1(), m.rtmr2(), [0; 48]])
    };
    let good = registers(&vmlinuz, &initrd);
    assert_eq!(tdx[0].measurement, hex::encode(good.0));
    assert_eq!(tdx[0].rtmr1.as_deref(), Some(hex::encode(good.1[1]).as_str()));
    assert_eq!(tdx[0].rtmr2.as_deref(), Some(hex::encode(good.1[2]).as_str()));
    let mut changed_initrd = initrd.clone();
    let at = changed_initrd.windows(10).position(|w| w == b"# Measured").expect("the config comment");
    changed_initrd[at + 2] = b'm';
    let changed_initrd = registers(&vmlinuz, &changed_initrd);
    // Another kernel: the same bzImage with one byte of its payload changed.
    let mut other_kernel = vmlinuz.clone();
    let last = other_kernel.len() - 4096;
    other_kernel[last] ^= 0x01;
    let other_kernel = registers(&other_kernel, &initrd);
    assert_ne!(changed_initrd.1[2], good.1[2]);
    assert_eq!(changed_initrd.1[1], good.1[1], "the initrd's content is not in RTMR1");
    assert_ne!(other_kernel.1[1], good.1[1]);

    // A TD's event log of this boot (RTMR1 and RTMR2 events) against `nacre measure tdx`: none
    // differs; the log of the changed initrd names the initrd event of RTMR2.
    let log_of = |initrd: &[u8]| {
        let m = measure(
            &shape,
            &BootInputs { firmware: &firmware, kernel: &vmlinuz, initrd: Some(initrd), cmdline: &cmdline },
        )
        .unwrap();
        tcg_log(m.rtmr1_events.iter().chain(&m.rtmr2_events).map(|e| (u32::from(e.register) + 1, e.digest)))
    };
    std::fs::write(dir.join("good.log"), log_of(&initrd)).unwrap();
    let mut other = initrd.clone();
    let at = other.windows(10).position(|w| w == b"# Measured").unwrap();
    other[at + 2] = b'm';
    std::fs::write(dir.join("changed.log"), log_of(&other)).unwrap();
    let measure_cli = |log: &str| {
        Command::new(NACRE)
            .args(["measure", "tdx", "--memory-mib", "2048", "--append", &cmdline, "--firmware"])
            .arg(&tdvf)
            .arg("--kernel")
            .arg(image.join("vmlinuz"))
            .arg("--initrd")
            .arg(image.join("initrd"))
            .arg("--event-log")
            .arg(dir.join(log))
            .output()
            .unwrap()
    };
    let out = measure_cli("good.log");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("rtmr2 {}", hex::encode(good.1[2]))), "{text}");
    let out = measure_cli("changed.log");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("event log differs") && text.contains("RTMR2") && text.contains("initrd"),
        "{text}"
    );

    // The three policies: the service's (a key naming these reference values), the client's,
    // and the written TDX policy.
    let service =
        nacre_attestation_service::policy::ReleasePolicy::parse("reference_values = [\"tdx-guest\"]\n")
            .unwrap()
            .resolve(&[&values])
            .unwrap();
    std::fs::write(
        dir.join("client.toml"),
        format!(
            "model_identity = \"{}\"\n[[reference_values]]\ndocument = \"image/reference-values.json\"\n\
             signature = \"image/reference-values.sig\"\nsigner = \"{}\"\n",
            "00".repeat(32),
            hex::encode(signer)
        ),
    )
    .unwrap();
    let client = ClientPolicy::load(&dir.join("client.toml")).unwrap();
    let file = nacre_verifier::policy::Policy::from_toml(
        &std::fs::read_to_string(image.join("tdx-policy.toml")).unwrap(),
    )
    .unwrap();
    for (who, appraiser) in [
        ("service", service),
        ("client", client.attestation.appraiser().clone()),
        ("tdx-policy.toml", Appraiser::new(file)),
    ] {
        let judge = |(mrtd, rtmr): ([u8; 48], [[u8; 48]; 4])| {
            appraiser.appraise(&SyntheticTd(mrtd, rtmr), (), ExpectedReportData::InsecureUnbound, 0)
        };
        assert!(judge(good).is_ok(), "{who}: {:?}", judge(good));
        for (case, td, register) in
            [("changed initrd", changed_initrd, "rtmr2"), ("other kernel", other_kernel, "rtmr1")]
        {
            match judge(td) {
                Err(VerifyError::Policy(PolicyViolation::TdxLaunch { closest })) => {
                    assert!(
                        closest.contains(&format!(
                            "{register} {}",
                            hex::encode(td.1[if register == "rtmr1" { 1 } else { 2 }])
                        )),
                        "{who}, {case}: {closest}"
                    );
                    assert_eq!(
                        closest.matches("(allowed").count(),
                        1,
                        "{who}, {case}: only {register} differs: {closest}"
                    );
                }
                other => panic!("{who}, {case}: {other:?}"),
            }
        }
    }
}
