#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is the report
//! The `nacre` binary's interface: exit codes, JSON shape, sealing round trips.

// One test binary for the CLI's interface tests (each binary is a link of the whole CLI).
#[path = "cli/evidence_log.rs"]
mod evidence_log;
#[path = "cli/guard.rs"]
mod guard;
#[path = "cli/image_serving.rs"]
mod image_serving;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nacre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre")).args(args).output().unwrap()
}

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

fn v(rel: &str) -> String {
    vectors().join(rel).display().to_string()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nacre-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `nacre evidence verify --tee snp` on a vector's report with the named certificate files,
/// at the vectors' reference time, with `--json` and any `extra` flags.
fn verify_snp(dir: &str, certs: &[&str], extra: &[&str]) -> Output {
    let report = v(&format!("snp/{dir}/report.bin"));
    let certs: Vec<String> = certs.iter().map(|c| v(&format!("snp/{dir}/{c}"))).collect();
    let mut args = vec!["evidence", "verify", "--tee", "snp", "--evidence", report.as_str(), "--certs"];
    args.extend(certs.iter().map(String::as_str));
    args.extend(["--at", "2025-10-01T00:00:00Z", "--json"]);
    args.extend_from_slice(extra);
    nacre(&args)
}

#[test]
fn snp_accept_and_reject_exit_codes_and_json() {
    let out = verify_snp("genoa-v3-azure-trustee", &["vcek.pem", "crl.pem", "ask.pem", "ark.pem"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json(&out);
    assert_eq!(j["verdict"], "accept");
    assert_eq!(j["tee"], "snp");
    assert_eq!(
        j["measurement"],
        "f57dc09a507c6ecd82369bffb600f0003792f4d99bc26e985ec0c266fc34faf3706faf814c9e61065768a6ff917c89ae"
    );
    assert_eq!(j["report_data"].as_str().unwrap().len(), 128);
    assert!(j["warnings"].is_array());

    let out = verify_snp("milan-v2-debug-go-sev-guest", &["ark.pem", "ask.pem", "vcek.der", "crl.pem"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let j = json(&out);
    assert_eq!(j["verdict"], "reject");
    assert_eq!(j["check"], "debug");
    assert!(j["reason"].as_str().unwrap().contains("debug"));
}

#[test]
fn missing_crl_needs_the_explicit_flag() {
    let certs = ["ark.pem", "ask.pem", "vcek.der"];
    let out = verify_snp("turin-v5-oak", &certs, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["check"], "crl");
    let out = verify_snp("turin-v5-oak", &certs, &["--allow-missing-crl"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("insecure_allow_missing_crl"));
}

#[test]
fn tdx_json_has_typed_claims() {
    let d = "tdx/v4-b0c06f-phala";
    let out = nacre(&[
        "evidence",
        "verify",
        "--tee",
        "tdx",
        "--evidence",
        &v(&format!("{d}/quote.bin")),
        "--collateral",
        &v(&format!("{d}/collateral.json")),
        "--at",
        "2025-07-04T10:00:00Z",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let j = json(&out);
    assert_eq!(j["tcb_status"], "UpToDate");
    assert_eq!(j["rtmr"].as_array().unwrap().len(), 4);
    assert_eq!(j["mrtd"].as_str().unwrap().len(), 96);
}

/// Issue 12 §1, issue 13: `nacre evidence verify` cannot be given a policy that pins a real TDX
/// quote's MRTD alone (exit 2, naming the field), and refuses the quote under a launch whose
/// RTMR2 differs, naming the check and the register.
#[test]
fn evidence_verify_refuses_tdx_pinned_by_mrtd_alone() {
    let d = "tdx/v4-b0c06f-phala";
    let dir = tmp("tdx-mrtd-alone");
    let policy = dir.join("policy.toml");
    let mrtd =
        "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
    let verify = |policy: &Path| {
        nacre(&[
            "evidence",
            "verify",
            "--tee",
            "tdx",
            "--evidence",
            &v(&format!("{d}/quote.bin")),
            "--collateral",
            &v(&format!("{d}/collateral.json")),
            "--at",
            "2025-07-04T10:00:00Z",
            "--policy",
            policy.to_str().unwrap(),
            "--json",
        ])
    };
    std::fs::write(&policy, format!("[tdx]\nmrtd = [\"{mrtd}\"]\n")).unwrap();
    let out = verify(&policy);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `mrtd`"));
    // The quote's own RTMR0/1 (as verified without a policy), another RTMR2.
    std::fs::write(&policy, "").unwrap();
    let shown = json(&verify(&policy));
    let rtmr = |i: usize| shown["rtmr"][i].as_str().unwrap().to_owned();
    std::fs::write(
        &policy,
        format!(
            "[[tdx.launches]]\nshape = \"reference TD\"\nmrtd = \"{mrtd}\"\nrtmr0 = \"{}\"\nrtmr1 = \"{}\"\nrtmr2 = \"{}\"\n",
            rtmr(0),
            rtmr(1),
            "00".repeat(48)
        ),
    )
    .unwrap();
    let out = verify(&policy);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json(&out);
    assert_eq!(j["check"], "tdx_launch");
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("reference TD") && reason.contains(&format!("rtmr2 {}", rtmr(2))), "{j}");
    assert!(!reason.contains("rtmr1"), "{j}");
}

/// Issue 12 §1, issue 13: `nacre image build` writes no TDX entry without the RTMR0 of its
/// launch shape: `--tdx-firmware` needs `--tdx-launch`, and a launch without `rtmr0` (or
/// memory, vCPUs, QEMU version) is refused before anything is read or written.
#[test]
fn image_build_writes_no_tdx_reference_value() {
    let dir = tmp("image-tdx");
    let missing = dir.join("absent").display().to_string();
    let build = |tdx: &[&str]| {
        let mut args = vec![
            "image",
            "build",
            "--out",
            &missing,
            "--name",
            "g",
            "--enclave",
            &missing,
            "--service-url",
            "https://127.0.0.1:1",
            "--service-ca",
            &missing,
            "--sealed",
            &missing,
            "--signing-key",
            &missing,
        ];
        args.extend_from_slice(tdx);
        nacre(&args)
    };
    let out = build(&["--tdx-firmware", &missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tdx-launch"));
    let out = build(&["--tdx-firmware", &missing, "--tdx-launch", "memory_mib=2048,vcpus=1,qemu=10.1.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rtmr0 is required"));
    let launch = format!("memory_mib=2048,vcpus=1,qemu=7.2.0,rtmr0={}", "ab".repeat(48));
    let out = build(&["--tdx-firmware", &missing, "--tdx-launch", &launch]);
    assert_eq!(out.status.code(), Some(2), "QEMU before 8 has no TDX");
    assert!(!dir.join("absent").exists(), "nothing was written");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        nacre(&["evidence", "verify", "--tee", "snp", "--evidence", "/nonexistent"]).status.code(),
        Some(2)
    );
    assert_eq!(nacre(&["evidence", "verify", "--tee", "nope", "--evidence", "x"]).status.code(), Some(2));
    let r = v("snp/genoa-v3-azure-trustee/report.bin");
    // The sim root is never implicit.
    assert_eq!(nacre(&["evidence", "verify", "--tee", "sim", "--evidence", &r]).status.code(), Some(2));
    assert_eq!(
        nacre(&["evidence", "verify", "--tee", "snp", "--evidence", &r, "--at", "yesterday"]).status.code(),
        Some(2)
    );
    // Malformed evidence is a verdict, not a usage error.
    let dir = tmp("malformed");
    std::fs::write(dir.join("r.bin"), [0u8; 10]).unwrap();
    let out = nacre(&[
        "evidence",
        "verify",
        "--tee",
        "snp",
        "--evidence",
        dir.join("r.bin").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["check"], "parse");
}

#[test]
fn sim_flow_end_to_end() {
    let dir = tmp("sim");
    let ca = dir.join("ca");
    let ca_s = ca.to_str().unwrap();
    assert!(nacre(&["sim", "ca", "init", "--out", ca_s]).status.success());
    let report = dir.join("r.bin");
    let rd = "ab".repeat(64);
    assert!(
        nacre(&["sim", "report", "--ca", ca_s, "--out", report.to_str().unwrap(), "--report-data", &rd])
            .status
            .success()
    );
    let certs: Vec<String> = ["ark.pem", "ask.pem", "vcek.pem", "crl.pem"]
        .iter()
        .map(|f| ca.join(f).display().to_string())
        .collect();
    let mut args =
        vec!["evidence", "verify", "--tee", "sim", "--evidence", report.to_str().unwrap(), "--certs"];
    args.extend(certs.iter().map(String::as_str));
    let root = ca.join("ark.pem").display().to_string();
    args.extend(["--insecure-sim-root", root.as_str(), "--expect-report-data", rd.as_str(), "--json"]);
    let out = nacre(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INSECURE"));
    assert_eq!(json(&out)["tee"], "sim");
}

fn seal_sample(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let model = dir.join("mlp.onnx");
    assert!(nacre(&["model", "sample", "--out", model.to_str().unwrap()]).status.success());
    let sealed = dir.join("mlp.sealed");
    let key = dir.join("mlp.key");
    let out = nacre(&[
        "seal",
        model.to_str().unwrap(),
        "--out",
        sealed.to_str().unwrap(),
        "--key-out",
        key.to_str().unwrap(),
        "--chunk-size",
        "4096",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (model, sealed, key)
}

#[test]
fn seal_unseal_round_trip_and_tamper() {
    let dir = tmp("seal");
    let (model, sealed, key) = seal_sample(&dir);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o077, 0);
    let out = nacre(&["unseal", sealed.to_str().unwrap(), "--key", key.to_str().unwrap(), "--out", "-"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&model).unwrap());
    // A flipped byte in the body: exit 1, the chunk named, no output file.
    let mut blob = std::fs::read(&sealed).unwrap();
    let last = blob.len() - 20;
    blob[last] ^= 1;
    let bad = dir.join("bad.sealed");
    std::fs::write(&bad, &blob).unwrap();
    let plain = dir.join("plain.onnx");
    let out = nacre(&[
        "unseal",
        bad.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chunk 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!plain.exists());
    // The key is never overwritten.
    let again = nacre(&[
        "seal",
        model.to_str().unwrap(),
        "--out",
        sealed.to_str().unwrap(),
        "--key-out",
        key.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn seal_refuses_what_tract_cannot_load() {
    let dir = tmp("notonnx");
    let junk = dir.join("junk.onnx");
    std::fs::write(&junk, b"definitely not protobuf").unwrap();
    let out = nacre(&[
        "seal",
        junk.to_str().unwrap(),
        "--out",
        dir.join("o").to_str().unwrap(),
        "--key-out",
        dir.join("k").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tract"));
    assert!(!dir.join("o").exists() && !dir.join("k").exists());
}
