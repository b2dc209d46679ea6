//! `nacre attestation …` (the key broker and its admin calls) and `nacre audit …`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nacre_attestation_client::{Client, ModelRegistration};
use nacre_attestation_service::audit::Finding;
use nacre_attestation_service::config::Config;
use nacre_attestation_service::service::Service;
use nacre_attestation_service::store::verify_legacy_chain;
use nacre_protocol::messages::AuditRecord;
use nacre_sealed::{AwsLcGcm, FileRange, KeyFile};

#[derive(Subcommand, Debug)]
pub enum AttestationCmd {
    /// Create a service directory: TLS CA and certificate, master key, result key, tokens, config.
    Init {
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Another name for the TLS certificate (repeatable): an IP address or a DNS name, e.g.
        /// `--san 10.0.2.100`, where sim guests reach the service through the host agent.
        #[arg(long = "san", value_name = "IP|DNS")]
        sans: Vec<String>,
        /// `sqlite://PATH` (default: attestation.db in DIR) or `postgres://…`.
        #[arg(long)]
        database: Option<String>,
        /// INSECURE: accept simulated-TEE evidence under this sim ARK.
        #[arg(long)]
        insecure_sim_root: Option<PathBuf>,
    },
    /// Run the service.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Master-key rotation: re-wrap every data key under the current master key (run after
    /// moving the old key to `previous_master_key_files`; then remove it from there).
    Rewrap {
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage keys (admin token; `list` also takes an auditor token).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Show or set a key's release policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Import or list signed reference values (what release policies name in `reference_values`).
    #[command(subcommand)]
    Reference(ReferenceCmd),
}

#[derive(Args, Debug)]
pub struct Remote {
    /// Service URL, https://HOST:PORT.
    #[arg(long)]
    url: String,
    /// The service's CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// File holding the bearer token.
    #[arg(long)]
    token_file: PathBuf,
}

impl Remote {
    fn client(&self) -> Result<Client> {
        let ca = std::fs::read(&self.ca).with_context(|| format!("reading {}", self.ca.display()))?;
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading {}", self.token_file.display()))?;
        Ok(Client::new(&self.url, &ca)?.with_token(token.trim().to_owned()))
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Register a key file's data key with a release policy (TOML).
    Add {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        policy: PathBuf,
        #[command(flatten)]
        model: SealedModel,
    },
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Add a version (the key file of a re-sealed model) and make it current.
    Rotate {
        #[command(flatten)]
        remote: Remote,
        key_id: String,
        #[arg(long)]
        key_file: PathBuf,
        #[command(flatten)]
        model: SealedModel,
    },
    /// Revoke a key, or one version: no release will ever succeed again.
    Revoke {
        #[command(flatten)]
        remote: Remote,
        key_id: String,
        #[arg(long)]
        version: Option<u32>,
    },
    /// Re-point the current version.
    Rollback {
        #[command(flatten)]
        remote: Remote,
        key_id: String,
        #[arg(long)]
        version: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    Show {
        #[command(flatten)]
        remote: Remote,
        key_id: String,
    },
    Set {
        #[command(flatten)]
        remote: Remote,
        key_id: String,
        #[arg(long)]
        policy: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReferenceCmd {
    /// Import (or replace, by name) reference values written by `nacre image build` (admin
    /// token); the service must trust their signer (`trusted_image_signers`).
    Import {
        #[command(flatten)]
        remote: Remote,
        /// reference-values.json
        #[arg(long)]
        doc: PathBuf,
        /// reference-values.sig
        #[arg(long)]
        sig: PathBuf,
    },
    /// List the imported reference values (admin or auditor token).
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Export every audit record as JSON lines (auditor or admin token).
    Export {
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        out: PathBuf,
    },
    /// Follow the service's transparency log: replay it, refuse a rollback or fork, flag
    /// releases to unreferenced measurements, under revoked keys or unrecorded policies, and
    /// keep the latest witnessed checkpoint as the anchor for `audit verify --checkpoint`.
    Monitor(crate::log_monitor::MonitorArgs),
    /// Verify the database (`--config`, read in one snapshot), or an export (`--file`, with the
    /// service's public log: `--url`, `--ca`, `--log-key`), against the transparency log and a
    /// witnessed checkpoint kept outside the database (`--checkpoint`, e.g. `nacre audit
    /// monitor`'s). Records from before the log are checked by their hash chain.
    Verify {
        #[arg(long, conflicts_with = "config", requires_all = ["url", "ca", "log_key"])]
        file: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// With --file: the service whose public log the export is checked against.
        #[arg(long, requires = "file")]
        url: Option<String>,
        /// With --file: the service's CA certificate (PEM).
        #[arg(long, requires = "file")]
        ca: Option<PathBuf>,
        #[command(flatten)]
        anchor: Anchor,
    },
}

/// The witnessed checkpoint a database is checked against, and whom to believe about it.
#[derive(clap::Args, Debug)]
pub struct Anchor {
    /// A checkpoint note (cosignatures included) saved outside the database.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The log's verifier key. Default: derived from the service's own log.key.
    #[arg(long)]
    log_key: Option<String>,
    /// A witness's verifier key. Repeatable.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// How many of the witnesses must have cosigned the checkpoint. Default: all listed.
    #[arg(long)]
    min_witnesses: Option<usize>,
}

impl Anchor {
    /// The `--checkpoint` anchor, its log signature and `k` cosignatures verified: None when
    /// none was given (with a warning), `Err` (inner) when it does not verify.
    fn load(
        &self,
        log: &nacre_tlog::NoteKey,
        witnesses: &[nacre_tlog::NoteKey],
        k: usize,
    ) -> Result<Result<Option<nacre_tlog::OpenedCheckpoint>, String>> {
        let Some(path) = &self.checkpoint else {
            eprintln!(
                "warning: no witnessed checkpoint (--checkpoint): records and leaves are checked against \
                 each other, but a deleted tail cannot be detected"
            );
            return Ok(Ok(None));
        };
        let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        Ok(nacre_tlog::open_checkpoint(&bytes, log, witnesses)
            .and_then(|c| c.require_cosigners(k, now, 300).map(|()| Some(c)))
            .map_err(|e| format!("the checkpoint {}: {e}", path.display())))
    }

    fn keys(
        &self,
        default_log: &nacre_tlog::NoteKey,
    ) -> Result<(nacre_tlog::NoteKey, Vec<nacre_tlog::NoteKey>, usize)> {
        let log = match &self.log_key {
            Some(k) => nacre_tlog::NoteKey::parse(k.trim())?,
            None => default_log.clone(),
        };
        let witnesses = self
            .witnesses
            .iter()
            .map(|w| nacre_tlog::NoteKey::parse(w.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let k = self.min_witnesses.unwrap_or(witnesses.len());
        if k > witnesses.len() {
            bail!("--min-witnesses {k} with {} witnesses listed", witnesses.len());
        }
        Ok((log, witnesses, k))
    }
}

/// Resolves on SIGINT or SIGTERM: a server's graceful stop.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .unwrap_or_else(|_| unreachable!("SIGTERM handler"));
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// The sealed model a key is registered for.
#[derive(Args, Debug)]
pub struct SealedModel {
    /// The model this key seals (`nacre seal --key-out`'s output): it is opened with the key
    /// file, which authenticates it and recomputes its identity, and that identity and the
    /// header's publisher signature bundle are registered with the key. A release policy that
    /// names signers needs them.
    #[arg(long)]
    sealed: Option<PathBuf>,
}

impl SealedModel {
    /// The registration for the key file's model, if one was named: only after the model opened
    /// under this very key (so the identity is the recomputed one, and the header is the one
    /// the key authenticates) and its header names the key file's key id and version.
    fn registration(&self, kf: &KeyFile) -> Result<Option<ModelRegistration>> {
        let Some(path) = &self.sealed else { return Ok(None) };
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let opened = nacre_sealed::open(
            &FileRange::whole(&file)?,
            &AwsLcGcm::new(&kf.key)?,
            u64::MAX,
            nacre_sealed::workers::available(),
        )
        .with_context(|| format!("{}: not opened with the key file's key", path.display()))?;
        let h = &opened.header;
        if h.key_id != kf.key_id || h.key_version != kf.key_version {
            bail!(
                "{} is sealed as {} v{}, the key file is {} v{}",
                path.display(),
                h.key_id,
                h.key_version,
                kf.key_id,
                kf.key_version
            );
        }
        Ok(Some(ModelRegistration::new(h.model_identity, h.signature_bundle.clone())))
    }
}

fn read_key(path: &Path) -> Result<KeyFile> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    KeyFile::from_json(&text).with_context(|| format!("{}", path.display()))
}

pub fn attestation(cmd: AttestationCmd) -> Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        AttestationCmd::Init { dir, listen, sans, database, insecure_sim_root } => {
            let out = nacre_attestation_service::setup::init(
                &dir,
                listen,
                &sans,
                database.as_deref(),
                insecure_sim_root.as_deref(),
            )
            .map_err(anyhow::Error::msg)?;
            println!(
                "config: {}\nCA (pin in guests and clients): {}",
                out.config.display(),
                out.ca_cert.display()
            );
            println!(
                "admin token: {}\nauditor token: {}\nlog key (witnesses and clients pin it):\n{}",
                out.admin_token.display(),
                out.auditor_token.display(),
                out.log_vkey
            );
            Ok(ExitCode::SUCCESS)
        }
        AttestationCmd::Serve { config } => rt.block_on(async {
            let config = Config::load(&config)?;
            let svc = Arc::new(Service::start(&config).await?);
            let tls = nacre_attestation_service::http::tls_config(&config.tls_cert, &config.tls_key)
                .map_err(anyhow::Error::msg)?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            eprintln!("nacre attestation service on https://{}", listener.local_addr()?);
            nacre_attestation_service::http::serve(svc, listener, tls, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }),
        AttestationCmd::Rewrap { config } => rt.block_on(async {
            let config = Config::load(&config)?;
            let actor = format!("operator:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            let n = nacre_attestation_service::service::rewrap_data_keys(&config, &actor).await?;
            println!("{n} data key versions re-wrapped under the current master key");
            Ok(ExitCode::SUCCESS)
        }),
        AttestationCmd::Keys(cmd) => rt.block_on(async {
            match cmd {
                KeysCmd::Add { remote, key_file, policy, model } => {
                    let kf = read_key(&key_file)?;
                    if kf.key_version != 1 {
                        bail!(
                            "the key file is for version {}; a new key starts at 1 (use rotate)",
                            kf.key_version
                        );
                    }
                    let policy = std::fs::read_to_string(&policy)?;
                    let model = model.registration(&kf)?;
                    let client = remote.client()?;
                    print_json(
                        &client.create_key_for_model(&kf.key_id, kf.key.expose(), &policy, model).await?,
                    )
                }
                KeysCmd::List { remote } => print_json(&remote.client()?.list_keys().await?),
                KeysCmd::Rotate { remote, key_id, key_file, model } => {
                    let kf = read_key(&key_file)?;
                    if kf.key_id != key_id {
                        bail!("the key file is for {}, not {key_id}", kf.key_id);
                    }
                    let model = model.registration(&kf)?;
                    let client = remote.client()?;
                    let version = Some(kf.key_version);
                    print_json(&client.rotate_key_for_model(&key_id, kf.key.expose(), version, model).await?)
                }
                KeysCmd::Revoke { remote, key_id, version } => {
                    print_json(&remote.client()?.revoke_key(&key_id, version).await?)
                }
                KeysCmd::Rollback { remote, key_id, version } => {
                    print_json(&remote.client()?.rollback_key(&key_id, version).await?)
                }
            }
        }),
        AttestationCmd::Policy(cmd) => rt.block_on(async {
            match cmd {
                PolicyCmd::Show { remote, key_id } => {
                    print!("{}", remote.client()?.key(&key_id).await?.policy);
                    Ok(ExitCode::SUCCESS)
                }
                PolicyCmd::Set { remote, key_id, policy } => {
                    let policy = std::fs::read_to_string(&policy)?;
                    print_json(&remote.client()?.set_policy(&key_id, &policy).await?)
                }
            }
        }),
        AttestationCmd::Reference(cmd) => rt.block_on(async {
            match cmd {
                ReferenceCmd::Import { remote, doc, sig } => {
                    let read =
                        |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
                    let (doc, sig) = (read(&doc)?, read(&sig)?);
                    print_json(&remote.client()?.import_reference_values(&doc, &sig).await?)
                }
                ReferenceCmd::List { remote } => print_json(&remote.client()?.list_reference_values().await?),
            }
        }),
    }
}

/// `nacre audit verify --config`: records and leaves from one snapshot, checked against each
/// other, the stored checkpoint and the external witnessed one; exit 1 on any finding.
async fn verify_database(config: &Path, anchor: &Anchor) -> Result<ExitCode> {
    let config = Config::load(config)?;
    let keys = nacre_attestation_service::service::load_log_keys(&config)?;
    let (log_key, witnesses, k) = anchor.keys(keys.public())?;
    let store = nacre_attestation_service::service::open_store(&config, 2).await?;
    let mut snapshot = store.audit_snapshot().await?;
    let leaves = snapshot.log_leaves().await?;
    let stored = snapshot.log_checkpoint().await?;
    let (records, head) = snapshot.read_all().await?;
    store.close().await;

    let anchor = match anchor.load(&log_key, &witnesses, k)? {
        Ok(a) => a,
        Err(e) => {
            println!("audit log BROKEN: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let (stored, mut findings) =
        match stored.map(|(_, note)| nacre_tlog::open_checkpoint(&note, &log_key, &witnesses)) {
            Some(Ok(c)) => (Some(c), Vec::new()),
            Some(Err(e)) => (None, vec![Finding::StoredCheckpoint(e.to_string())]),
            None => (None, Vec::new()),
        };
    if let Err(e) = verify_legacy_chain(&records, Some((head.0, &head.1))) {
        findings.push(Finding::LegacyChain(e.to_string()));
    }
    let mut report = nacre_attestation_service::audit::audit_log(
        &keys,
        &records,
        &leaves,
        anchor.as_ref(),
        stored.as_ref(),
    );
    findings.append(&mut report.findings);
    report.findings = findings;
    Ok(print_audit(&report))
}

/// `nacre audit verify --file`: an export against the service's public log.
async fn verify_export(file: &Path, url: &str, ca: &Path, anchor: &Anchor) -> Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| file.display().to_string())?;
    let records = text
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str::<AuditRecord>(l).with_context(|| format!("line {}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    let log_key = nacre_tlog::NoteKey::parse(anchor.log_key.as_deref().unwrap_or_default().trim())?;
    let (log_key, witnesses, k) = anchor.keys(&log_key)?;
    let client = Client::new(url, &std::fs::read(ca).with_context(|| ca.display().to_string())?)?;
    let note = client.log_get("checkpoint").await?;
    let latest = nacre_tlog::open_checkpoint(&note, &log_key, &witnesses).context("the log's checkpoint")?;
    let entries = crate::log_monitor::entries(&client, 0, latest.size()).await?;
    let anchor = match anchor.load(&log_key, &witnesses, k)? {
        Ok(a) => a,
        Err(e) => {
            println!("audit log BROKEN: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut report =
        nacre_attestation_service::audit::audit_export(&records, &entries, &latest, anchor.as_ref());
    if let Err(e) = verify_legacy_chain(&records, None) {
        report.findings.insert(0, Finding::LegacyChain(e.to_string()));
    }
    Ok(print_audit(&report))
}

fn print_audit(report: &nacre_attestation_service::audit::LogAudit) -> ExitCode {
    if report.findings.is_empty() {
        let against = match &report.anchor {
            Some((size, by)) => format!(
                ", consistent with the witnessed checkpoint of {size} leaves (cosigned by {})",
                if by.is_empty() { "no witness".to_owned() } else { by.join(", ") }
            ),
            None => String::new(),
        };
        println!("audit log OK: {} records, {} leaves{against}", report.records, report.leaves);
        ExitCode::SUCCESS
    } else {
        println!("audit log BROKEN: {} findings", report.findings.len());
        for f in &report.findings {
            println!("  {f}");
        }
        ExitCode::from(1)
    }
}

pub fn audit(cmd: AuditCmd) -> Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        AuditCmd::Export { remote, out } => rt.block_on(async {
            let records = remote.client()?.audit_export().await?;
            let mut text = String::new();
            for r in &records {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            std::fs::write(&out, text)?;
            eprintln!("{} records written to {}", records.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }),
        AuditCmd::Monitor(args) => crate::log_monitor::monitor(args),
        AuditCmd::Verify { file: None, config: Some(config), anchor, .. } => {
            rt.block_on(verify_database(&config, &anchor))
        }
        AuditCmd::Verify { file: Some(file), config: None, url: Some(url), ca: Some(ca), anchor } => {
            rt.block_on(verify_export(&file, &url, &ca, &anchor))
        }
        AuditCmd::Verify { .. } => bail!("give --config, or --file with --url, --ca and --log-key"),
    }
}
