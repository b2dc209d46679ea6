#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! A sim VM under QEMU TCG, end to end: the image builder's initrd with the static
//! `nacre-enclave` in self-test mode asks the simulated secure processor for reports; each
//! verifies with the attestation core and carries MEASUREMENT = the sim digest of the same
//! inputs and the REPORT_DATA asked for. A killed QEMU is restarted; a restarted agent adopts
//! the running VM (same QEMU) and its secure processor answers again.

#[path = "../../images/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{input, scratch};
use nacre_host::agent::Agent;
use nacre_host::spec::{Backend, LaunchSpec};
use nacre_host::vm::{Tools, VmInfo};
use nacre_images::build::{ImageSpec, ModelBinding, Tee, build};
use nacre_images::measure::sim::{SimLaunch, digest_of};

const REPORT_DATA: [u8; 64] = [0x5c; 64];

fn enclave() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-enclave.sh");
    let out = std::process::Command::new("bash").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Reports printed on the console so far: (report bytes, certificate DERs).
fn reports(console: &Path) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let mut out = Vec::new();
    let mut cur: Option<(Vec<u8>, Vec<Vec<u8>>)> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix("NACRE-SELFTEST-REPORT ") {
            cur = hex::decode(h).ok().map(|r| (r, Vec::new()));
        } else if let Some(h) = line.strip_prefix("NACRE-SELFTEST-CERT ") {
            if let (Some(c), Ok(der)) = (cur.as_mut(), hex::decode(h)) {
                c.1.push(der);
            }
        } else if line == "NACRE-SELFTEST-DONE" {
            out.extend(cur.take());
        }
    }
    out
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills the VM's QEMU if the test fails before stopping it (no stray VMs after a failure).
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

async fn info(agent: &Agent) -> VmInfo {
    agent.ps().await.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_vm_reports_verify_restart_and_adoption() {
    let dir = scratch("sim-vm");
    // The sim CA, written as `nacre sim ca init` does.
    let ca = nacre_sim::SimCa::generate(nacre_sim::SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
    ca.write_to(&dir.join("sim")).unwrap();
    std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        .unwrap();
    let image = build(&ImageSpec {
        kernel: input("NACRE_KERNEL"),
        modules_dir: input("NACRE_KERNEL_MODULES"),
        busybox: "/bin/busybox".into(),
        enclave: enclave(),
        service_url: "https://10.0.2.100:8443".into(),
        service_ca: dir.join("ca.pem"),
        tee: Tee::Sim,
        // Self-test images serve no model; the binding only has to be well-formed.
        model: ModelBinding {
            key_id: "selftest".into(),
            model_name: "selftest".into(),
            model_identity: [0; 32],
        },
        serving: Default::default(),
        extra_cmdline: format!("nacre.selftest=report:{}", hex::encode(REPORT_DATA)),
    })
    .unwrap();
    image.write(&dir.join("image")).unwrap();
    let firmware = std::fs::read(input("NACRE_SEABIOS")).unwrap();
    let launch = SimLaunch {
        firmware: &firmware,
        kernel: &image.kernel,
        initrd: &image.initrd,
        cmdline: &image.cmdline,
        vcpus: 1,
        vcpu_type: "EPYC-Milan".parse().unwrap(),
    };
    let expected = digest_of(&launch).unwrap();
    // One changed initrd byte, another measurement.
    let mut other = image.initrd.clone();
    other[1000] ^= 1;
    assert_ne!(digest_of(&SimLaunch { initrd: &other, ..launch }).unwrap(), expected);

    let identity = Arc::new(nacre_host::sp::SimIdentity::load(&dir.join("sim")).unwrap());
    let tools = Tools { qemu: "qemu-system-x86_64".into(), nacre: "/bin/false".into(), sim: Some(identity) };
    let state = dir.join("state");
    let agent = Agent::open(&state, tools.clone()).await.unwrap();
    let info0 = agent
        .launch(LaunchSpec {
            name: "selftest".into(),
            backend: Backend::Sim,
            kernel: dir.join("image/vmlinuz"),
            initrd: dir.join("image/initrd"),
            cmdline: image.cmdline.clone(),
            firmware: None,
            vcpus: 1,
            vcpu_type: "EPYC-Milan".into(),
            memory_mib: 512,
            sealed_model: None,
            serve_port: None,
            serve_address: std::net::Ipv4Addr::LOCALHOST,
            attestation_service: None,
            host_data: Some("ab".repeat(32)),
            cbitpos: 51,
        })
        .await
        .unwrap();
    assert_eq!(info0.measurement, hex::encode(expected), "the agent measured what it boots");
    let _guard = KillOnDrop(info0.dir.join("qemu.pid"));
    let console = info0.dir.join("console.log");
    let started = Instant::now();
    wait_for("the first report", Duration::from_secs(120), async || !reports(&console).is_empty()).await;
    eprintln!("launch → first report: {:.1} s", started.elapsed().as_secs_f64());

    // The report verifies under the sim root and says what was booted and asked.
    let (report, certs) = reports(&console).remove(0);
    let verifier = nacre_verifier::evidence::EvidenceVerifier::new(None)
        .with_sim(nacre_verifier::snp::SnpRoots::insecure_sim(ca.ark_der()).unwrap());
    let evidence = nacre_wire::Evidence {
        tee: Tee::Sim,
        report,
        certs: certs.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        event_log: None,
    };
    // The policy pins the measurement computed from the files, so acceptance is the check.
    let policy = format!("[sim]\nmeasurements = [\"{}\"]\n", hex::encode(expected));
    let appraiser =
        nacre_verifier::pipeline::Appraiser::new(nacre_verifier::policy::Policy::from_toml(&policy).unwrap());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let exact = nacre_verifier::pipeline::ExpectedReportData::Exact(REPORT_DATA);
    let claims = verifier.appraise(&appraiser, &evidence, exact, now).unwrap();
    // A policy naming another measurement refuses the same evidence.
    let wrong = format!("[sim]\nmeasurements = [\"{}\"]\n", "00".repeat(48));
    let wrong =
        nacre_verifier::pipeline::Appraiser::new(nacre_verifier::policy::Policy::from_toml(&wrong).unwrap());
    assert!(
        verifier
            .appraise(
                &wrong,
                &evidence,
                nacre_verifier::pipeline::ExpectedReportData::Exact(REPORT_DATA),
                now
            )
            .is_err()
    );
    let nacre_verifier::claims::PlatformClaims::Snp(snp) = &claims.platform else { panic!("not SNP-shaped") };
    assert_eq!(snp.report.measurement, expected);
    assert_eq!(snp.report.report_data, REPORT_DATA);
    assert_eq!(snp.report.host_data, [0xab; 32]);
    assert!(snp.report.chip_id.starts_with(b"NACRE-SIM"));

    // kill -9 QEMU: the supervisor restarts it (new pid) and the guest reports again.
    let pid = info(&agent).await.pid.unwrap();
    nacre_host::vm::kill(pid);
    wait_for("the restart", Duration::from_secs(30), async || {
        let i = info(&agent).await;
        i.restarts == 1 && i.pid.is_some_and(|p| p != pid) && i.state == "running"
    })
    .await;
    let before = reports(&console).len();
    wait_for("a report after the restart", Duration::from_secs(120), async || {
        reports(&console).len() > before
    })
    .await;

    // Agent restart: the VM keeps running, the new agent adopts the same QEMU, and the secure
    // processor (a new socket) answers again.
    let pid = info(&agent).await.pid.unwrap();
    agent.detach_all().await;
    drop(agent);
    let agent = Agent::open(&state, tools).await.unwrap();
    let adopted = info(&agent).await;
    assert_eq!(adopted.pid, Some(pid), "adopted, not relaunched");
    assert_eq!(adopted.state, "running");
    let before = reports(&console).len();
    wait_for("a report after adoption", Duration::from_secs(60), async || reports(&console).len() > before)
        .await;

    // Clean stop through QMP.
    let stopped = agent.stop("selftest").await.unwrap();
    assert_eq!(stopped.state, "stopped");
    assert!(!nacre_host::vm::alive(pid));
    assert_eq!(agent.ps().await[0].state, "stopped");
}
