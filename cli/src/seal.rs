//! `nacre seal` and `nacre unseal`: the model owner's tools.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use nacre_attestation_client::{Client, ClientError, ModelRegistration};
use nacre_protocol::ErrorCode;
use nacre_sealed::{AwsLcGcm, DataKey, FileRange, KeyFile, ModelIdentity, Output, SealError, SealParams};
use nacre_signing::{Manifest, Trust};

#[derive(Args, Debug)]
pub struct SealArgs {
    /// The ONNX model to seal.
    model: PathBuf,
    /// Where to write the sealed model (atomically: a temporary file, then a rename).
    #[arg(long)]
    out: PathBuf,
    /// Model name recorded in the header (default: the file stem).
    #[arg(long)]
    name: Option<String>,
    /// Model version recorded in the header.
    #[arg(long, default_value = "1")]
    version: String,
    /// Where to write the new data key (JSON, mode 0600; never overwritten).
    #[arg(long, required_unless_present = "register", conflicts_with = "register")]
    key_out: Option<PathBuf>,
    /// Instead of writing a key file, register the key with the attestation service at this
    /// URL (https://HOST:PORT): version 1 of a new key (needs --policy), or the next version
    /// of an existing one. The key exists only in memory and in the service.
    #[arg(long, requires_all = ["ca", "token_file"])]
    register: Option<String>,
    /// The attestation service's CA certificate (PEM), with --register.
    #[arg(long, requires = "register")]
    ca: Option<PathBuf>,
    /// File holding an admin token, with --register.
    #[arg(long, requires = "register")]
    token_file: Option<PathBuf>,
    /// Release policy (TOML) for a key registered for the first time.
    #[arg(long, requires = "register")]
    policy: Option<PathBuf>,
    /// Key id the attestation service will know the key by (default: the model name).
    #[arg(long)]
    key_id: Option<String>,
    /// Chunk size in bytes: a power of two from 4 KiB to 16 MiB.
    #[arg(long, default_value_t = nacre_sealed::header::DEFAULT_CHUNK)]
    chunk_size: u32,
    /// The identity's shard size in bytes, 1 MiB to 4 GiB (default 4 MiB). With a shard-manifest
    /// --signature, the bundle's shard size is used and this must be unset or equal.
    #[arg(long)]
    shard_size: Option<u64>,
    /// A publisher's OpenSSF Model Signing bundle (model-signing 1.x `.sig`, key or certificate
    /// method) for this model: verified offline before sealing (with --signer-key or
    /// --signer-roots), then carried in the sealed header. A shard bundle is matched shard by
    /// shard; a whole-file bundle costs the enclave one extra SHA-256 pass when it opens.
    #[arg(long, requires = "signer")]
    signature: Option<PathBuf>,
    /// The publisher's public key (PEM) the bundle must be signed with.
    #[arg(long, group = "signer", requires = "signature")]
    signer_key: Option<PathBuf>,
    /// CA certificates (PEM) the bundle's signing certificate must chain to, with
    /// --signer-identity.
    #[arg(long, group = "signer", requires_all = ["signature", "signer_identity"])]
    signer_roots: Option<PathBuf>,
    /// The signing certificate's identity: an e-mail address, a URI, or `cn:NAME`.
    #[arg(long, requires = "signer_roots")]
    signer_identity: Option<String>,
    /// The owner's guard manifest (`nacre guard fit`), carried in the sealed header: checked
    /// against the model and its self-tests run first; a manifest that does not fit seals nothing.
    #[arg(long)]
    guard_manifest: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DigestArgs {
    /// The plaintext model file.
    model: PathBuf,
    /// Shard size in bytes (1 MiB to 4 GiB): the sealed header's, or an OMS shard bundle's.
    #[arg(long, default_value_t = nacre_sealed::header::DEFAULT_SHARD)]
    shard_size: u64,
    /// Print only the identity (hex), for scripts.
    #[arg(long, conflicts_with = "json")]
    hex: bool,
    /// Print a JSON object: identity, length, shard size and digests, OMS subject digest.
    #[arg(long)]
    json: bool,
}

/// `nacre model digest FILE`.
pub fn digest(args: DigestArgs) -> anyhow::Result<ExitCode> {
    let file = File::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let id = ModelIdentity::compute(
        &FileRange::whole(&file)?,
        args.shard_size,
        nacre_sealed::workers::available(),
    )?;
    let identity = hex::encode(id.identity());
    if args.hex {
        println!("{identity}");
    } else if args.json {
        let shards: Vec<String> = id.shard_digests.iter().map(hex::encode).collect();
        let doc = serde_json::json!({
            "model_identity": identity,
            "length": id.len,
            "shard_size": id.shard_size,
            "shard_sha256": shards,
            "oms_subject_sha256": hex::encode(id.oms_subject_digest()),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("identity     {identity}");
        println!("length       {} bytes", id.len);
        println!("shards       {} of {} bytes", id.shard_digests.len(), id.shard_size);
        println!(
            "oms subject  {} (an OMS bundle sharded at the same size states this)",
            hex::encode(id.oms_subject_digest())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Verifies `--signature` before anything is sealed; returns the bundle and the shard size it
/// requires, if it is a shard manifest.
fn check_signature(args: &SealArgs, model: &[u8]) -> anyhow::Result<Option<(Vec<u8>, Option<u64>)>> {
    let Some(path) = &args.signature else { return Ok(None) };
    let bundle = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let trust = match (&args.signer_key, &args.signer_roots, &args.signer_identity) {
        (Some(key), None, _) => {
            Trust::public_key_pem(&std::fs::read(key).with_context(|| format!("reading {}", key.display()))?)?
        }
        (None, Some(roots), Some(identity)) => {
            let identity = match identity.strip_prefix("cn:") {
                Some(cn) => nacre_signing::Identity::CommonName(cn.to_owned()),
                None if identity.contains('@') => nacre_signing::Identity::Email(identity.clone()),
                None => nacre_signing::Identity::Uri(identity.clone()),
            };
            let pem = std::fs::read(roots).with_context(|| format!("reading {}", roots.display()))?;
            Trust::certificate(&pem, identity)?
        }
        _ => bail!("--signature needs --signer-key, or --signer-roots with --signer-identity"),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let verified = nacre_signing::verify(&bundle, &trust, now)
        .with_context(|| format!("publisher signature {}", path.display()))?;
    verified.manifest().check_model(model).with_context(|| {
        format!("publisher signature {} does not sign {}", path.display(), args.model.display())
    })?;
    let shard_size = match verified.manifest() {
        Manifest::Shards { shard_size, .. } => {
            if !(nacre_sealed::header::MIN_SHARD..=nacre_sealed::header::MAX_SHARD).contains(shard_size) {
                bail!(
                    "the bundle shards at {shard_size} bytes; a sealed model's shards are 1 MiB to 4 GiB \
                     (sign with model_signing's use_shard_serialization(shard_size=...) in that range)"
                );
            }
            if args.shard_size.is_some_and(|s| s != *shard_size) {
                bail!("--shard-size differs from the bundle's shard size {shard_size}");
            }
            Some(*shard_size)
        }
        _ => None,
    };
    eprintln!("publisher signature verified: {}", verified.signer());
    Ok(Some((bundle, shard_size)))
}

#[derive(Args, Debug)]
pub struct UnsealArgs {
    /// The sealed model.
    sealed: PathBuf,
    /// The key file written by `nacre seal`.
    #[arg(long)]
    key: PathBuf,
    /// Output file, or `-` for standard output. Written only after every chunk authenticated.
    #[arg(long)]
    out: PathBuf,
    /// Refuse models larger than this many bytes.
    #[arg(long, default_value_t = 64 << 30)]
    max_size: u64,
}

/// Models at least this large get a progress bar (on a terminal).
const PROGRESS_FROM: u64 = 64 << 20;

/// Where the data key goes once the sealed model is complete.
enum KeySink {
    File(PathBuf),
    Service { client: Client, policy: Option<String> },
}

pub fn seal(args: SealArgs) -> anyhow::Result<ExitCode> {
    let sink = match (&args.key_out, &args.register) {
        (Some(path), None) => {
            if path.exists() {
                bail!("{} exists: refusing to overwrite a data key", path.display());
            }
            KeySink::File(path.clone())
        }
        (None, Some(url)) => {
            let (Some(ca), Some(token)) = (&args.ca, &args.token_file) else {
                bail!("--register needs --ca and --token-file");
            };
            let ca = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let token =
                std::fs::read_to_string(token).with_context(|| format!("reading {}", token.display()))?;
            let policy = match &args.policy {
                Some(p) => {
                    Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            KeySink::Service { client: Client::new(url, &ca)?.with_token(token.trim().to_owned()), policy }
        }
        _ => bail!("give exactly one of --key-out and --register"),
    };
    let onnx = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    // The scan tract's load runs too, here for its report: the owner sees control flow flagged.
    if let Ok(report) = nacre_model::scan::scan(&onnx, &nacre_model::scan::Limits::default()) {
        eprintln!("{}", crate::guard::scan_summary(&report));
    }
    let model = match nacre_model::Model::load(&onnx) {
        Ok(m) => m,
        Err(e) => {
            // The owner's own tool on the owner's own model: tract's whole message is theirs.
            eprintln!("refusing to seal {}: {e}: tract: {}", args.model.display(), e.tract_detail());
            return Ok(ExitCode::from(1));
        }
    };
    let signature = check_signature(&args, &onnx)?;
    drop(onnx);
    // The guard manifest must fit this model and its self-tests pass on tract, or nothing is
    // sealed: the enclave runs the same checks and would never serve it.
    let guard_manifest = match &args.guard_manifest {
        Some(p) => match crate::guard::check_manifest(p, &model) {
            Ok((bytes, _, _)) => Some(bytes),
            Err(e) => {
                eprintln!("refusing to seal {}: {e:#}", args.model.display());
                return Ok(ExitCode::from(1));
            }
        },
        None => None,
    };
    drop(model);
    let name = match args.name.clone() {
        Some(n) => n,
        None => args
            .model
            .file_stem()
            .and_then(|s| s.to_str())
            .context("cannot derive --name from the file name")?
            .to_owned(),
    };
    let key_id = args.key_id.unwrap_or_else(|| name.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The version is in the authenticated header, so it is fixed before sealing; the service
    // re-checks it when the key is registered (a concurrent rotation fails with 409).
    let key_version = match &sink {
        KeySink::File(_) => 1,
        KeySink::Service { client, policy } => match rt.block_on(client.key(&key_id)) {
            Ok(info) if info.revoked => bail!("key {key_id} is revoked at the service"),
            Ok(_) if policy.is_some() => bail!(
                "key {key_id} exists at the service: --policy only sets a new key's policy \
                 (change it with `nacre attestation policy set`)"
            ),
            Ok(info) => info.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1,
            Err(ClientError::Refused(e)) if e.code == ErrorCode::UnknownKey => {
                if policy.is_none() {
                    bail!("key {key_id} is new at the service: give its release policy with --policy");
                }
                1
            }
            Err(e) => return Err(e).context("asking the service for the key"),
        },
    };
    let (signature_bundle, signed_shards) = signature.map_or((None, None), |(b, s)| (Some(b), s));
    let params = SealParams {
        key_id,
        key_version,
        model_name: name,
        model_version: args.version.clone(),
        chunk_size: args.chunk_size,
        shard_size: signed_shards.or(args.shard_size).unwrap_or(nacre_sealed::header::DEFAULT_SHARD),
        signature_bundle,
        guard_manifest,
    };
    let key = DataKey::generate()?;
    let cipher = AwsLcGcm::new(&key)?;
    let input = File::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let total = input.metadata()?.len();
    let bar = progress_bar(total);
    let seal = |w: &mut BufWriter<&File>| {
        let source = FileRange::whole(&input)?;
        let progress = |done| {
            if let Some(b) = &bar {
                b.set_position(done)
            }
        };
        nacre_sealed::seal(
            &source,
            Output::File(w.get_ref()),
            &cipher,
            &params,
            nacre_sealed::workers::available(),
            &progress,
        )
        .map_err(anyhow::Error::from)
    };
    // With --register, the sealed file is renamed into place only once the service holds its
    // key: a failed registration leaves no model that nobody can open.
    let (header, key_dest) = match &sink {
        KeySink::File(path) => {
            let header = write_atomically(&args.out, false, seal, |_| Ok(()))?;
            let keyfile = KeyFile { key_id: params.key_id.clone(), key_version: params.key_version, key };
            let json = keyfile.to_json()?;
            write_atomically(path, true, |w| Ok(w.write_all(json.as_bytes())?), |_| Ok(()))?;
            (header, path.display().to_string())
        }
        KeySink::Service { client, policy } => {
            // The service learns the model's identity and the publisher's bundle with the key, so
            // that a release policy naming signers can check them (it never sees the plaintext).
            let register = |header: &nacre_sealed::Header| {
                let model = ModelRegistration::new(header.model_identity, header.signature_bundle.clone());
                let info = rt.block_on(async {
                    match policy {
                        Some(policy) if params.key_version == 1 => {
                            client
                                .create_key_for_model(&params.key_id, key.expose(), policy, Some(model))
                                .await
                        }
                        _ => {
                            let version = Some(params.key_version);
                            client
                                .rotate_key_for_model(&params.key_id, key.expose(), version, Some(model))
                                .await
                        }
                    }
                });
                info.map(drop).context("registering the key")
            };
            let header = write_atomically(&args.out, false, seal, register)?;
            (header, args.register.clone().unwrap_or_default())
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!("sealed      {}", args.out.display());
    println!("model       {} {}", header.model_name, header.model_version);
    println!("identity    {}", hex::encode(header.model_identity));
    println!(
        "size        {} bytes in {} chunks, shards of {} bytes",
        header.plaintext_len,
        header.chunk_count(),
        header.shard_size.unwrap_or_default()
    );
    if header.signature_bundle.is_some() {
        println!("signature   carried (publisher bundle verified above)");
    }
    if header.guard_manifest.is_some() {
        println!("guard       {}", hex::encode(header.guard_digest()));
    }
    println!("key         {} v{} -> {key_dest}", header.key_id, header.key_version);
    Ok(ExitCode::SUCCESS)
}

pub fn unseal(args: UnsealArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(&args.key).with_context(|| format!("reading {}", args.key.display()))?;
    let keyfile = KeyFile::from_json(&text)?;
    let cipher = AwsLcGcm::new(&keyfile.key)?;
    let file = File::open(&args.sealed).with_context(|| format!("opening {}", args.sealed.display()))?;
    let opened = nacre_sealed::open(
        &FileRange::whole(&file)?,
        &cipher,
        args.max_size,
        nacre_sealed::workers::available(),
    );
    let (header, plain) = match opened {
        Ok(o) => (o.header, o.plaintext),
        Err(e @ SealError::Io(_)) => return Err(e.into()),
        Err(e) => {
            eprintln!("{}: {e}", args.sealed.display());
            return Ok(ExitCode::from(1));
        }
    };
    if header.key_id != keyfile.key_id || header.key_version != keyfile.key_version {
        // Authentication already proved the key fits; a mismatch means a mislabelled key file.
        eprintln!(
            "warning: key file says {} v{}, the model header says {} v{}",
            keyfile.key_id, keyfile.key_version, header.key_id, header.key_version
        );
    }
    if args.out == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(&plain)?;
        out.flush()?;
    } else {
        write_atomically(&args.out, false, |w| Ok(w.write_all(&plain)?), |_| Ok(()))?;
        eprintln!(
            "{}: {} bytes, {} identity {} verified",
            args.out.display(),
            plain.len(),
            header.format,
            hex::encode(header.model_identity)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    (total >= PROGRESS_FROM && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

/// Writes through `f` into a temporary file beside `path`, syncs it, runs `commit` on the
/// result, then renames the file into place: readers see the old file or the complete new
/// one, never a partial one, and nothing at all if `commit` fails.
fn write_atomically<T>(
    path: &Path,
    secret: bool,
    f: impl FnOnce(&mut BufWriter<&File>) -> anyhow::Result<T>,
    commit: impl FnOnce(&T) -> anyhow::Result<()>,
) -> anyhow::Result<T> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("output path has no file name")?.to_string_lossy().into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true).mode(if secret { 0o600 } else { 0o644 });
    let file = opts.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| {
        let mut w = BufWriter::new(&file);
        let value = f(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        commit(&value)?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
