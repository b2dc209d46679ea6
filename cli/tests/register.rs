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

/// A publisher's OMS bundles over `nacre model sample`'s ONNX model, made by model-signing
/// (attestation/signing/tests/fixtures): verified by `nacre seal --signature` before anything is
/// sealed, carried in the sealed header, and registered with `nacre attestation keys add
/// --sealed` against a real service whose release policy names signers.
#[test]
fn seal_with_a_publisher_signature_then_register_under_a_signer_policy() {
    let dir = std::env::temp_dir().join(format!("nacre-signed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../attestation/signing/tests/fixtures");
    let fx = |name: &str| fixtures.join(name).display().to_string();
    let p = |name: &str| dir.join(name).display().to_string();
    assert!(nacre(&["model", "sample", "--out", &p("model.onnx")]).status.success());
    // Other bytes that still load: a protobuf field appended to the model (its doc_string).
    let mut tampered = std::fs::read(dir.join("model.onnx")).unwrap();
    tampered.extend_from_slice(b"\x32\x01A");
    std::fs::write(dir.join("tampered.onnx"), &tampered).unwrap();
    let seal = |model: &str, out: &str, bundle: &str, extra: &[&str]| {
        let (model, out, key, bundle) = (p(model), p(out), p(&format!("{out}.key")), fx(bundle));
        let mut args = vec!["seal", &model, "--out", &out, "--key-id", "signed", "--key-out", &key];
        args.extend(["--signature", &bundle]);
        args.extend_from_slice(extra);
        nacre(&args)
    };
    let publisher = fx("publisher.pub.pem");
    let by_publisher = ["--signer-key", publisher.as_str()];

    // The bundles verify over the sample as it is; if this fails, `nacre model sample` changed
    // and the fixtures need remaking (make.sh).
    for bundle in ["sample-onnx.sig.json", "sample-onnx-shards.sig.json"] {
        let out = seal("model.onnx", &format!("{bundle}.sealed"), bundle, &by_publisher);
        assert!(out.status.success(), "{bundle}: {}", stderr(&out));
    }
    // Refused before sealing, and nothing is written: other bytes, another signer's key, a
    // bundle that does not parse, another sharding than the bundle's.
    let other = fx("other.pub.pem");
    std::fs::write(dir.join("garbage.sig.json"), b"{\"not\": \"a bundle\"}").unwrap();
    let garbage = p("garbage.sig.json");
    let mismatch = "does not match its signature";
    for (model, bundle, extra, reason) in [
        ("tampered.onnx", "sample-onnx.sig.json", vec!["--signer-key", &publisher], mismatch),
        ("tampered.onnx", "sample-onnx-shards.sig.json", vec!["--signer-key", &publisher], mismatch),
        (
            "model.onnx",
            "sample-onnx.sig.json",
            vec!["--signer-key", &other],
            "not signed by the pinned signer",
        ),
        (
            "model.onnx",
            "sample-onnx-shards.sig.json",
            vec!["--signer-key", &publisher, "--shard-size", "2097152"],
            "shard",
        ),
    ] {
        let out = seal(model, "t.sealed", bundle, &extra);
        assert_eq!(out.status.code(), Some(2), "{model} {bundle} {extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(reason), "{model} {bundle} {extra:?}: {}", stderr(&out));
    }
    let out = nacre(&[
        "seal",
        &p("model.onnx"),
        "--out",
        &p("t.sealed"),
        "--key-out",
        &p("t.sealed.key"),
        "--signature",
        &garbage,
        "--signer-key",
        &publisher,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!dir.join("t.sealed").exists() && !dir.join("t.sealed.key").exists());

    // The shard bundle's model: the header carries the bundle and its 1 MiB sharding, and the
    // identity is what `nacre model digest` computes from the plaintext alone.
    let sealed = "sample-onnx-shards.sig.json.sealed";
    let file = std::fs::File::open(dir.join(sealed)).unwrap();
    let (header, _) = nacre_sealed::Header::read(&mut std::io::BufReader::new(file)).unwrap();
    assert_eq!(header.shard_size, Some(1 << 20));
    let bundle = std::fs::read(fx("sample-onnx-shards.sig.json")).unwrap();
    assert_eq!(header.signature_bundle.as_deref(), Some(&bundle[..]));
    let out = nacre(&["model", "digest", &p("model.onnx"), "--shard-size", "1048576", "--hex"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex::encode(header.model_identity));

    // A service whose policies name the publisher's key, or another key.
    let svc = serve(&dir.join("svc"));
    let ca = svc.dir.join("ca.pem").display().to_string();
    let token = svc.dir.join("admin.token").display().to_string();
    for (name, key) in [("publisher", "publisher.pub.pem"), ("other", "other.pub.pem")] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n\n[[signers]]\npublic_key_pem = \"\"\"\n{}\"\"\"\n",
                "5a".repeat(48),
                std::fs::read_to_string(fx(key)).unwrap()
            ),
        )
        .unwrap();
    }
    let add = |policy: &str, key: &str, sealed: Option<&str>| {
        let (key, policy) = (p(key), p(policy));
        let mut args = vec!["attestation", "keys", "add", "--key-file", &key, "--policy", &policy];
        args.extend(["--url", &svc.url, "--ca", &ca, "--token-file", &token]);
        let sealed = sealed.map(p);
        if let Some(s) = &sealed {
            args.extend(["--sealed", s]);
        }
        nacre(&args)
    };
    let key = format!("{sealed}.key");
    // No model named: the policy's signers cannot be checked.
    let out = add("publisher.toml", &key, None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("signature_required"), "{}", stderr(&out));
    // Another publisher's key in the policy.
    let out = add("other.toml", &key, Some(sealed));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("untrusted_signer"), "{}", stderr(&out));
    // A sealed model the key file does not open (sealed under another key).
    let out = add("publisher.toml", &key, Some("sample-onnx.sig.json.sealed"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not opened with the key file's key"), "{}", stderr(&out));
    // The publisher's policy and its own sealed model: registered, and the list says who signed.
    let out = add("publisher.toml", &key, Some(sealed));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = nacre(&["attestation", "keys", "list", "--url", &svc.url, "--ca", &ca, "--token-file", &token]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listed.contains(&hex::encode(header.model_identity)), "{listed}");
    assert!(listed.contains("\"signer\": \"key:sha256:"), "{listed}");
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nacre doctor` against a real service: a clean configuration passes (a host without a TEE
/// is a warning, not unsafe); a release policy open to simulated evidence, a key file readable
/// by others and a service that does not answer are each unsafe (exit 1), named.
#[test]
fn doctor_names_what_is_unsafe() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("nacre-doctor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let svc = serve(&dir.join("svc"));
    let config = svc.dir.join("config.toml").display().to_string();
    let ca = svc.dir.join("ca.pem").display().to_string();
    let token = svc.dir.join("admin.token").display().to_string();
    let url = svc.url.clone();
    let doctor = |extra: &[&str]| {
        let mut args = vec!["doctor", "--json", "--service-config", &config, "--url", &url, "--ca", &ca];
        args.extend_from_slice(extra);
        let out = nacre(&args);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), doc)
    };
    let unsafe_checks = |doc: &serde_json::Value| -> Vec<String> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["level"] == "unsafe")
            .map(|f| format!("{}: {}", f["check"].as_str().unwrap(), f["detail"].as_str().unwrap()))
            .collect()
    };
    let (code, doc) = doctor(&["--token-file", &token]);
    assert_eq!(code, Some(0), "{doc}");
    assert!(unsafe_checks(&doc).is_empty(), "{doc}");
    assert!(
        doc["findings"].as_array().unwrap().iter().any(|f| f["check"] == "service" && f["level"] == "ok")
    );

    // A key whose policy releases to simulated evidence.
    let p = |n: &str| dir.join(n).display().to_string();
    assert!(nacre(&["model", "sample", "--out", &p("m.onnx")]).status.success());
    std::fs::write(
        dir.join("sim.toml"),
        format!("insecure_sim = true\n[appraisal.sim]\nmeasurements = [\"{}\"]\n", "5a".repeat(48)),
    )
    .unwrap();
    let out = nacre(&[
        "seal",
        &p("m.onnx"),
        "--out",
        &p("m.sealed"),
        "--key-id",
        "dev",
        "--register",
        &svc.url,
        "--ca",
        &ca,
        "--token-file",
        &token,
        "--policy",
        &p("sim.toml"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, doc) = doctor(&["--token-file", &token]);
    assert_eq!(code, Some(1), "{doc}");
    let found = unsafe_checks(&doc);
    assert!(found.iter().any(|f| f.starts_with("release_policies: key dev: insecure_sim")), "{found:?}");

    // This platform's firmware TCB (a real Genoa report: bootloader 10, tee 0, snp 23,
    // microcode 84) against SNP release policies' floors: met, and one it is below.
    let genoa = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors/snp/genoa-v3-azure-trustee/report.bin");
    for (key_id, microcode) in [("snp-met", 84), ("snp-above", 200)] {
        let keyfile = p(&format!("{key_id}.key"));
        let out = nacre(&[
            "seal",
            &p("m.onnx"),
            "--out",
            &p(&format!("{key_id}.sealed")),
            "--key-id",
            key_id,
            "--key-out",
            &keyfile,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let policy = p(&format!("{key_id}.toml"));
        std::fs::write(
            &policy,
            format!(
                "[appraisal.snp]\nmeasurements = [\"{}\"]\nmin_tcb = {{ bootloader = 10, tee = 0, snp = 23, microcode = {microcode} }}\n",
                "ab".repeat(48)
            ),
        )
        .unwrap();
        let out = nacre(&[
            "attestation",
            "keys",
            "add",
            "--key-file",
            &keyfile,
            "--policy",
            &policy,
            "--url",
            &url,
            "--ca",
            &ca,
            "--token-file",
            &token,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (code, doc) = doctor(&["--token-file", &token, "--snp-report", genoa.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{doc}");
    let findings = doc["findings"].as_array().unwrap();
    let tcb = |level: &str, key: &str| {
        findings.iter().any(|f| {
            f["check"] == "firmware_tcb" && f["level"] == level && f["detail"].as_str().unwrap().contains(key)
        })
    };
    assert!(tcb("ok", "key snp-met: this platform meets"), "{doc}");
    assert!(
        tcb(
            "unsafe",
            "key snp-above: this platform (fmc 0 bootloader 10 tee 0 snp 23 microcode 84) is below"
        ),
        "{doc}"
    );
    assert!(
        findings.iter().any(|f| f["check"] == "firmware_tcb"
            && f["detail"] == "Genoa: reported TCB fmc 0 bootloader 10 tee 0 snp 23 microcode 84"),
        "{doc}"
    );

    // The result-signing key made readable by others.
    let key = std::fs::read_to_string(&config).unwrap();
    let result_key = key
        .lines()
        .find_map(|l| l.strip_prefix("result_signing_key = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    let result_key = svc.dir.join(result_key);
    std::fs::set_permissions(&result_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, doc) = doctor(&[]);
    assert_eq!(code, Some(1), "{doc}");
    assert!(
        unsafe_checks(&doc).iter().any(|f| f.starts_with("service_result_key") && f.contains("644")),
        "{doc}"
    );
    std::fs::set_permissions(&result_key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The service gone.
    drop(svc);
    let (code, doc) = doctor(&[]);
    assert_eq!(code, Some(1), "{doc}");
    assert!(unsafe_checks(&doc).iter().any(|f| f.starts_with("service: ")), "{doc}");
    let _ = std::fs::remove_dir_all(&dir);
}
