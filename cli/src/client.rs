//! `nacre verify URL` and `nacre infer URL`: the verifying client. Both verify the enclave's
//! attested certificate and a fresh channel-bound attestation under `--policy` before anything
//! else is sent; `infer` then sends the request.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nacre_client::{AttestedSession, ClientPolicy};
use nacre_verifier::{Claims, PlatformClaims};
use zeroize::Zeroizing;

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
    /// A file holding the bearer token, when the enclave requires one (16–1024 printable ASCII
    /// characters without spaces; one line end is ignored).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the response JSON as the enclave sent it.
    #[arg(long)]
    pub json: bool,
}

/// Bounds of an inference token, bytes. The image carries the token's SHA-256, unsalted, and
/// the host can read the image: the floor keeps a (random) token out of reach of an offline
/// search. The ceiling keeps it far inside the enclave's header limit (64 KiB).
pub(crate) const TOKEN_BYTES: std::ops::RangeInclusive<usize> = 16..=1024;

/// An inference bearer token from a file, read one way for both `nacre infer --token-file` and
/// `nacre image build --inference-token-file`, so that the hash in the image is the hash of
/// what the client sends. One line end (`\n` or `\r\n`) is dropped; what remains must be
/// 16–1024 printable ASCII characters without spaces (an HTTP header value loses surrounding
/// whitespace, so a token with spaces could not be presented as written).
pub(crate) fn read_token_file(path: &Path) -> Result<Zeroizing<String>> {
    let max = *TOKEN_BYTES.end();
    // Room for one byte more than a token and its line end: a longer file is not read further
    // (and the buffer, wiped on drop, never grows and leaves a copy behind).
    let mut raw = Zeroizing::new(Vec::with_capacity(max + 3));
    std::fs::File::open(path)
        .and_then(|f| f.take(max as u64 + 3).read_to_end(&mut raw))
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = raw.strip_suffix(b"\n").map_or(&raw[..], |t| t.strip_suffix(b"\r").unwrap_or(t));
    if token.is_empty() {
        bail!("{}: the token file is empty", path.display());
    }
    if !token.iter().all(|b| b.is_ascii_graphic()) {
        bail!(
            "{}: a token is printable ASCII without spaces, on one line (at most one line end)",
            path.display()
        );
    }
    if token.len() < *TOKEN_BYTES.start() {
        bail!(
            "{}: {} bytes; a token is at least {} (a random one: `head -c 32 /dev/urandom | base64`)",
            path.display(),
            token.len(),
            TOKEN_BYTES.start()
        );
    }
    if token.len() > max {
        bail!("{}: a token is at most {max} bytes", path.display());
    }
    Ok(Zeroizing::new(std::str::from_utf8(token)?.to_owned()))
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
    let token = args.token_file.as_deref().map(read_token_file).transpose()?;
    let policy = ClientPolicy::load(&args.policy)?;
    let text = if args.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the request from standard input")?
    } else {
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let request: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", args.input.display()))?;
    let rt = runtime()?;
    let response = rt.block_on(async {
        // The request is read and parsed first, but nothing is sent before both attestations pass.
        let mut session = AttestedSession::connect(&args.url, &policy).await?;
        if let Some(t) = &token {
            session = session.with_token(t.as_str());
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The token `nacre infer` sends and `nacre image build` hashes, from a file's bytes.
    fn read(name: &str, bytes: &[u8]) -> Result<String> {
        let dir = std::env::temp_dir().join(format!("nacre-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        read_token_file(&path).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn a_token_file_is_one_line_of_16_to_1024_printable_characters() {
        let t = "0123456789abcdef";
        assert_eq!(read("plain", t.as_bytes()).unwrap(), t);
        assert_eq!(read("lf", format!("{t}\n").as_bytes()).unwrap(), t);
        assert_eq!(read("crlf", format!("{t}\r\n").as_bytes()).unwrap(), t);
        let long = "x".repeat(1024);
        assert_eq!(read("longest", format!("{long}\n").as_bytes()).unwrap(), long);
        let (y, z) = ("y".repeat(1025), "z".repeat(1 << 20));
        let refused: &[(&str, &[u8], &str)] = &[
            ("empty", b"", "empty"),
            ("newline", b"\n", "empty"),
            ("short", b"0123456789abcde\n", "15 bytes; a token is at least 16"),
            ("long", y.as_bytes(), "at most 1024"),
            ("huge", z.as_bytes(), "at most 1024"),
            ("two-lines", b"0123456789abcdef\n\n", "printable ASCII"),
            ("leading-space", b" 0123456789abcdef", "printable ASCII"),
            ("trailing-space", b"0123456789abcdef \n", "printable ASCII"),
            ("inner-space", b"01234567 89abcdef", "printable ASCII"),
            ("tab", b"0123456789abcdef\t", "printable ASCII"),
            ("cr", b"0123456789abcdef\r", "printable ASCII"),
            ("utf8", "0123456789abcdéf".as_bytes(), "printable ASCII"),
        ];
        for (name, bytes, reason) in refused {
            let e = format!("{:#}", read(name, bytes).unwrap_err());
            assert!(e.contains(reason), "{name}: {e} should mention {reason:?}");
        }
        let e = format!("{:#}", read_token_file(Path::new("/nonexistent/token")).unwrap_err());
        assert!(e.contains("reading the token file /nonexistent/token"), "{e}");
    }
}
