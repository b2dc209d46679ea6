//! Image build time and the time from `launch` to the guest's first report request, broken
//! down: agent preparation (private copies + measurement), QEMU start to the firmware's first
//! console byte, firmware + kernel (the guest's uptime when /init starts), init (modules,
//! network) until the enclave starts, and the enclave until its first report is on the
//! console. Sim backend, QEMU TCG (KVM hangs on this machine). Prints a markdown table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../images/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{input, scratch};
use nacre_host::agent::Agent;
use nacre_host::spec::{Backend, LaunchSpec};
use nacre_host::vm::Tools;
use nacre_images::build::{ImageSpec, ModelBinding, Tee, build};

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn uptime_after(console: &str, marker: &str) -> Option<f64> {
    console
        .lines()
        .find_map(|l| l.split(marker).nth(1))
        .and_then(|rest| rest.trim().trim_end_matches('s').parse().ok())
}

fn main() {
    let dir = scratch("bench-launch");
    let enclave = {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-enclave.sh");
        let out = std::process::Command::new("bash").arg(script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        .unwrap();
    let spec = ImageSpec {
        kernel: input("NACRE_KERNEL"),
        modules_dir: input("NACRE_KERNEL_MODULES"),
        busybox: "/bin/busybox".into(),
        enclave,
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
        extra_cmdline: format!("nacre.selftest=report:{}", "00".repeat(64)),
    };
    let mut builds = Vec::new();
    let mut image = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let built = build(&spec).unwrap();
        built.write(&dir.join("image")).unwrap();
        builds.push(t.elapsed().as_secs_f64());
        image = Some(built);
    }
    let image = image.unwrap();

    let ca = nacre_sim::SimCa::generate(nacre_sim::SimParams::new(time::OffsetDateTime::now_utc())).unwrap();
    ca.write_to(&dir.join("sim")).unwrap();
    let identity = Arc::new(nacre_host::sp::SimIdentity::load(&dir.join("sim")).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut rows: Vec<[f64; 7]> = Vec::new();
    for run in 0..RUNS {
        rows.push(rt.block_on(async {
            let tools = Tools {
                qemu: "qemu-system-x86_64".into(),
                nacre: "/bin/false".into(),
                sim: Some(identity.clone()),
            };
            let agent = Agent::open(&dir.join(format!("state-{run}")), tools).await.unwrap();
            let t0 = Instant::now();
            let info = agent
                .launch(LaunchSpec {
                    name: "bench".into(),
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
                    host_data: None,
                    cbitpos: 51,
                })
                .await
                .unwrap();
            let prepared = t0.elapsed().as_secs_f64();
            let console = info.dir.join("console.log");
            let qmp = info.dir.join("qmp.sock");
            let deadline = Instant::now() + Duration::from_secs(120);
            // Host-side first sightings, polled every 2 ms.
            let (mut qmp_ready, mut init_seen, mut report_seen) = (None, None, None);
            let mut text = String::new();
            while report_seen.is_none() {
                assert!(Instant::now() < deadline, "no report: {text}");
                let now = t0.elapsed().as_secs_f64();
                if qmp_ready.is_none() && std::os::unix::net::UnixStream::connect(&qmp).is_ok() {
                    qmp_ready = Some(now);
                }
                text = std::fs::read_to_string(&console).unwrap_or_default();
                if init_seen.is_none() && text.contains("nacre-init: start at") {
                    init_seen = Some(now);
                }
                if text.contains("NACRE-SELFTEST-REPORT") {
                    report_seen = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let (qmp_ready, init_seen, report_seen) =
                (qmp_ready.unwrap(), init_seen.unwrap(), report_seen.unwrap());
            // The guest's uptime counts from the kernel's clock start, so firmware time is
            // what the host saw before /init minus the guest's own uptime at that point.
            let init_up = uptime_after(&text, "nacre-init: start at ").unwrap();
            let enclave_up = uptime_after(&text, "nacre-init: starting nacre-enclave at ").unwrap();
            agent.stop("bench").await.unwrap();
            [
                prepared,
                qmp_ready - prepared,
                init_seen - qmp_ready - init_up,
                init_up,
                enclave_up - init_up,
                report_seen - init_seen - (enclave_up - init_up),
                report_seen,
            ]
        }));
    }
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    println!();
    println!("## Guest image and launch (sim backend, QEMU {} TCG, {} runs, medians)", qemu_version(), RUNS);
    println!();
    println!("| stage | time |");
    println!("|---|---|");
    println!(
        "| image build (kernel + initrd {} MiB + cmdline, in memory and written) | {:.2} s (min {:.2}) |",
        image.initrd.len() >> 20,
        median(builds.clone()),
        builds.iter().cloned().fold(f64::MAX, f64::min)
    );
    println!(
        "| launch: agent prepares (private copies of the boot inputs + sim measurement) | {:.3} s |",
        col(0)
    );
    println!("| QEMU start (spawn → QMP socket answers) | {:.2} s |", col(1));
    println!(
        "| firmware: SeaBIOS, kernel and initrd loading (host time before the kernel's clock) | {:.2} s |",
        col(2)
    );
    println!("| kernel boot → /init (guest uptime when /init starts) | {:.2} s |", col(3));
    println!("| init: module loading, network → nacre-enclave starts | {:.2} s |", col(4));
    println!(
        "| nacre-enclave start → first report on the console (open port, request, sign, print) | {:.2} s |",
        col(5)
    );
    println!("| **launch → first report, total** | **{:.2} s** |", col(6));
    println!();
    println!("load average after: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}

fn qemu_version() -> String {
    nacre_host::probe::qemu_version(Path::new("qemu-system-x86_64"))
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_default()
}
