#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! `nacre seal --register` against a real `nacre attestation serve` process on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn nacre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre")).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A served attestation service directory; the process is killed on drop.
struct Served {
    dir: PathBuf,
    url: String,
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    serve_with(dir, |c| c)
}

/// `serve`, with `edit` applied to the generated config.toml first.
fn serve_with(dir: &Path, edit: impl FnOnce(String) -> String) -> Served {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let out = nacre(&["attestation", "init", dir.to_str().unwrap(), "--listen", &listen]);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.join("config.toml");
    std::fs::write(&config, edit(std::fs::read_to_string(&config).unwrap())).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nacre"))
        .args(["--log-json", "attestation", "serve", "--config", config.to_str().unwrap()])
        .stderr(Stdio::from(std::fs::File::create(dir.join("serve.log")).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "the service did not start: {:?}",
            std::fs::read_to_string(dir.join("serve.log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Served { dir: dir.to_owned(), url: format!("https://{listen}"), child }
}

#[test]
fn seal_register_creates_then_rotates_and_never_leaves_an_orphan() {
    let dir = std::env::temp_dir().join(format!("nacre-register-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let svc = serve(&dir.join("svc"));
    let p = |name: &str| dir.join(name).display().to_string();
    let ca = svc.dir.join("ca.pem").display().to_string();
    let token = svc.dir.join("admin.token").display().to_string();
    assert!(nacre(&["model", "sample", "--out", &p("m.onnx")]).status.success());
    std::fs::write(
        dir.join("policy.toml"),
        format!("insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n", "5a".repeat(48)),
    )
    .unwrap();
    let model = p("m.onnx");
    let seal = |out: &str, extra: &[&str]| {
        let mut args = vec!["seal", &model, "--out", out, "--key-id", "fraud", "--register", &svc.url];
        args.extend(["--ca", &ca]);
        args.extend_from_slice(extra);
        nacre(&args)
    };

    // A new key needs its policy; nothing is written when registration cannot happen.
    let out = seal(&p("a.sealed"), &["--token-file", &token]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--policy"), "{}", stderr(&out));
    assert!(!dir.join("a.sealed").exists());

    // A wrong token: refused, and no sealed file or temporary file is left.
    std::fs::write(dir.join("bad.token"), "not-the-token\n").unwrap();
    let out = seal(&p("a.sealed"), &["--token-file", &p("bad.token"), "--policy", &p("policy.toml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unauthorized") || stderr(&out).contains("401"), "{}", stderr(&out));
    assert!(!dir.join("a.sealed").exists());
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| { e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-") })
            .count(),
        0,
        "temporary files left behind"
    );

    // First registration: version 1.
    let out = seal(&p("a.sealed"), &["--token-file", &token, "--policy", &p("policy.toml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fraud v1 ->"));
    assert!(dir.join("a.sealed").exists());

    // Existing key: --policy would silently not apply, so it is refused; without it, v2.
    let out = seal(&p("b.sealed"), &["--token-file", &token, "--policy", &p("policy.toml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("policy set"), "{}", stderr(&out));
    let out = seal(&p("b.sealed"), &["--token-file", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fraud v2 ->"));

    let out = nacre(&["attestation", "keys", "list", "--url", &svc.url, "--ca", &ca, "--token-file", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys[0]["key_id"], "fraud");
    assert_eq!(keys[0]["current_version"], 2);
    assert_eq!(keys[0]["versions"].as_array().unwrap().len(), 2);

    // --key-out and --register are exclusive.
    let out = seal(&p("c.sealed"), &["--token-file", &token, "--key-out", &p("k.json")]);
    assert_eq!(out.status.code(), Some(2));

    // Every registration is audited, and the chain verifies; the service logged JSON.
    let config = svc.dir.join("config.toml").display().to_string();
    let out = nacre(&["audit", "verify", "--config", &config]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(svc.dir.join("serve.log")).unwrap();
    let first = log.lines().find(|l| l.starts_with('{')).expect("a JSON log line");
    let line: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(line["timestamp"].is_string() && line["level"].is_string(), "{first}");
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nacre image keygen` → signed reference values → `nacre attestation reference import|list`;
/// a signer the service does not trust is refused.
#[test]
fn reference_values_import_and_list() {
    use nacre_protocol::reference::{Expected, FORMAT, ImageDigests, ReferenceValues};
    let dir = std::env::temp_dir().join(format!("nacre-reference-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = |name: &str| dir.join(name).display().to_string();
    let keygen = |name: &str| {
        let out = nacre(&["image", "keygen", "--out", &p(name)]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (pk, _) = (keygen("signing.key"), keygen("other.key"));
    let svc = serve_with(&dir.join("svc"), |c| {
        c.replace("[limits]", &format!("trusted_image_signers = [\"{pk}\"]\n\n[limits]"))
    });
    // What `nacre image build` writes, signed with each key.
    let values = ReferenceValues {
        format: FORMAT.into(),
        name: "fraud-guest".into(),
        image: ImageDigests {
            vmlinuz_sha256: "a".repeat(64),
            initrd_sha256: "b".repeat(64),
            cmdline: "console=ttyS0".into(),
            sbom_sha256: None,
        },
        measurements: vec![Expected {
            tee: "sim".into(),
            measurement: "5a".repeat(48),
            firmware_sha256: "c".repeat(64),
            vcpus: Some(1),
            vcpu_type: Some("EPYC-v4".into()),
            ..Default::default()
        }],
        snp_min_tcb: None,
    };
    for key in ["signing", "other"] {
        let (doc, sig) = values.sign(&std::fs::read(p(&format!("{key}.key"))).unwrap()).unwrap();
        std::fs::write(p(&format!("{key}.json")), doc).unwrap();
        std::fs::write(p(&format!("{key}.sig")), serde_json::to_vec_pretty(&sig).unwrap()).unwrap();
    }
    let ca = svc.dir.join("ca.pem").display().to_string();
    let remote = |token: &str| {
        ["--url", &svc.url, "--ca", &ca, "--token-file", &svc.dir.join(token).display().to_string()]
            .map(str::to_owned)
    };
    let import = |key: &str| {
        let (doc, sig) = (p(&format!("{key}.json")), p(&format!("{key}.sig")));
        let mut args = vec!["attestation", "reference", "import", "--doc", &doc, "--sig", &sig];
        let r = remote("admin.token");
        args.extend(r.iter().map(String::as_str));
        nacre(&args)
    };
    let out = import("signing");
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((info["name"].as_str(), info["signer"].as_str()), (Some("fraud-guest"), Some(pk.as_str())));
    let out = import("other");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("untrusted_signer"), "{}", stderr(&out));

    let r = remote("auditor.token");
    let mut args = vec!["attestation", "reference", "list"];
    args.extend(r.iter().map(String::as_str));
    let out = nacre(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["measurements"][0]["measurement"], "5a".repeat(48));
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
}
