//! `nacre verify URL` and `nacre infer URL`: the verifying client. Both verify the enclave's
//! attested certificate and a fresh channel-bound attestation under `--policy` before anything
//! else is sent; `infer` then sends the request.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use nacre_client::proxy::{Proxy, ProxyConfig, ProxyError};
use nacre_client::{AttestedSession, ClientPolicy, Verification};
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

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The enclave, `https://HOST:PORT`.
    pub url: String,
    #[arg(long)]
    pub policy: PathBuf,
    /// Where local clients connect: a loopback address (plain HTTP/1.1, and HTTP/2 prior
    /// knowledge as gRPC's insecure channels speak it).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// A file holding the proxy's own token: local clients must send
    /// `Proxy-Authorization: Bearer TOKEN` (gRPC: `proxy-authorization` metadata).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// A file holding the enclave's inference token, added to requests that carry no
    /// `Authorization` of their own.
    #[arg(long)]
    pub enclave_token_file: Option<PathBuf>,
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

pub fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let policy = ClientPolicy::load(&args.policy)?;
    let rt = runtime()?;
    let (report, code) = match rt.block_on(AttestedSession::connect(&args.url, &policy)) {
        Ok(session) => (Verification::accepted(&args.url, &policy, &session), ExitCode::SUCCESS),
        Err(e) => (Verification::refused(&args.url, &e), ExitCode::from(1)),
    };
    if args.json {
        println!("{}", report.document);
    } else {
        print!("{report}");
    }
    Ok(code)
}

pub fn proxy(args: ProxyArgs) -> Result<ExitCode> {
    let token = args.token_file.as_deref().map(read_token_file).transpose()?;
    let upstream_token = args.enclave_token_file.as_deref().map(read_token_file).transpose()?;
    let policy = ClientPolicy::load(&args.policy)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        // Bound before the enclave is contacted: a busy or non-loopback address fails first.
        let listener = nacre_client::proxy::bind_loopback(args.listen).await?;
        let config = ProxyConfig {
            upstream: args.url.clone(),
            policy,
            token: token.as_ref().map(|t| t.as_str().to_owned()),
            upstream_token: upstream_token.as_ref().map(|t| t.as_str().to_owned()),
        };
        let (proxy, verification) = match Proxy::start(config).await {
            Ok(started) => started,
            Err(ProxyError::Refused(refusal)) => {
                print!("{refusal}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e.into()),
        };
        print!("{verification}");
        let local = listener.local_addr()?;
        println!("nacre proxy: listening on http://{local} (HTTP/1.1 and gRPC), forwarding to {}", args.url);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        proxy.serve(listener, shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Reads the request and the policy, verifies the enclave (nothing is sent before both
/// attestations pass), then sends the request to `/infer` or `/explain`.
fn send_request(args: &InferArgs, explain: bool) -> Result<serde_json::Value> {
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
    Ok(rt.block_on(async {
        let mut session = AttestedSession::connect(&args.url, &policy).await?;
        if let Some(t) = &token {
            session = session.with_token(t.as_str());
        }
        if explain {
            session.explain(&args.model, &request).await
        } else {
            session.infer(&args.model, &request).await
        }
    })?)
}

/// `nacre explain`: the enclave's KernelSHAP attributions of one row, largest first.
pub fn explain(args: InferArgs) -> Result<ExitCode> {
    let response = send_request(&args, true)?;
    if args.json {
        println!("{response}");
        return Ok(ExitCode::SUCCESS);
    }
    let names: Vec<&str> =
        response["features"].as_array().into_iter().flatten().map(|f| f.as_str().unwrap_or("?")).collect();
    println!(
        "model {} (attested): output {}, {} model evaluations ({} coalitions{}), charged to this token's budget",
        response["model_name"].as_str().unwrap_or(&args.model),
        response["output"].as_str().unwrap_or("?"),
        response["evaluations"],
        response["coalitions"],
        if response["exact"].as_bool() == Some(true) { ", every one: exact" } else { ", sampled" }
    );
    for (k, attributions) in response["attributions"].as_array().into_iter().flatten().enumerate() {
        let base = response["base_value"][k].as_f64().unwrap_or(f64::NAN);
        let value = response["value"][k].as_f64().unwrap_or(f64::NAN);
        println!("  value[{k}] {value:.6} = base {base:.6} + Σ attributions {:+.6}", value - base);
        let mut ranked: Vec<(usize, f64)> = attributions
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(j, v)| (j, v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        ranked.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        for (j, a) in ranked.iter().take(10) {
            println!("    {:<24} {a:+.6}", names.get(*j).copied().unwrap_or("?"));
        }
        if ranked.len() > 10 {
            println!("    … {} features in all", ranked.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn infer(args: InferArgs) -> Result<ExitCode> {
    let response = send_request(&args, false)?;
    if args.json {
        println!("{response}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("model {} (attested)", response["model_name"].as_str().unwrap_or(&args.model));
    if let Some(finding) = response["parameters"]["nacre_guard"].as_str() {
        let score = response["parameters"]["nacre_ood_score"].as_f64();
        println!(
            "  flagged by the model's guard: {finding}{}",
            score.map(|s| format!(" (squared distance {s:.1})")).unwrap_or_default()
        );
    }
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
