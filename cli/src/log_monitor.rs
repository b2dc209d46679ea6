//! `nacre audit monitor`: follows the attestation service's transparency log over its public
//! routes (no token), replays every entry into its own tree and flags what a correct service
//! never logs (nacre_tlog::monitor). The latest checkpoint cosigned by the required witnesses
//! is kept in `STATE/checkpoint`: the anchor `nacre audit verify --checkpoint` checks a
//! database against.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use nacre_attestation_client::Client;
use nacre_tlog::monitor::{Monitor, split_bundle};
use nacre_tlog::{NoteKey, OpenedCheckpoint, open_checkpoint};

#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    /// The service, https://HOST:PORT.
    #[arg(long)]
    url: String,
    /// The service's CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The log's verifier key, pinned out of band (`nacre attestation init` prints it).
    #[arg(long)]
    log_key: String,
    /// A witness's verifier key. Repeatable.
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// Cosignatures a checkpoint needs to become the saved anchor. Default: all witnesses.
    #[arg(long)]
    min_witnesses: Option<usize>,
    /// Where the monitor keeps its state (state.json) and the anchor (checkpoint).
    #[arg(long)]
    state: PathBuf,
    /// One round, then exit (0: nothing flagged, 1: something flagged or the log misbehaved).
    #[arg(long)]
    once: bool,
    /// Seconds between rounds.
    #[arg(long, default_value_t = 30)]
    interval: u64,
}

struct Keys {
    log: NoteKey,
    witnesses: Vec<NoteKey>,
    k: usize,
}

pub fn monitor(args: MonitorArgs) -> Result<ExitCode> {
    let log = NoteKey::parse(args.log_key.trim()).context("--log-key")?;
    let witnesses = args.witnesses.iter().map(|w| NoteKey::parse(w.trim())).collect::<Result<Vec<_>, _>>()?;
    let k = args.min_witnesses.unwrap_or(witnesses.len());
    anyhow::ensure!(k <= witnesses.len(), "--min-witnesses {k} with {} witnesses listed", witnesses.len());
    let keys = Keys { log, witnesses, k };
    std::fs::create_dir_all(&args.state).with_context(|| args.state.display().to_string())?;
    let ca = std::fs::read(&args.ca).with_context(|| args.ca.display().to_string())?;
    let client = Client::new(&args.url, &ca)?;
    crate::attestation::runtime()?.block_on(async {
        let mut flagged = false;
        loop {
            match round(&client, &keys, &args.state).await {
                Ok(n) => flagged |= n > 0,
                Err(e) => {
                    println!("LOG MISBEHAVED: {e:#}");
                    flagged = true;
                }
            }
            if args.once {
                return Ok(if flagged { ExitCode::from(1) } else { ExitCode::SUCCESS });
            }
            tokio::time::sleep(Duration::from_secs(args.interval)).await;
        }
    })
}

/// One round: the latest checkpoint, the entries since the last, the alerts; the witnessed
/// anchor updated. Returns how many alerts were printed.
async fn round(client: &Client, keys: &Keys, dir: &std::path::Path) -> Result<usize> {
    let path = dir.join("state.json");
    let mut monitor = Monitor::load(&path)?;
    let note = match client.log_get("checkpoint").await {
        Ok(n) => n,
        Err(nacre_attestation_client::ClientError::Refused(e))
            if e.code == nacre_protocol::ErrorCode::NotFound =>
        {
            println!("the log is empty");
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    let checkpoint = open_checkpoint(&note, &keys.log, &keys.witnesses).context("the latest checkpoint")?;
    let old = monitor.size();
    let entries = entries(client, old, checkpoint.size()).await?;
    let alerts = monitor.update(&checkpoint, &entries).context("the log's growth")?;
    monitor.save(&path)?;
    for a in &alerts {
        println!("ALERT {a}");
    }
    println!(
        "log {} at {} leaves ({} new), {} alerts",
        checkpoint.origin(),
        checkpoint.size(),
        checkpoint.size() - old,
        alerts.len()
    );
    save_anchor(client, keys, &monitor, &checkpoint, dir).await?;
    Ok(alerts.len())
}

/// Entries `from..to`, from the entry bundles that cover them.
pub(crate) async fn entries(client: &Client, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for tile in nacre_tlog::tree::tiles_at_level(to, 0) {
        let start = tile.index() << nacre_tlog::tree::TILE_HEIGHT;
        let end = start + u64::from(tile.width());
        if end <= from {
            continue;
        }
        let rel = tile.path();
        let rel = rel.strip_prefix("tile/0/").context("a level-0 tile path")?;
        let bundle = client.log_get(&format!("tile/entries/{rel}")).await?;
        let got = split_bundle(&bundle)?;
        anyhow::ensure!(
            got.len() as u64 == end - start,
            "entry bundle {rel}: {} entries, not {}",
            got.len(),
            end - start
        );
        out.extend(got.into_iter().skip(from.saturating_sub(start) as usize));
    }
    Ok(out)
}

/// Keeps, as `dir/checkpoint`, the latest checkpoint the required witnesses cosigned, once it
/// is proven on the tree this monitor replayed.
async fn save_anchor(
    client: &Client,
    keys: &Keys,
    monitor: &Monitor,
    latest: &OpenedCheckpoint,
    dir: &std::path::Path,
) -> Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let candidate = if latest.require_cosigners(keys.k, now, 300).is_ok() {
        Some(latest.to_bytes())
    } else if latest.size() > 0 {
        // The best witnessed checkpoint covering the last leaf (it may be a smaller tree).
        client.log_witnessed(latest.size() - 1).await.ok().map(|w| w.checkpoint.to_vec())
    } else {
        None
    };
    let Some(bytes) = candidate else { return Ok(()) };
    let opened = open_checkpoint(&bytes, &keys.log, &keys.witnesses)?;
    if opened.require_cosigners(keys.k, now, 300).is_err() {
        return Ok(());
    }
    anyhow::ensure!(
        opened.size() <= monitor.size() && monitor.root_at(opened.size())? == opened.root(),
        "a witnessed checkpoint of {} leaves is not on the tree this monitor replayed",
        opened.size()
    );
    let anchor = dir.join("checkpoint");
    let previous =
        std::fs::read(&anchor).ok().and_then(|b| open_checkpoint(&b, &keys.log, &keys.witnesses).ok());
    if previous.is_none_or(|p| p.size() < opened.size()) {
        std::fs::write(&anchor, &bytes).with_context(|| anchor.display().to_string())?;
        println!("anchor: checkpoint of {} leaves cosigned by {}", opened.size(), opened.cosigned().len());
    }
    Ok(())
}
