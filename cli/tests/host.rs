#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! `nacre host` over the agent's socket: refusals reach the operator with their reasons.

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn nacre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre")).args(args).output().unwrap()
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spec(dir: &Path, backend: &str, firmware: bool) -> String {
    let path = dir.join(format!("{backend}.toml"));
    let fw = if firmware { "firmware = \"/bin/true\"\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "name = \"{backend}-vm\"\nbackend = \"{backend}\"\nkernel = \"/bin/true\"\ninitrd = \"/bin/true\"\ncmdline = \"console=ttyS0\"\n{fw}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn agent_cli_refuses_with_reasons() {
    let dir = std::env::temp_dir().join(format!("nacre-host-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state").display().to_string();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_nacre")).args(["host", "serve", "--state", &state]).spawn().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("state/agent.sock").exists() {
        assert!(Instant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = nacre(&["host", "ps", "--state", &state]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));

    // SNP and TDX: this machine has neither; the reasons are listed.
    let out = nacre(&["host", "launch", "--state", &state, &spec(&dir, "snp", true)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run snp") && err.contains("/dev/sev"), "{err}");
    let out = nacre(&["host", "launch", "--state", &state, &spec(&dir, "tdx", true)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run tdx") && err.contains("kvm_intel"), "{err}");
    // A real TEE backend without firmware is a spec error, named.
    let out = nacre(&["host", "launch", "--state", &state, &spec(&dir, "snp", false)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("firmware is required"));
    // sim without a sim CA: refused before QEMU starts.
    let out = nacre(&["host", "launch", "--state", &state, &spec(&dir, "sim", false)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without --sim-ca"), "{err}");
    // Unknown spec fields are refused.
    std::fs::write(
        dir.join("odd.toml"),
        "name = \"x\"\nbackend = \"sim\"\nkernel = \"k\"\ninitrd = \"i\"\ncmdline = \"c\"\nextra = 1\n",
    )
    .unwrap();
    let out = nacre(&["host", "launch", "--state", &state, &dir.join("odd.toml").display().to_string()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nacre(&["host", "ps", "--state", &state]);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), serde_json::json!([]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression: the relay QEMU runs for the guest's connections to the attestation service
/// copied TCP → stdout through Rust's line-buffered stdout. With a socket as stdout (as QEMU's
/// guestfwd gives it) no splice applies, so bytes after the last newline waited in the buffer
/// and a TLS handshake through the relay stalled until the guest timed out.
#[test]
fn relay_passes_bytes_without_newlines_at_once() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // An echo server for one connection.
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    // The relay's stdin and stdout are one end of a socket pair, as under QEMU.
    let (mut guest, relay_end) = UnixStream::pair().unwrap();
    let stdin = std::os::fd::OwnedFd::from(relay_end.try_clone().unwrap());
    let stdout = std::os::fd::OwnedFd::from(relay_end);
    let mut relay = Command::new(env!("CARGO_BIN_EXE_nacre"))
        .args(["host", "relay", &addr.to_string()])
        .stdin(stdin)
        .stdout(stdout)
        .spawn()
        .unwrap();
    guest.write_all(b"\x16\x03\x01ab").unwrap(); // no newline, and the connection stays open
    guest.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = [0u8; 5];
    let r = guest.read_exact(&mut got);
    let _ = relay.kill();
    let _ = relay.wait();
    r.expect("the relay held the bytes back");
    assert_eq!(got, *b"\x16\x03\x01ab");
}

/// `nacre doctor --node-labels` labels a node by its devices and kernel parameters (read under
/// `--host-root`, as from a container), and prints nothing for a node without a TEE.
#[test]
fn node_labels_name_what_the_hardware_can_run() {
    let root = std::env::temp_dir().join(format!("nacre-node-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let labels = |root: &Path| {
        let out = nacre(&["doctor", "--node-labels", "--host-root", root.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let param = |module: &str, name: &str, value: &str| {
        let dir = root.join("sys/module").join(module).join("parameters");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), value).unwrap();
    };
    std::fs::create_dir_all(root.join("dev")).unwrap();
    assert_eq!(labels(&root), "", "no TEE, no label");
    std::fs::write(root.join("dev/kvm"), "").unwrap();
    param("kvm_intel", "tdx", "Y\n");
    assert_eq!(labels(&root), "feature.node.kubernetes.io/nacre-tee-tdx=true\n");
    param("kvm_intel", "tdx", "N\n");
    param("kvm_amd", "sev_snp", "Y\n");
    assert_eq!(labels(&root), "", "SNP enabled in the kernel but no /dev/sev");
    std::fs::write(root.join("dev/sev"), "").unwrap();
    assert_eq!(labels(&root), "feature.node.kubernetes.io/nacre-tee-snp=true\n");
    let _ = std::fs::remove_dir_all(&root);
}
