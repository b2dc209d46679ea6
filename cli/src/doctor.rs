//! `nacre doctor`: the posture of a host and of the attestation service it relies on, in one
//! report (Azure Security Center's job, for Nacre): TEE capability, insecure options in force
//! (the simulated-TEE root, missing-CRL opt-outs, debug guests, unpinned measurements, key
//! files readable by others), the pinned kernel, TCB floors, and whether the service answers.
//! Exit 1 when anything is unsafe, 0 otherwise (warnings included), 2 on usage errors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use nacre_attestation_service::config::Config;
use nacre_attestation_service::policy::ReleasePolicy;
use nacre_host::probe;
use nacre_host::spec::Backend;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The attestation service's config.toml (its trust roots and key files are checked).
    #[arg(long)]
    service_config: Option<PathBuf>,
    /// The attestation service's URL: checked for an answer, and with --token-file (an admin or
    /// auditor token) every key's release policy is checked too.
    #[arg(long, requires = "ca")]
    url: Option<String>,
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, requires = "url")]
    token_file: Option<PathBuf>,
    /// An SEV-SNP report from a guest on this host (raw 1,184 bytes): its REPORTED_TCB is this
    /// platform's firmware, checked against every release policy's floor (with --token-file).
    /// Parsed strictly but not verified: it is the operator's own evidence.
    #[arg(long)]
    snp_report: Option<PathBuf>,
    /// Where `nacre image build` keeps the pinned kernel (default: $XDG_CACHE_HOME/nacre or
    /// ~/.cache/nacre).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// One JSON object instead of lines.
    #[arg(long)]
    json: bool,
    /// Print only this node's Kubernetes labels, one `key=value` a line (none without a TEE),
    /// for `kubectl label node` or a Node Feature Discovery local feature file; see
    /// docs/kubernetes.md.
    #[arg(long, conflicts_with_all = ["service_config", "url", "snp_report", "json"])]
    node_labels: bool,
    /// Where the host's root file system is mounted, when probing from a container (its
    /// `dev/` and `sys/module/` are read). Default `/`.
    #[arg(long, default_value = "/", requires = "node_labels")]
    host_root: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Level {
    Ok,
    Info,
    Warn,
    Unsafe,
}

#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    level: Level,
    detail: String,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: &'static str, level: Level, detail: impl Into<String>) {
        self.0.push(Finding { check, level, detail: detail.into() });
    }
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("nacre")
}

fn tee(r: &mut Report) {
    let host = probe::Host::default();
    let mut any = false;
    for backend in [Backend::Snp, Backend::Tdx] {
        let missing = probe::missing(&host, backend);
        if missing.is_empty() {
            any = true;
            r.add("tee", Level::Ok, format!("{} guests can launch", backend.as_str()));
        } else {
            r.add("tee", Level::Info, format!("no {}: {}", backend.as_str(), missing.join("; ")));
        }
    }
    if !any {
        r.add(
            "tee",
            Level::Warn,
            "no hardware TEE here: only simulated guests can run, and they protect nothing from this host",
        );
    }
}

/// This platform's firmware TCB, from a guest's report: decoded by the product's layout.
fn platform_tcb(path: &Path) -> Result<(nacre_wire::snp::Product, nacre_wire::snp::TcbVersion)> {
    use nacre_wire::snp::{Product, SnpReport};
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let received = SnpReport::parse(&bytes).with_context(|| path.display().to_string())?;
    let report = &received.report;
    let cpuid = report.cpuid.with_context(|| {
        format!("{}: a version-{} report names no CPU (v3+ needed)", path.display(), report.version)
    })?;
    let product = Product::from_cpuid(cpuid.family, cpuid.model).with_context(|| {
        format!(
            "{}: CPU family {:#x} model {:#x} is not a known SNP product",
            path.display(),
            cpuid.family,
            cpuid.model
        )
    })?;
    let tcb = report.reported_tcb.decode(product.tcb_layout()).with_context(|| path.display().to_string())?;
    Ok((product, tcb))
}

fn tcb_text(t: &nacre_wire::snp::TcbVersion) -> String {
    format!("fmc {} bootloader {} tee {} snp {} microcode {}", t.fmc, t.bootloader, t.tee, t.snp, t.microcode)
}

/// A file holding a secret must not be readable by group or others.
fn private(r: &mut Report, what: &'static str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => r.add(
            what,
            Level::Unsafe,
            format!(
                "{} has mode {:o}: group or others can read it (chmod 600)",
                path.display(),
                m.permissions().mode() & 0o777
            ),
        ),
        Ok(_) => r.add(what, Level::Ok, format!("{} is private (0600)", path.display())),
        Err(e) => r.add(what, Level::Unsafe, format!("{}: {e}", path.display())),
    }
}

fn service_config(r: &mut Report, path: &Path) -> Result<()> {
    let config = Config::load(path).with_context(|| path.display().to_string())?;
    match &config.insecure_sim_root {
        Some(root) => r.add(
            "service_trust",
            Level::Unsafe,
            format!(
                "insecure_sim_root = {}: the service accepts simulated-TEE evidence (development only)",
                root.display()
            ),
        ),
        None => r.add("service_trust", Level::Ok, "no simulated-TEE root: only AMD and Intel roots"),
    }
    match config.database_transport_risk() {
        Some(risk) => r.add("service_database", Level::Warn, risk),
        None => r.add("service_database", Level::Ok, "local, or reached with a verified TLS certificate"),
    }
    if let Some(f) = &config.master_key_file {
        private(r, "service_master_key", f);
    }
    private(r, "service_result_key", &config.result_signing_key);
    private(r, "service_log_key", &config.log_signing_key);
    private(r, "service_tls_key", &config.tls_key);
    if config.trusted_image_signers.is_empty() {
        r.add(
            "service_reference_values",
            Level::Info,
            "no trusted image signers: reference values cannot be imported",
        );
    }
    Ok(())
}

fn policies(
    r: &mut Report,
    keys: &[nacre_protocol::messages::KeyInfo],
    platform: Option<(nacre_wire::snp::Product, nacre_wire::snp::TcbVersion)>,
) {
    if keys.is_empty() {
        r.add("release_policies", Level::Info, "no keys registered");
    }
    for k in keys {
        let policy = match ReleasePolicy::parse(&k.policy) {
            Ok(p) => p,
            Err(e) => {
                r.add(
                    "release_policies",
                    Level::Unsafe,
                    format!("key {}: the policy does not parse: {e}", k.key_id),
                );
                continue;
            }
        };
        if let Some((product, tcb)) = platform {
            match policy.appraiser.policy().snp.min_tcb.as_ref().and_then(|f| f.for_product(product)) {
                Some(floor) if tcb.meets(floor) => r.add(
                    "firmware_tcb",
                    Level::Ok,
                    format!("key {}: this platform meets the floor ({})", k.key_id, tcb_text(floor)),
                ),
                Some(floor) => r.add(
                    "firmware_tcb",
                    Level::Unsafe,
                    format!(
                        "key {}: this platform ({}) is below the floor ({}): its guests get no key; update the firmware",
                        k.key_id,
                        tcb_text(&tcb),
                        tcb_text(floor)
                    ),
                ),
                None => {}
            }
        }
        let mut dangers = policy.appraiser.policy().dangers();
        if policy.insecure_sim {
            dangers.push("insecure_sim = true: the key may be released to simulated-TEE evidence".into());
        }
        if dangers.is_empty() {
            let signers = match policy.signers.len() {
                0 => "no publisher signature required".to_owned(),
                n => format!("{n} publisher signer(s) required"),
            };
            r.add("release_policies", Level::Ok, format!("key {}: nothing insecure; {signers}", k.key_id));
        }
        for d in dangers {
            r.add("release_policies", Level::Unsafe, format!("key {}: {d}", k.key_id));
        }
    }
}

fn kernel(r: &mut Report, cache: &Path) {
    let pin = nacre_images::kernel::pin();
    let release = pin.package.trim_start_matches("linux-image-");
    let vmlinuz =
        cache.join(format!("kernel-{}", pin.version)).join("boot").join(format!("vmlinuz-{release}"));
    match std::fs::read(&vmlinuz) {
        Ok(bytes) => {
            let got = hex::encode(nacre_sealed::identity::sha256(&bytes));
            if got == pin.vmlinuz_sha256 {
                r.add(
                    "kernel_pin",
                    Level::Ok,
                    format!("{} matches the pin ({})", vmlinuz.display(), pin.package),
                );
            } else {
                r.add(
                    "kernel_pin",
                    Level::Unsafe,
                    format!(
                        "{}: SHA-256 {got}, pinned {}: images built from it measure another kernel",
                        vmlinuz.display(),
                        pin.vmlinuz_sha256
                    ),
                );
            }
        }
        Err(_) => r.add(
            "kernel_pin",
            Level::Info,
            format!("{} not fetched yet (nacre image build fetches and checks it)", pin.package),
        ),
    }
}

pub fn doctor(a: DoctorArgs) -> Result<ExitCode> {
    if a.node_labels {
        let (dev, sysfs_module) = (a.host_root.join("dev"), a.host_root.join("sys/module"));
        let host = probe::Host { dev: &dev, sysfs_module: &sysfs_module, ..probe::Host::default() };
        probe::node_labels(&host).iter().for_each(|l| println!("{l}"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut r = Report::default();
    tee(&mut r);
    let platform = match &a.snp_report {
        Some(p) => {
            let (product, tcb) = platform_tcb(p)?;
            r.add(
                "firmware_tcb",
                Level::Info,
                format!("{}: reported TCB {}", product.name(), tcb_text(&tcb)),
            );
            Some((product, tcb))
        }
        None => None,
    };
    kernel(&mut r, &a.cache.clone().unwrap_or_else(default_cache));
    if let Some(path) = &a.service_config {
        service_config(&mut r, path)?;
    }
    if let (Some(url), Some(ca)) = (&a.url, &a.ca) {
        let ca_pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let mut client = nacre_attestation_client::Client::new(url, &ca_pem)?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        match rt.block_on(client.result_key()) {
            Ok(_) => r.add("service", Level::Ok, format!("{url} answers over TLS with the given CA")),
            Err(e) => r.add("service", Level::Unsafe, format!("{url}: {e}")),
        }
        if let Some(t) = &a.token_file {
            let token = std::fs::read_to_string(t).with_context(|| format!("reading {}", t.display()))?;
            client = client.with_token(token.trim().to_owned());
            match rt.block_on(client.list_keys()) {
                Ok(keys) => policies(&mut r, &keys, platform),
                Err(e) => r.add("release_policies", Level::Warn, format!("not read: {e}")),
            }
        }
    }
    let worst = r.0.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    if a.json {
        println!("{}", serde_json::json!({ "verdict": worst, "findings": r.0 }));
    } else {
        for f in &r.0 {
            let tag = match f.level {
                Level::Ok => "ok    ",
                Level::Info => "info  ",
                Level::Warn => "WARN  ",
                Level::Unsafe => "UNSAFE",
            };
            println!("{tag} {:<26} {}", f.check, f.detail);
        }
    }
    Ok(if worst == Level::Unsafe { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
