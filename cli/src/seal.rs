//! `nacre seal` and `nacre unseal`: the model owner's tools.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
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
    #[arg(long)]
    key_out: PathBuf,
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

pub fn seal(args: SealArgs) -> anyhow::Result<ExitCode> {
    if args.key_out.exists() {
        bail!("{} exists: refusing to overwrite a data key", args.key_out.display());
    }
    let onnx = std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    if let Err(e) = nacre_model::Model::load(&onnx) {
        eprintln!("refusing to seal {}: {e}", args.model.display());
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
    let params = SealParams {
        key_id: args.key_id.unwrap_or_else(|| name.clone()),
        key_version: 1,
        model_name: name,
        model_version: args.version,
        chunk_size: args.chunk_size,
    };
    let key = DataKey::generate()?;
    let cipher = AwsLcGcm::new(&key)?;
    let input = File::open(&args.model).with_context(|| format!("opening {}", args.model.display()))?;
    let total = input.metadata()?.len();
    let bar = progress_bar(total);
    let header = write_atomically(&args.out, false, |w| {
        nacre_sealed::seal(BufReader::new(&input), w, &cipher, &params, |done| {
            if let Some(b) = &bar {
                b.set_position(done)
            }
        })
        .map_err(anyhow::Error::from)
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let keyfile = KeyFile { key_id: params.key_id.clone(), key_version: params.key_version, key };
    write_atomically(&args.key_out, true, |w| Ok(w.write_all(keyfile.to_json()?.as_bytes())?))?;
    println!("sealed      {}", args.out.display());
    println!("model       {} {}", header.model_name, header.model_version);
    println!("digest      {}", hex::encode(header.model_digest));
    println!("size        {} bytes in {} chunks", header.plaintext_len, header.chunk_count());
    println!("key         {} v{} -> {}", header.key_id, header.key_version, args.key_out.display());
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
        write_atomically(&args.out, false, |w| Ok(w.write_all(&plain)?))?;
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

/// Writes through `f` into a temporary file beside `path`, syncs it, then renames it into place:
/// readers see the old file or the complete new one, never a partial one.
fn write_atomically<T>(
    path: &Path,
    secret: bool,
    f: impl FnOnce(&mut BufWriter<&File>) -> anyhow::Result<T>,
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
        std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
