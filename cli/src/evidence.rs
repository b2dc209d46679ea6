//! `nacre evidence verify|show`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use nacre_verifier::claims::PlatformClaims;
use nacre_verifier::tdx::collateral_from_json;
use nacre_verifier::{
    Appraiser, CertSet, Claims, ExpectedReportData, Policy, SnpEvidence, SnpRoots, SnpVerifier, TdReport,
    TdxEvidence, TdxVerifier, VerifyError,
};
use nacre_wire::snp::SnpReport;
use serde_json::{Value, json};

use crate::{TeeArg, VerifyArgs};

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn now_or(at: Option<&str>) -> anyhow::Result<i64> {
    match at {
        None => Ok(time::OffsetDateTime::now_utc().unix_timestamp()),
        Some(s) => Ok(time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--at {s:?} is not an RFC 3339 time"))?
            .unix_timestamp()),
    }
}

/// Usage and I/O problems are errors (exit 2); the evidence's fate is the verdict (0 or 1).
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let now = now_or(args.at.as_deref())?;
    let mut policy = match &args.policy {
        Some(p) => Policy::from_toml(&String::from_utf8(read(p)?).context("policy is not UTF-8")?)
            .with_context(|| format!("policy {}", p.display()))?,
        None => Policy::default(),
    };
    if args.allow_missing_crl {
        policy.insecure_allow_missing_crl = true;
    }
    let expected = match &args.expect_report_data {
        None => ExpectedReportData::InsecureUnbound,
        Some(h) => {
            let mut rd = [0u8; 64];
            hex::decode_to_slice(h.trim(), &mut rd).context("--expect-report-data must be 128 hex digits")?;
            ExpectedReportData::Exact(rd)
        }
    };
    let evidence = read(&args.evidence)?;
    let appraiser = Appraiser::new(policy);
    let tee = args.tee;
    let result = match tee {
        TeeArg::Snp | TeeArg::Sim => {
            if args.collateral.is_some() {
                bail!("--collateral is for TDX; SNP endorsements go in --certs");
            }
            let roots = match (tee, &args.insecure_sim_root) {
                (TeeArg::Sim, Some(root)) => {
                    let mut set = CertSet::default();
                    set.add(&read(root)?).with_context(|| format!("{}", root.display()))?;
                    let [root_der] = set.certs.as_slice() else {
                        bail!("--insecure-sim-root must hold one certificate")
                    };
                    SnpRoots::insecure_sim(root_der)?
                }
                (TeeArg::Sim, None) => bail!(
                    "--tee sim needs --insecure-sim-root ROOT.pem (the sim root is never trusted implicitly)"
                ),
                (_, Some(_)) => bail!("--insecure-sim-root is only valid with --tee sim"),
                (_, None) => SnpRoots::Amd,
            };
            let mut certs = CertSet::default();
            for path in &args.certs {
                certs.add(&read(path)?).with_context(|| format!("{}", path.display()))?;
            }
            let verifier = SnpVerifier::new(roots);
            appraiser.appraise(&verifier, SnpEvidence { report: &evidence, certs: &certs }, expected, now)
        }
        TeeArg::Tdx => {
            if !args.certs.is_empty() || args.insecure_sim_root.is_some() {
                bail!(
                    "--certs and --insecure-sim-root are not used with --tee tdx (the PCK chain is in the quote)"
                );
            }
            let path = args.collateral.as_deref().context("--tee tdx needs --collateral COLLATERAL.json")?;
            let collateral =
                collateral_from_json(&read(path)?).with_context(|| format!("{}", path.display()))?;
            appraiser.appraise(
                &TdxVerifier::new(),
                TdxEvidence { quote: &evidence, collateral: &collateral, event_log: None },
                expected,
                now,
            )
        }
    };
    let tee_name = tee_name(tee);
    let (out, code) = match result {
        Ok(v) => (accept_json(&v), ExitCode::SUCCESS),
        Err(e) => (reject_json(tee_name, &e), ExitCode::from(1)),
    };
    if args.json {
        println!("{out}");
    } else {
        print_human(&out);
    }
    Ok(code)
}

fn tee_name(tee: TeeArg) -> &'static str {
    match tee {
        TeeArg::Snp => "snp",
        TeeArg::Tdx => "tdx",
        TeeArg::Sim => "sim",
    }
}

fn reject_json(tee: &str, e: &VerifyError) -> Value {
    json!({ "verdict": "reject", "tee": tee, "check": e.check(), "reason": e.to_string() })
}

fn accept_json(c: &Claims) -> Value {
    let mut out = json!({
        "verdict": "accept",
        "tee": c.tee.as_str(),
        "report_data": hex::encode(c.report_data),
        "debug": c.debug,
        "warnings": c.warnings,
    });
    match &c.platform {
        PlatformClaims::Snp(s) => {
            let r = &s.report;
            let tcb = |t: &nacre_wire::snp::TcbVersion| json!({"fmc": t.fmc, "bootloader": t.bootloader, "tee": t.tee, "snp": t.snp, "microcode": t.microcode});
            out["measurement"] = json!(hex::encode(r.measurement));
            out["product"] = json!(s.product.name());
            out["report_version"] = json!(r.version);
            out["signing_key"] = json!(format!("{:?}", r.signing_key).to_uppercase());
            out["vmpl"] = json!(r.vmpl);
            out["guest_svn"] = json!(r.guest_svn);
            out["policy"] = json!(format!("{:#x}", r.policy));
            out["host_data"] = json!(hex::encode(r.host_data));
            out["chip_id"] = json!(hex::encode(r.chip_id));
            out["id_key_digest"] = json!(hex::encode(r.id_key_digest));
            out["reported_tcb"] = tcb(&s.reported_tcb);
            out["committed_tcb"] = tcb(&s.committed_tcb);
            out["launch_tcb"] = tcb(&s.launch_tcb);
            out["crl_checked"] = json!(s.crl_checked);
        }
        PlatformClaims::Tdx(t) => {
            td_json(&mut out, &t.td);
            out["tcb_status"] = json!(t.tcb_status.as_str());
            out["advisory_ids"] = json!(t.advisory_ids);
        }
    }
    out
}

fn td_json(out: &mut Value, td: &TdReport) {
    out["quote_version"] = json!(td.quote_version);
    out["mrtd"] = json!(hex::encode(td.mrtd));
    out["rtmr"] = json!(td.rtmr.iter().map(hex::encode).collect::<Vec<_>>());
    out["report_data"] = json!(hex::encode(td.report_data));
    out["mrconfigid"] = json!(hex::encode(td.mrconfigid));
    out["mrowner"] = json!(hex::encode(td.mrowner));
    out["mrownerconfig"] = json!(hex::encode(td.mrownerconfig));
    out["mrseam"] = json!(hex::encode(td.mrseam));
    out["td_attributes"] = json!(hex::encode(td.td_attributes));
    out["xfam"] = json!(hex::encode(td.xfam));
    out["tee_tcb_svn"] = json!(hex::encode(td.tee_tcb_svn));
    out["debug"] = json!(td.debug());
}

fn print_human(v: &Value) {
    let Value::Object(map) = v else { return };
    for (k, val) in map {
        match val {
            Value::String(s) => println!("{k:<16} {s}"),
            Value::Array(items) if items.is_empty() => println!("{k:<16} -"),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let label = if i == 0 { k.as_str() } else { "" };
                    println!("{label:<16} {}", item.as_str().map_or_else(|| item.to_string(), str::to_owned));
                }
            }
            other => println!("{k:<16} {other}"),
        }
    }
}

/// Prints the fields of unverified evidence; malformed input is a reject (exit 1).
pub fn show(tee: TeeArg, file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let parsed = match tee {
        TeeArg::Snp | TeeArg::Sim => {
            SnpReport::parse(&bytes).map(|r| snp_show(&r.report)).map_err(|e| e.to_string())
        }
        TeeArg::Tdx => nacre_verifier::tdx::parse_unverified(&bytes)
            .map(|td| {
                let mut out = json!({});
                td_json(&mut out, &td);
                out
            })
            .map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(mut out) => {
            out["verified"] = json!("NO - fields as parsed, nothing checked");
            print_human(&out);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("malformed {}: {e}", tee_name(tee));
            Ok(ExitCode::from(1))
        }
    }
}

fn snp_show(r: &SnpReport) -> Value {
    json!({
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": format!("{:#x}", r.policy),
        "debug_allowed": r.debug_allowed(),
        "vmpl": r.vmpl,
        "signing_key": format!("{:?}", r.signing_key).to_uppercase(),
        "cpuid": r.cpuid.map(|c| format!("family {:#x} model {:#x} stepping {:#x}", c.family, c.model, c.stepping)),
        "measurement": hex::encode(r.measurement),
        "report_data": hex::encode(r.report_data),
        "host_data": hex::encode(r.host_data),
        "id_key_digest": hex::encode(r.id_key_digest),
        "author_key_digest": hex::encode(r.author_key_digest),
        "chip_id": hex::encode(r.chip_id),
        "reported_tcb_raw": format!("{:016x}", r.reported_tcb.0),
        "committed_tcb_raw": format!("{:016x}", r.committed_tcb.0),
        "launch_tcb_raw": format!("{:016x}", r.launch_tcb.0),
        "current_tcb_raw": format!("{:016x}", r.current_tcb.0),
        "platform_info": format!("{:#x}", r.platform_info),
        "firmware": format!("{}.{} build {}", r.current_version.major, r.current_version.minor, r.current_version.build),
    })
}
