//! The log's entries: one per key release, denial of authentic evidence, key-lifecycle event,
//! policy change and reference-value import. An entry is public: it names measurements and
//! digests, never secrets, client inputs or chip ids in clear (those are keyed hashes).
//!
//! Encoding: compact JSON, fields in declaration order, no absent-field defaults. Parsing is
//! strict: unknown fields are refused and the bytes must re-encode identically, so one entry
//! has one encoding and therefore one leaf hash.

use serde::{Deserialize, Serialize};

use crate::TlogError;

/// The entry format's version; a new field means a new version.
pub const ENTRY_VERSION: u32 = 1;

/// Longest entry the log accepts (C2SP entry bundles prefix each entry with a u16 length).
pub const MAX_ENTRY_BYTES: usize = 32 * 1024;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Release,
    Deny,
    KeyCreate,
    KeyRotate,
    KeyRevoke,
    KeyRollback,
    PolicySet,
    ReferenceImport,
    MasterRewrap,
    /// The head of a pre-log hash chain, carried into the tree when a database migrates.
    ChainMigrated,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Release => "release",
            Action::Deny => "deny",
            Action::KeyCreate => "key_create",
            Action::KeyRotate => "key_rotate",
            Action::KeyRevoke => "key_revoke",
            Action::KeyRollback => "key_rollback",
            Action::PolicySet => "policy_set",
            Action::ReferenceImport => "reference_import",
            Action::MasterRewrap => "master_rewrap",
            Action::ChainMigrated => "chain_migrated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// One log entry. Hex fields are lowercase hex; digests are SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    /// Unix milliseconds, the service's clock.
    pub time_ms: i64,
    pub action: Action,
    /// The admin token's name for admin actions, `guest` for releases and denials.
    pub actor: String,
    pub key_id: Option<String>,
    pub key_version: Option<i64>,
    /// `allow` or `deny`.
    pub decision: String,
    /// A reason code, never free text from a request.
    pub reason: Option<String>,
    /// `snp`, `tdx` or `sim`.
    pub tee: Option<String>,
    pub measurement: Option<String>,
    /// HMAC-SHA256 of the chip id under the log's chip key: links one chip's entries without
    /// listing the fleet's hardware.
    pub chip_id_hmac: Option<String>,
    /// The SHA-256 of the key's release policy text in force (set by `key_create` and
    /// `policy_set`, recorded by every release and denial).
    pub policy_sha256: Option<String>,
    /// For `reference_import`, the imported document's SHA-256; for a release or denial, the
    /// SHA-256 over each (name, NUL, document SHA-256) the policy appraised under, in order.
    pub reference_values_sha256: Option<String>,
    /// For a release: the digest of the enclave's HPKE release key, which the enclave binds into
    /// its attested TLS evidence (model identity v2).
    pub release_key_sha256: Option<String>,
    /// For `chain_migrated`: the last hash of the migrated chain and its record count.
    pub legacy_chain_head: Option<String>,
    /// For `reference_import`: every measurement the imported document accepts, as
    /// `<tee>:<hex>`, so that a monitor can flag a release to any other.
    pub reference_measurements: Option<Vec<String>>,
}

impl Entry {
    /// The canonical bytes: the leaf's data.
    pub fn encode(&self) -> Result<Vec<u8>, TlogError> {
        self.check()?;
        let bytes = serde_json::to_vec(self).map_err(|e| TlogError::Entry(e.to_string()))?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(TlogError::Entry(format!("{} bytes, over {MAX_ENTRY_BYTES}", bytes.len())));
        }
        Ok(bytes)
    }

    /// Parses an entry's bytes strictly (see the module docs).
    pub fn decode(bytes: &[u8]) -> Result<Self, TlogError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(TlogError::Entry(format!("{} bytes, over {MAX_ENTRY_BYTES}", bytes.len())));
        }
        let entry: Entry = serde_json::from_slice(bytes).map_err(|e| TlogError::Entry(e.to_string()))?;
        if entry.encode()? != bytes {
            return Err(TlogError::Entry("not in canonical form".into()));
        }
        Ok(entry)
    }

    /// The leaf hash (RFC 6962: SHA-256 of 0x00 and the entry bytes).
    pub fn leaf_hash(&self) -> Result<crate::Hash, TlogError> {
        Ok(crate::tree::leaf_hash(&self.encode()?))
    }

    fn check(&self) -> Result<(), TlogError> {
        let bad = |what: &str| Err(TlogError::Entry(what.to_owned()));
        if self.v != ENTRY_VERSION {
            return bad("unknown entry version");
        }
        if self.decision != "allow" && self.decision != "deny" {
            return bad("decision is neither allow nor deny");
        }
        let digests = [
            ("chip_id_hmac", &self.chip_id_hmac),
            ("policy_sha256", &self.policy_sha256),
            ("reference_values_sha256", &self.reference_values_sha256),
            ("release_key_sha256", &self.release_key_sha256),
            ("legacy_chain_head", &self.legacy_chain_head),
        ];
        for (name, value) in digests {
            if value.as_ref().is_some_and(|v| !is_lower_hex(v, 64)) {
                return Err(TlogError::Entry(format!("{name} is not 64 lowercase hex digits")));
            }
        }
        if self.measurement.as_ref().is_some_and(|m| !is_lower_hex(m, m.len()) || m.len() > 192) {
            return bad("measurement is not lowercase hex of at most 96 bytes");
        }
        for m in self.reference_measurements.iter().flatten() {
            let Some((tee, hex)) = m.split_once(':') else {
                return bad("a reference measurement is not <tee>:<hex>");
            };
            if !matches!(tee, "sim" | "snp" | "tdx") || !is_lower_hex(hex, 96) {
                return bad("a reference measurement is not sim|snp|tdx and 96 lowercase hex digits");
            }
        }
        if self.action == Action::Release && (self.decision != "allow" || self.release_key_sha256.is_none()) {
            return bad("a release entry needs decision allow and the release key's digest");
        }
        Ok(())
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.len().is_multiple_of(2) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
