//! A monitor: it follows the log from checkpoint to checkpoint, replays every entry into its
//! own copy of the tree (so a new checkpoint verifies only if the log grew by appending), and
//! flags what a correct service never logs:
//!
//! - a release to a measurement that no imported reference values listed;
//! - a release under a key version that was revoked;
//! - a release under a policy no admin entry set (a policy changed without an admin record).
//!
//! Its state (leaf hashes, what the entries established, the last checkpoint) is a file, so a
//! restarted monitor resumes and still catches a rollback or a fork.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::TlogError;
use crate::checkpoint::OpenedCheckpoint;
use crate::entry::{Action, Entry};
use crate::tree::{Hash, HashStore as _, MemoryTree, leaf_hash};

/// Something a correct service never logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Alert {
    #[error(
        "leaf {index}: release of {key_id} to measurement {tee}:{measurement}, which no imported reference values list"
    )]
    UnreferencedMeasurement { index: u64, key_id: String, tee: String, measurement: String },
    #[error("leaf {index}: release of {key_id} v{version}, which was revoked")]
    RevokedKeyRelease { index: u64, key_id: String, version: i64 },
    #[error("leaf {index}: release of {key_id} under policy {policy}, which no admin entry set")]
    UnrecordedPolicy { index: u64, key_id: String, policy: String },
}

/// The monitor's durable state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    /// Leaf hashes, in order (base64 of the concatenation on disk).
    #[serde(with = "leaves")]
    leaves: Vec<Hash>,
    /// The last checkpoint verified (the note), if any.
    checkpoint: Option<String>,
    /// `tee:hex` measurements listed by reference-value imports.
    references: BTreeSet<String>,
    /// Revoked key versions; `None`: every version of the key.
    revoked: BTreeSet<(String, Option<i64>)>,
    /// The policy digest last set per key by an admin entry.
    policies: BTreeMap<String, String>,
}

mod leaves {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|h| h.0).collect();
        s.serialize_str(&B64.encode(bytes))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = B64.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() % 32 != 0 {
            return Err(serde::de::Error::custom("leaf hashes are not a multiple of 32 bytes"));
        }
        Ok(bytes.chunks(32).map(|c| Hash(c.try_into().unwrap_or([0; 32]))).collect())
    }
}

impl Monitor {
    /// The state at `path`, or a new monitor if there is none.
    pub fn load(path: &Path) -> Result<Self, TlogError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TlogError::WitnessState(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(TlogError::WitnessState(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the state (synced, then renamed over the old one).
    pub fn save(&self, path: &Path) -> Result<(), TlogError> {
        let bytes = serde_json::to_vec(self).map_err(|e| TlogError::WitnessState(e.to_string()))?;
        crate::witness::persist_bytes(path, &bytes).map_err(TlogError::WitnessState)
    }

    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// The last checkpoint verified.
    pub fn checkpoint(&self) -> Option<&str> {
        self.checkpoint.as_deref()
    }

    /// The root of the first `size` leaves seen.
    pub fn root_at(&self, size: u64) -> Result<Hash, TlogError> {
        crate::tree::root(&self.tree()?, size)
    }

    fn tree(&self) -> Result<MemoryTree, TlogError> {
        let mut tree = MemoryTree::new();
        for h in &self.leaves {
            tree.append_leaf_hash(*h)?;
        }
        Ok(tree)
    }

    /// Takes in `checkpoint` (its signatures verified by the caller) and the entries it adds
    /// since the last one, in order. The state changes only if the checkpoint extends the last
    /// one (no rollback, no fork) and the entries hash to its root; returns the alerts.
    pub fn update(
        &mut self,
        checkpoint: &OpenedCheckpoint,
        entries: &[Vec<u8>],
    ) -> Result<Vec<Alert>, TlogError> {
        let (old, new) = (self.size(), checkpoint.size());
        if new < old {
            return Err(TlogError::Rollback { old, new });
        }
        if new - old != entries.len() as u64 {
            return Err(TlogError::Range(format!(
                "{} entries for a tree growing from {old} to {new}",
                entries.len()
            )));
        }
        let mut next = self.clone();
        let mut tree = self.tree()?;
        for e in entries {
            let h = leaf_hash(e);
            tree.append_leaf_hash(h)?;
            next.leaves.push(h);
        }
        if crate::tree::root(&tree, tree.size())? != checkpoint.root() {
            return Err(if new == old { TlogError::Fork { size: new } } else { TlogError::ConsistencyProof });
        }
        let mut alerts = Vec::new();
        for (k, bytes) in entries.iter().enumerate() {
            let entry = Entry::decode(bytes)?;
            next.observe(old + k as u64, &entry, &mut alerts);
        }
        next.checkpoint = Some(String::from_utf8_lossy(&checkpoint.to_bytes()).into_owned());
        *self = next;
        Ok(alerts)
    }

    fn observe(&mut self, index: u64, e: &Entry, alerts: &mut Vec<Alert>) {
        let key = e.key_id.clone().unwrap_or_default();
        let allowed = e.decision == "allow";
        match e.action {
            Action::ReferenceImport if allowed => {
                self.references.extend(e.reference_measurements.iter().flatten().cloned());
            }
            Action::KeyRevoke if allowed => {
                self.revoked.insert((key, e.key_version));
            }
            Action::KeyCreate | Action::KeyRotate | Action::PolicySet if allowed => {
                if let Some(p) = &e.policy_sha256 {
                    self.policies.insert(key, p.clone());
                }
            }
            Action::Release if allowed => {
                let version = e.key_version.unwrap_or_default();
                if self.revoked.contains(&(key.clone(), Some(version)))
                    || self.revoked.contains(&(key.clone(), None))
                {
                    alerts.push(Alert::RevokedKeyRelease { index, key_id: key.clone(), version });
                }
                let (tee, measurement) =
                    (e.tee.clone().unwrap_or_default(), e.measurement.clone().unwrap_or_default());
                if !self.references.contains(&format!("{tee}:{measurement}")) {
                    alerts.push(Alert::UnreferencedMeasurement {
                        index,
                        key_id: key.clone(),
                        tee,
                        measurement,
                    });
                }
                if let Some(p) = &e.policy_sha256
                    && self.policies.get(&key) != Some(p)
                {
                    alerts.push(Alert::UnrecordedPolicy { index, key_id: key, policy: p.clone() });
                }
            }
            _ => {}
        }
    }
}

/// Splits a C2SP entry bundle (u16 big-endian length, then the entry, repeated).
pub fn split_bundle(mut bundle: &[u8]) -> Result<Vec<Vec<u8>>, TlogError> {
    let mut out = Vec::new();
    while !bundle.is_empty() {
        let bad = || TlogError::Malformed("truncated entry bundle".into());
        let len =
            u16::from_be_bytes([*bundle.first().ok_or_else(bad)?, *bundle.get(1).ok_or_else(bad)?]) as usize;
        let entry = bundle.get(2..2 + len).ok_or_else(bad)?;
        out.push(entry.to_vec());
        bundle = &bundle[2 + len..];
    }
    Ok(out)
}
