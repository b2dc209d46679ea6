//! `nacre seal` and `nacre unseal`: the model owner's tools.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use nacre_attestation_client::{Client, ClientError};
use nacre_protocol::ErrorCode;
use nacre_sealed::{AwsLcGcm, DataKey, KeyFile, SealError, SealParams};

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
    if let Err(e) = nacre_model::Model::load(&onnx) {
        // The owner's own tool on the owner's own model: tract's whole message is theirs to see.
        eprintln!("refusing to seal {}: {e}: tract: {}", args.model.display(), e.tract_detail());
        return Ok(ExitCode::from(1));
    }
    drop(onnx);
    let name = match args.name {
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
    let params = SealParams {
        key_id,
        key_version,
        model_name: name,
        model_version: args.version,
        chunk_size: args.chunk_size,
    };
    let key = DataKey::generate()?;
    let cipher = AwsLcGcm::new(&key)?;
    let input = File::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let total = input.metadata()?.len();
    let bar = progress_bar(total);
    let seal = |w: &mut BufWriter<&File>| {
        nacre_sealed::seal(BufReader::new(&input), w, &cipher, &params, |done| {
            if let Some(b) = &bar {
                b.set_position(done)
            }
        })
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
            let register = |_: &nacre_sealed::Header| {
                let info = rt.block_on(async {
                    match policy {
                        Some(policy) if params.key_version == 1 => {
                            client.create_key(&params.key_id, key.expose(), policy).await
                        }
                        _ => client.rotate_key(&params.key_id, key.expose(), Some(params.key_version)).await,
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
    println!("digest      {}", hex::encode(header.model_digest));
    println!("size        {} bytes in {} chunks", header.plaintext_len, header.chunk_count());
    println!("key         {} v{} -> {key_dest}", header.key_id, header.key_version);
    Ok(ExitCode::SUCCESS)
}

pub fn unseal(args: UnsealArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(&args.key).with_context(|| format!("reading {}", args.key.display()))?;
    let keyfile = KeyFile::from_json(&text)?;
    let cipher = AwsLcGcm::new(&keyfile.key)?;
    let file = File::open(&args.sealed).with_context(|| format!("opening {}", args.sealed.display()))?;
    let (header, plain) = match nacre_sealed::open(BufReader::new(file), &cipher, args.max_size) {
        Ok(v) => v,
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
            "{}: {} bytes, digest {} verified",
            args.out.display(),
            plain.len(),
            hex::encode(header.model_digest)
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
