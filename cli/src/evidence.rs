//! `nacre evidence verify|show`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use nacre_verifier::claims::{LoggedEvent, PlatformClaims};
use nacre_verifier::tdx::{collateral_from_json, logged_events};
use nacre_verifier::{
    Appraiser, CertSet, Claims, ExpectedReportData, Policy, SnpEvidence, SnpRoots, SnpVerifier, TdReport,
    TdxEvidence, TdxVerifier, VerifyError,
};
use nacre_wire::ccel::EventLog;
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
            if args.collateral.is_some() || args.event_log.is_some() {
                bail!("--collateral and --event-log are for TDX; SNP endorsements go in --certs");
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
            let event_log = args.event_log.as_deref().map(read).transpose()?;
            appraiser.appraise(
                &TdxVerifier::new(),
                TdxEvidence { quote: &evidence, collateral: &collateral, event_log: event_log.as_deref() },
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
    let mut out = json!({ "verdict": "reject", "tee": tee, "check": e.check(), "reason": e.to_string() });
    if e.check() == "event_log" {
        out["hint"] = json!(
            "`nacre evidence show --tee tdx QUOTE --event-log LOG` lists the events and the replay of each register"
        );
    }
    out
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
            if let Some(events) = &t.event_log {
                out["event_log"] = events_json(events);
            }
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

/// The events of a TD's log, one object each: `index`, `rtmr` (null for EV_NO_ACTION, which is
/// logged but extends nothing), `type`, `digest` (SHA-384), `description` (null for binary data)
/// and `description_measured` (whether the digest is of the data the description shows).
fn events_json(events: &[LoggedEvent]) -> Value {
    events
        .iter()
        .map(|e| {
            json!({
                "index": e.index,
                "rtmr": e.rtmr,
                "type": e.event_type_name().map_or_else(|| format!("{:#x}", e.event_type), str::to_owned),
                "digest": hex::encode(e.digest),
                "description": e.description,
                "description_measured": e.data_is_digested,
            })
        })
        .collect()
}

/// One event as a line: `#3  RTMR0  EV_EFI_VARIABLE_DRIVER_CONFIG  <digest>  SecureBoot (...)`.
/// A description the digest does not cover is in brackets: it is the firmware's label, not
/// what was measured.
fn event_line(e: &Value) -> String {
    let rtmr = e["rtmr"].as_u64().map_or_else(|| "-    ".to_owned(), |r| format!("RTMR{r}"));
    let description = match (e["description"].as_str(), e["description_measured"].as_bool()) {
        (Some(d), Some(true)) => d.to_owned(),
        (Some(d), _) => format!("[{d}]"),
        (None, _) => String::new(),
    };
    format!(
        "#{:<3} {rtmr}  {:<34} {}  {description}",
        e["index"].as_u64().unwrap_or_default(),
        e["type"].as_str().unwrap_or(""),
        e["digest"].as_str().unwrap_or("")
    )
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
                    let text = match item {
                        Value::String(s) => s.clone(),
                        Value::Object(_) if item.get("digest").is_some() => event_line(item),
                        other => other.to_string(),
                    };
                    println!("{label:<16} {text}");
                }
            }
            other => println!("{k:<16} {other}"),
        }
    }
}

/// Prints the fields of unverified evidence; malformed input is a reject (exit 1).
pub fn show(tee: TeeArg, file: &Path, event_log: Option<&Path>) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let log = event_log.map(read).transpose()?;
    let parsed = match (tee, log) {
        (TeeArg::Snp | TeeArg::Sim, Some(_)) => bail!("--event-log is for TDX"),
        (TeeArg::Snp | TeeArg::Sim, None) => {
            SnpReport::parse(&bytes).map(|r| snp_show(&r.report)).map_err(|e| e.to_string())
        }
        (TeeArg::Tdx, log) => {
            nacre_verifier::tdx::parse_unverified(&bytes).map_err(|e| e.to_string()).and_then(|td| {
                let mut out = json!({});
                td_json(&mut out, &td);
                if let Some(log) = log {
                    show_event_log(&mut out, &log, &td.rtmr)?;
                }
                Ok(out)
            })
        }
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

/// The log's events and, per register, its replay beside the quote's value: the register that
/// differs is where to look (then the events that extend it).
fn show_event_log(out: &mut Value, log: &[u8], quoted: &[[u8; 48]; 4]) -> Result<(), String> {
    let parsed = EventLog::parse(log).map_err(|e| e.to_string())?;
    let replayed = parsed.replay();
    out["event_log_replay"] = json!(
        (0..4)
            .map(|i| {
                let verdict = if replayed[i] == quoted[i] { "= quote" } else { "DIFFERS from the quote" };
                format!("RTMR{i} {} {verdict}", hex::encode(replayed[i]))
            })
            .collect::<Vec<_>>()
    );
    out["event_log"] = events_json(&logged_events(&parsed));
    Ok(())
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
