//! The release's place in the attestation service's transparency log, served to clients with
//! the attestation result (`GET /v1/log/release`, JSON `nacre_tlog::ReleaseProof`). The
//! service answers a release with the leaf and a checkpoint only it has signed; [`follow`]
//! asks it in the background for a checkpoint covering the leaf that witnesses have cosigned,
//! and the best one replaces what is served. Clients verify everything (log key, witnesses,
//! inclusion, the release key bound in this enclave's TLS evidence): the enclave only keeps
//! the best proof it was given, so a witness outage never stops serving.

use std::sync::RwLock;
use std::time::Duration;

use nacre_protocol::messages::ReleaseLog;
use nacre_tlog::ReleaseProof;

/// Polling for a better witnessed checkpoint: at this pace until one is cosigned, then
/// doubling to the maximum.
const FIRST_POLL: Duration = Duration::from_secs(2);
const MAX_POLL: Duration = Duration::from_secs(300);

/// The proof served, and what identifies the leaf it proves.
#[derive(Debug)]
pub struct ReleaseLogProof {
    entry: Vec<u8>,
    index: u64,
    current: RwLock<(usize, ReleaseProof)>,
}

/// Signature lines of a checkpoint note beyond the log's own: its cosignatures (unverified:
/// only used to prefer one proof to another; the client verifies the ones it requires).
fn cosignature_lines(note: &[u8]) -> usize {
    let text = String::from_utf8_lossy(note);
    let sigs = text.split_once("\n\n").map_or("", |(_, s)| s);
    sigs.lines().filter(|l| l.starts_with("\u{2014} ")).count().saturating_sub(1)
}

fn proof_of(log: &ReleaseLog) -> Option<ReleaseProof> {
    let inclusion = log
        .inclusion
        .iter()
        .map(|h| Some(nacre_tlog::Hash(h.as_slice().try_into().ok()?)))
        .collect::<Option<Vec<_>>>()?;
    Some(ReleaseProof::new(&log.entry, log.index, &inclusion, &log.checkpoint))
}

impl ReleaseLogProof {
    /// From the service's answer to the release; None if it is malformed.
    pub fn new(log: &ReleaseLog) -> Option<Self> {
        let proof = proof_of(log)?;
        Some(Self {
            entry: log.entry.to_vec(),
            index: log.index,
            current: RwLock::new((cosignature_lines(&log.checkpoint), proof)),
        })
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    /// The proof to serve.
    pub fn proof(&self) -> ReleaseProof {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// Cosignatures on the served checkpoint.
    pub fn cosignatures(&self) -> usize {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0
    }

    /// Adopts `candidate` if it is for this leaf and its checkpoint carries more cosignatures.
    pub fn offer(&self, candidate: &ReleaseLog) -> bool {
        if candidate.index != self.index || candidate.entry.as_slice() != self.entry {
            return false;
        }
        let n = cosignature_lines(&candidate.checkpoint);
        let Some(proof) = proof_of(candidate) else { return false };
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if n <= current.0 {
            return false;
        }
        *current = (n, proof);
        true
    }
}

/// Asks the service at `url` (pinned `ca_pem`) for the best witnessed checkpoint covering the
/// release, adopting better ones, until the guest stops or the service says it has no
/// witnesses. Errors only lengthen the wait.
pub async fn follow(proof: std::sync::Arc<ReleaseLogProof>, url: String, ca_pem: Vec<u8>) {
    use nacre_attestation_client::{Client, ClientError};
    let mut wait = FIRST_POLL;
    loop {
        tokio::time::sleep(wait).await;
        // A connection per poll, closed with its client: none is held between polls.
        let client = match Client::new(&url, &ca_pem) {
            Ok(c) => c,
            Err(e) => return println!("NACRE-ENCLAVE-WARNING release log: {e}"),
        };
        match client.log_witnessed(proof.index()).await {
            Err(ClientError::Refused(e)) if e.code == nacre_protocol::ErrorCode::NotFound => {
                return println!(
                    "NACRE-ENCLAVE-LOG the service has no witnesses: serving its own checkpoint"
                );
            }
            Ok(candidate) if proof.offer(&candidate) => {
                println!("NACRE-ENCLAVE-LOG witnessed checkpoint with {} cosignatures", proof.cosignatures());
                wait = FIRST_POLL;
                continue;
            }
            // None yet, none better, or the service unreachable: ask again later.
            Ok(_) | Err(_) => {}
        }
        // Often until a witness has cosigned (clients may require it), then less and less.
        wait = if proof.cosignatures() == 0 { FIRST_POLL } else { (wait * 2).min(MAX_POLL) };
    }
}
