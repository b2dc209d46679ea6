//! `nacre verify URL` and `nacre infer URL`: the verifying client. Both verify the enclave's
//! attested certificate and a fresh channel-bound attestation under `--policy` before anything
//! else is sent; `infer` then sends the request.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use nacre_client::{AttestedSession, ClientPolicy};
use nacre_verifier::{Claims, PlatformClaims};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The enclave, `https://HOST:PORT`.
    pub url: String,
    /// Client policy (TOML): expected model digest, signed reference values, trust roots,
    /// appraisal (see docs/client.md).
    #[arg(long)]
    pub policy: PathBuf,
    /// Print the verified claims as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// The enclave, `https://HOST:PORT`.
    pub url: String,
    #[arg(long)]
    pub policy: PathBuf,
    /// The model name the enclave serves.
    #[arg(long)]
    pub model: String,
    /// A KServe v2 inference request (JSON), `-` for standard input.
    #[arg(long)]
    pub input: PathBuf,
    /// A file holding the bearer token, when the enclave requires one.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the response JSON as the enclave sent it.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn tcb(t: &nacre_wire::snp::TcbVersion) -> String {
    format!("bootloader {} tee {} snp {} microcode {}", t.bootloader, t.tee, t.snp, t.microcode)
}

fn claims_json(c: &Claims) -> serde_json::Value {
    let mut v = serde_json::json!({
        "tee": c.tee.to_string(),
        "measurement": hex::encode(c.measurement),
        "report_data": hex::encode(c.report_data),
        "debug": c.debug,
        "warnings": c.warnings,
    });
    match &c.platform {
        PlatformClaims::Snp(s) => {
            v["host_data"] = hex::encode(s.report.host_data).into();
            v["chip_id"] = hex::encode(s.report.chip_id).into();
            v["reported_tcb"] = tcb(&s.reported_tcb).into();
            v["crl_checked"] = s.crl_checked.into();
        }
        PlatformClaims::Tdx(t) => {
            v["tcb_status"] = format!("{:?}", t.tcb_status).into();
            v["rtmr"] = t.td.rtmr.iter().map(hex::encode).collect::<Vec<_>>().into();
        }
    }
    v
}

fn session(url: &str, policy: &ClientPolicy) -> Result<(tokio::runtime::Runtime, AttestedSession)> {
    let rt = runtime()?;
    let session = rt.block_on(AttestedSession::connect(url, policy))?;
    Ok((rt, session))
}

pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let policy = ClientPolicy::load(&args.policy)?;
    let session = match session(&args.url, &policy) {
        Ok((_, s)) => s,
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({"verdict": "reject", "reason": format!("{e:#}")}));
            } else {
                println!("REFUSED: {e:#}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let (peer, fresh) = (session.peer(), session.fresh());
    if args.json {
        let out = serde_json::json!({
            "verdict": "accept",
            "url": args.url,
            "reference_values": policy.reference_values,
            "model_digest": hex::encode(peer.model_digest()),
            "tls_spki_sha256": hex::encode(peer.spki_sha256()),
            "certificate_sha256": hex::encode(peer.certificate_sha256()),
            "certificate": claims_json(peer.claims().get()),
            "fresh": claims_json(fresh.get()),
        });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let c = peer.claims().get();
    let ok = |what: &str, detail: String| println!("  ✓ {what:<34} {detail}");
    println!("Enclave {} — verified before any input was sent:", args.url);
    ok("TLS 1.3 handshake", "signed with the certificate's key".into());
    ok(
        "evidence signature chain",
        format!("{} ({})", c.tee, if policy.insecure_sim { "INSECURE sim root" } else { "vendor root" }),
    );
    ok("measurement allowed by policy", hex::encode(c.measurement));
    if !policy.reference_values.is_empty() {
        ok("from signed reference values", policy.reference_values.join(", "));
    }
    ok("debug disabled", format!("debug = {}", c.debug));
    if let PlatformClaims::Snp(s) = &c.platform {
        ok("TCB (reported)", tcb(&s.reported_tcb));
        ok("HOST_DATA", hex::encode(s.report.host_data));
    }
    ok("bound TLS key (SPKI SHA-256)", hex::encode(peer.spki_sha256()));
    ok("bound model digest", hex::encode(peer.model_digest()));
    let (nb, na) = peer.validity();
    ok("certificate validity", format!("{nb} .. {na} (Unix seconds)"));
    ok("fresh attestation", "same guest, binds our nonce and this connection's TLS exporter".into());
    let mut warnings: Vec<&String> = c.warnings.iter().chain(&fresh.get().warnings).collect();
    warnings.dedup();
    for w in warnings {
        println!("  ! warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn infer(args: InferArgs) -> Result<ExitCode> {
    let policy = ClientPolicy::load(&args.policy)?;
    let text = if args.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the request from standard input")?
    } else {
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let request: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", args.input.display()))?;
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?.trim().to_owned(),
        ),
        None => None,
    };
    let rt = runtime()?;
    let response = rt.block_on(async {
        // The request is read and parsed first, but nothing is sent before both attestations pass.
        let mut session = AttestedSession::connect(&args.url, &policy).await?;
        if let Some(t) = token {
            session = session.with_token(t);
        }
        session.infer(&args.model, &request).await
    })?;
    if args.json {
        println!("{response}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("model {} (attested)", response["model_name"].as_str().unwrap_or(&args.model));
    for out in response["outputs"].as_array().into_iter().flatten() {
        let shape: Vec<String> =
            out["shape"].as_array().into_iter().flatten().map(|d| d.to_string()).collect();
        println!(
            "  {} [{}] {}",
            out["name"].as_str().unwrap_or("?"),
            shape.join("×"),
            out["datatype"].as_str().unwrap_or("?")
        );
        let data = out["data"].as_array().cloned().unwrap_or_default();
        let row = shape
            .last()
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(data.len().max(1));
        for chunk in data.chunks(row).take(16) {
            let values: Vec<String> =
                chunk.iter().map(|v| format!("{:.6}", v.as_f64().unwrap_or(f64::NAN))).collect();
            println!("    {}", values.join("  "));
        }
        if data.len() / row > 16 {
            println!("    … {} rows in all", data.len() / row);
        }
    }
    Ok(ExitCode::SUCCESS)
}
