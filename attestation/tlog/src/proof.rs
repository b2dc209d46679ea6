//! A release's proof, as the enclave serves it with its attestation result: the log entry of
//! its key release, the entry's index, its inclusion proof, and the best checkpoint the
//! enclave holds. A client that requires the log checks all of it before sending any input.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::TlogError;
use crate::checkpoint::{OpenedCheckpoint, open_checkpoint};
use crate::entry::{Action, Entry};
use crate::keys::NoteKey;
use crate::tree::{Hash, leaf_hash, verify_inclusion};

/// The wire form (JSON; bytes in base64).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseProof {
    /// The entry's canonical bytes, base64.
    pub entry: String,
    pub index: u64,
    /// Base64 hashes, leaf to root.
    pub inclusion: Vec<String>,
    /// The signed checkpoint note, cosignatures included.
    pub checkpoint: String,
}

/// What a client requires of the log.
#[derive(Clone, Debug)]
pub struct LogRequirement {
    pub log: NoteKey,
    pub witnesses: Vec<NoteKey>,
    /// How many of `witnesses` must have cosigned.
    pub min_cosigners: usize,
    /// Seconds a cosignature's time may run ahead of the client's clock.
    pub max_clock_skew_s: u64,
}

/// A release proof that verified.
#[derive(Debug)]
pub struct VerifiedRelease {
    pub entry: Entry,
    pub index: u64,
    pub checkpoint: OpenedCheckpoint,
}

impl ReleaseProof {
    pub fn new(entry: &[u8], index: u64, inclusion: &[Hash], checkpoint: &[u8]) -> Self {
        Self {
            entry: B64.encode(entry),
            index,
            inclusion: inclusion.iter().map(|h| B64.encode(h.0)).collect(),
            checkpoint: B64.encode(checkpoint),
        }
    }

    /// Checks the proof: the checkpoint's log signature and at least `min_cosigners` named
    /// cosignatures, the entry's inclusion under that checkpoint, that the entry is a release,
    /// and that it names `release_key_sha256` (the key the enclave bound into its TLS evidence).
    pub fn verify(
        &self,
        req: &LogRequirement,
        release_key_sha256: &[u8; 32],
        now: u64,
    ) -> Result<VerifiedRelease, TlogError> {
        let entry_bytes = decode(&self.entry, "entry")?;
        let checkpoint_bytes = decode(&self.checkpoint, "checkpoint")?;
        if self.inclusion.len() > 63 {
            return Err(TlogError::InclusionProof);
        }
        let inclusion = self
            .inclusion
            .iter()
            .map(|h| {
                let raw = decode(h, "inclusion hash")?;
                Ok(Hash(raw.try_into().map_err(|_| TlogError::InclusionProof)?))
            })
            .collect::<Result<Vec<_>, TlogError>>()?;

        let checkpoint = open_checkpoint(&checkpoint_bytes, &req.log, &req.witnesses)?;
        checkpoint.require_cosigners(req.min_cosigners, now, req.max_clock_skew_s)?;
        verify_inclusion(
            &inclusion,
            checkpoint.size(),
            checkpoint.root(),
            self.index,
            leaf_hash(&entry_bytes),
        )?;
        let entry = Entry::decode(&entry_bytes)?;
        if entry.action != Action::Release {
            return Err(TlogError::NotARelease(entry.action.as_str()));
        }
        let expected = hex::encode(release_key_sha256);
        if entry.release_key_sha256.as_deref() != Some(expected.as_str()) {
            return Err(TlogError::ReleaseKeyMismatch {
                logged: entry.release_key_sha256.unwrap_or_default(),
                attested: expected,
            });
        }
        Ok(VerifiedRelease { entry, index: self.index, checkpoint })
    }
}

fn decode(b64: &str, what: &'static str) -> Result<Vec<u8>, TlogError> {
    B64.decode(b64).map_err(|_| TlogError::Malformed(format!("{what} is not base64")))
}
