//! Pushing checkpoints to witnesses (C2SP tlog-witness), in the background. One task per
//! witness sends the latest checkpoint with a consistency proof from the size the witness last
//! cosigned, verifies the cosignature it answers with and stores it on the checkpoint. A
//! witness that is down or slow delays cosignatures; it never delays or fails a release.
//!
//! Every replica pushes: the witness serializes them (a 409 names the size it holds, and the
//! pusher retries from there), and a cosignature from any replica is stored on the one shared
//! row.

use std::sync::Arc;
use std::time::Duration;

use nacre_attestation_client::Client;
use nacre_tlog::NoteKey;
use nacre_tlog::witness::AddCheckpoint;

use crate::config::WitnessPeer;
use crate::store::Store;

/// How often an idle pusher looks for a new checkpoint.
const POLL: Duration = Duration::from_millis(500);
/// The longest wait between attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A witness this service pushes to.
pub struct Peer {
    url: String,
    client: Client,
    key: NoteKey,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Witness({} at {})", self.key.name(), self.url)
    }
}

impl Peer {
    pub fn new(config: &WitnessPeer) -> Result<Self, String> {
        let ca = std::fs::read(&config.ca).map_err(|e| format!("{}: {e}", config.ca.display()))?;
        let client = Client::new(&config.url, &ca).map_err(|e| format!("witness {}: {e}", config.url))?;
        let key = NoteKey::parse(config.vkey.trim()).map_err(|e| format!("witness {}: {e}", config.url))?;
        Ok(Self { url: config.url.clone(), client, key })
    }

    pub fn name(&self) -> &str {
        self.key.name()
    }
}

/// What one push came to.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// Cosigned: the checkpoint now carries this many cosignatures.
    Cosigned(usize),
    /// The witness holds another size: retry from it.
    Conflict(u64),
}

/// Pushes checkpoints to `peer` for ever (until the task is aborted).
pub async fn run(store: Store, peer: Arc<Peer>) {
    // What we believe the witness holds; 0 at first (a 409 corrects it).
    let mut witnessed: u64 = 0;
    let mut backoff = Duration::ZERO;
    loop {
        tokio::time::sleep(backoff.max(POLL)).await;
        let (size, note) = match store.log_checkpoint().await {
            Ok(Some(latest)) => latest,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(witness = peer.name(), error = %e, "reading the latest checkpoint");
                backoff = next_backoff(backoff);
                continue;
            }
        };
        if size == witnessed {
            backoff = Duration::ZERO;
            continue;
        }
        match push(&store, &peer, witnessed, size, &note).await {
            Ok(Pushed::Cosigned(n)) => {
                tracing::debug!(witness = peer.name(), size, cosignatures = n, "checkpoint cosigned");
                witnessed = size;
                backoff = Duration::ZERO;
            }
            Ok(Pushed::Conflict(held)) if held > size => {
                // Another replica pushed a newer checkpoint first; ours will catch up.
                witnessed = held;
                backoff = Duration::ZERO;
            }
            Ok(Pushed::Conflict(held)) => {
                if held == witnessed {
                    // The witness refused our view of a size it holds: a fork, or a witness
                    // that lost its state. Either needs a human.
                    tracing::error!(
                        witness = peer.name(),
                        size = held,
                        "witness reports a conflicting checkpoint"
                    );
                    backoff = next_backoff(backoff);
                }
                witnessed = held;
            }
            Err(e) => {
                tracing::warn!(witness = peer.name(), size, error = %e, "witness push failed");
                backoff = next_backoff(backoff);
            }
        }
    }
}

fn next_backoff(b: Duration) -> Duration {
    (b * 2).clamp(Duration::from_secs(1), MAX_BACKOFF)
}

/// One `add-checkpoint` call: the checkpoint of `size` leaves, proven consistent with `old`.
async fn push(store: &Store, peer: &Peer, old: u64, size: u64, note: &[u8]) -> Result<Pushed, String> {
    let proof = if old == 0 || old > size {
        Vec::new()
    } else {
        store.log_consistency(old, size).await.map_err(|e| e.to_string())?
    };
    let body = AddCheckpoint { old_size: old.min(size), proof, checkpoint: note.to_vec() }.encode();
    let (status, answer) = peer
        .client
        .raw(hyper::Method::POST, "/add-checkpoint", "text/plain", body)
        .await
        .map_err(|e| e.to_string())?;
    match status.as_u16() {
        200 => store
            .log_add_cosignatures(size, &answer, &peer.key)
            .await
            .map(Pushed::Cosigned)
            .map_err(|e| format!("storing the cosignature: {e}")),
        409 => std::str::from_utf8(&answer)
            .ok()
            .and_then(|t| t.trim_end_matches('\n').parse().ok())
            .map(Pushed::Conflict)
            .ok_or_else(|| "409 without a size".to_owned()),
        s => Err(format!("HTTP {s}: {}", String::from_utf8_lossy(&answer[..answer.len().min(200)]).trim())),
    }
}
