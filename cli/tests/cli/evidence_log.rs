//! `nacre evidence show|verify --event-log`: a TD's event log listed, replayed and refused when
//! it does not match the quote (issue 13, the event log). The quote is a real vector read from
//! ../shared/vectors; the logs are the published ones in nacre-wire's test data.

use std::path::PathBuf;
use std::process::{Command, Output};

fn nacre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre")).args(args).output().unwrap()
}

fn path(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel).display().to_string()
}

/// The trustee debug TD (RTMR0 e940…, RTMR1 559c…, RTMR2/3 zero), verified at its vector time.
const QUOTE: &str = "../../shared/vectors/tdx/x-v4-50806f-debug-trustee/quote.bin";
const COLLATERAL: &str = "../../shared/vectors/tdx/x-v4-50806f-debug-trustee/collateral.json";
const AT: &str = "2023-06-28T08:00:00Z";
const OVMF_LOG: &str = "../attestation/wire/tests/data/ccel/CCEL_data_ovmf";
const TD_SHIM_LOG: &str = "../attestation/wire/tests/data/ccel/CCEL_data";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn show_lists_the_events_and_which_register_differs() {
    let out = nacre(&["evidence", "show", "--tee", "tdx", &path(QUOTE), "--event-log", &path(OVMF_LOG)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    // Every event, with its register, type, digest and description.
    assert!(text.contains("#19  RTMR1  EV_EFI_ACTION"), "{text}");
    assert!(text.contains("Exit Boot Services Returned with Success"), "{text}");
    assert!(text.contains("SecureBoot (8be4df61-93ca-11d2-aa0d-00e098032b8c, 0 bytes)"), "{text}");
    // A label the digest does not cover is bracketed.
    assert!(text.contains("[ACPI DATA]"), "{text}");
    // This log is not this TD's: the replay names the registers that differ.
    assert!(text.contains("RTMR0 8566f998"), "{text}");
    assert!(text.contains("RTMR1 775b9f6b") && text.contains("DIFFERS from the quote"), "{text}");
    let rtmr3 = text.lines().find(|l| l.contains("RTMR3 0000")).unwrap();
    assert!(rtmr3.ends_with("= quote"), "{rtmr3}");
}

#[test]
fn show_refuses_a_malformed_log() {
    let dir = std::env::temp_dir().join(format!("nacre-cli-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let truncated = dir.join("truncated");
    std::fs::write(&truncated, &std::fs::read(path(OVMF_LOG)).unwrap()[..2000]).unwrap();
    let out = nacre(&[
        "evidence",
        "show",
        "--tee",
        "tdx",
        &path(QUOTE),
        "--event-log",
        truncated.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("event log"), "{out:?}");
    // An SNP report has no event log.
    let snp = path("../../shared/vectors/snp/milan-v2-virtee-sev/report.bin");
    assert_eq!(
        nacre(&["evidence", "show", "--tee", "snp", &snp, "--event-log", &path(OVMF_LOG)]).status.code(),
        Some(2)
    );
}

fn verify(extra: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("nacre-cli-log-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, "[tdx]\nallow_debug = true\n").unwrap();
    let (quote, collateral) = (path(QUOTE), path(COLLATERAL));
    let mut args =
        vec!["evidence", "verify", "--tee", "tdx", "--evidence", &quote, "--collateral", &collateral];
    let policy = policy.display().to_string();
    args.extend(["--policy", &policy, "--at", AT, "--json"]);
    args.extend_from_slice(extra);
    nacre(&args)
}

#[test]
fn verify_refuses_a_log_that_does_not_match_the_quote() {
    let out = verify(&["--event-log", &path(TD_SHIM_LOG)]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verdict"], "reject");
    assert_eq!(j["check"], "event_log");
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("does not match the quote") && reason.contains("RTMR0"), "{reason}");
    assert!(
        reason.contains(
            "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288"
        ),
        "{reason}"
    );
    assert!(j["hint"].as_str().unwrap().contains("--event-log"));
}

#[test]
fn verify_without_a_log_accepts_with_a_warning() {
    let out = verify(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verdict"], "accept");
    assert!(j.get("event_log").is_none());
    let warnings = j["warnings"].to_string();
    assert!(warnings.contains("no TDX event log"), "{warnings}");
}
