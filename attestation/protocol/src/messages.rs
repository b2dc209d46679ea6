//! Request and response bodies (CBOR, `application/cbor`). Every struct refuses unknown fields;
//! lengths are checked by [`ReleaseRequest::check`] and friends before anything is used.

use nacre_wire::Evidence;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::model::{ModelRegistration, ModelSignature, Sha256};

/// Content type of every request and response body.
pub const CONTENT_TYPE: &str = "application/cbor";

/// Routes, versioned under `/v1/`.
pub mod path {
    pub const CHALLENGE: &str = "/v1/challenge";
    pub const RELEASE: &str = "/v1/release";
    pub const RESULT_KEY: &str = "/v1/result-key";
    pub const KEYS: &str = "/v1/admin/keys";
    pub const AUDIT: &str = "/v1/admin/audit";
    pub const REFERENCE_VALUES: &str = "/v1/admin/reference-values";
    pub const METRICS: &str = "/metrics";
    /// Liveness: the process serves HTTPS.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: the database answers too.
    pub const READYZ: &str = "/readyz";
}

/// Longest key id: printable ASCII, used in paths and audit records.
pub const MAX_KEY_ID_LEN: usize = 128;
/// Longest nonce the protocol carries (the service issues 41-byte nonces).
pub const MAX_NONCE_LEN: usize = 64;
/// X25519 public key length (the HPKE KEM of DESIGN.md §6).
pub const HPKE_PUBLIC_KEY_LEN: usize = 32;

/// Checks a key id: 1–128 characters of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn check_key_id(id: &str) -> Result<(), ErrorBody> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::Malformed,
            format!("key id {id:?}: 1-{MAX_KEY_ID_LEN} characters of [A-Za-z0-9._-], not starting with '.'"),
        ))
    }
}

/// `POST /v1/challenge`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub key_id: String,
}

/// The single-use nonce to bind into the key-release REPORT_DATA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub nonce: ByteBuf,
    /// Unix seconds after which the nonce is refused.
    pub expires_at: i64,
}

/// `POST /v1/release`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub key_id: String,
    /// The version the sealed blob names in its header.
    pub key_version: u32,
    pub nonce: ByteBuf,
    /// The enclave's ephemeral X25519 HPKE public key.
    pub hpke_public_key: ByteBuf,
    pub evidence: Evidence,
}

impl ReleaseRequest {
    pub fn check(&self) -> Result<(), ErrorBody> {
        check_key_id(&self.key_id)?;
        if self.nonce.is_empty() || self.nonce.len() > MAX_NONCE_LEN {
            return Err(ErrorBody::new(ErrorCode::Malformed, format!("nonce of {} bytes", self.nonce.len())));
        }
        if self.hpke_public_key.len() != HPKE_PUBLIC_KEY_LEN {
            return Err(ErrorBody::new(
                ErrorCode::Malformed,
                format!(
                    "HPKE public key of {} bytes, expected {HPKE_PUBLIC_KEY_LEN}",
                    self.hpke_public_key.len()
                ),
            ));
        }
        self.evidence.check_limits().map_err(|e| ErrorBody::new(ErrorCode::Malformed, e.to_string()))
    }
}

/// The released key: HPKE-wrapped to the request's public key, with the signed result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResponse {
    pub key_id: String,
    pub key_version: u32,
    /// HPKE encapsulated key (X25519 public value).
    pub encapsulated_key: ByteBuf,
    /// HPKE ciphertext of the 32-byte data key.
    pub wrapped_key: ByteBuf,
    /// COSE_Sign1 over the EAR-style attestation result ([`crate::result`]).
    pub attestation_result: ByteBuf,
    /// Sequence number of the audit record committed for this release, before it was sent.
    pub audit_seq: i64,
    /// The release's leaf in the transparency log, committed before this was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<ReleaseLog>,
}

/// A release's leaf in the transparency log and its proof under the checkpoint signed for the
/// batch it was committed in (`nacre_tlog::ReleaseProof` in bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLog {
    /// The entry's canonical bytes (JSON).
    pub entry: ByteBuf,
    pub index: u64,
    /// The inclusion proof, leaf to root, 32 bytes each.
    pub inclusion: Vec<ByteBuf>,
    /// The signed checkpoint note.
    pub checkpoint: ByteBuf,
}

/// `GET /v1/result-key`: the key that signs attestation results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultKey {
    /// Ed25519 public key.
    pub ed25519: ByteBuf,
}

/// Why a request failed. Stable snake_case names on the wire, in metrics and in the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not the expected CBOR message, or a field is out of range.
    Malformed,
    /// The body exceeds the route's limit.
    TooLarge,
    UnsupportedMediaType,
    NotFound,
    UnknownKey,
    /// The nonce was not issued by this service (bad MAC or format).
    NonceInvalid,
    NonceExpired,
    /// The nonce was already used.
    NonceReplayed,
    /// The nonce was issued for another key id.
    NonceOtherKey,
    /// The evidence did not verify or the key's release policy refused its claims; `check`
    /// names the failed check.
    Evidence,
    KeyRevoked,
    VersionRevoked,
    /// The version is neither current nor allowed by the key's policy.
    VersionNotAllowed,
    /// Outside the key's release window.
    OutsideWindow,
    RateLimited,
    Unauthorized,
    Forbidden,
    Conflict,
    Internal,
    Unavailable,
    /// Reference values signed by a key the service does not trust, or a model signature by
    /// none of the key's release-policy signers.
    UntrustedSigner,
    /// Reference values, or a model's signature bundle, whose signature does not verify.
    BadSignature,
    /// The key's release policy names signers, but the model (or key version) has no
    /// publisher signature.
    SignatureRequired,
    /// The publisher signature's subject is not the registered model identity.
    ModelMismatch,
    /// A release policy names reference values that are not (or no longer) imported.
    UnknownReference,
    /// The request's body did not arrive within its deadline.
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UnknownKey => "unknown_key",
            ErrorCode::NonceInvalid => "nonce_invalid",
            ErrorCode::NonceExpired => "nonce_expired",
            ErrorCode::NonceReplayed => "nonce_replayed",
            ErrorCode::NonceOtherKey => "nonce_other_key",
            ErrorCode::Evidence => "evidence",
            ErrorCode::KeyRevoked => "key_revoked",
            ErrorCode::VersionRevoked => "version_revoked",
            ErrorCode::VersionNotAllowed => "version_not_allowed",
            ErrorCode::OutsideWindow => "outside_window",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::UntrustedSigner => "untrusted_signer",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::SignatureRequired => "signature_required",
            ErrorCode::ModelMismatch => "model_mismatch",
            ErrorCode::UnknownReference => "unknown_reference",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// The HTTP status that carries this error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Malformed => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden
            | ErrorCode::UntrustedSigner
            | ErrorCode::NonceInvalid
            | ErrorCode::NonceExpired
            | ErrorCode::NonceReplayed
            | ErrorCode::NonceOtherKey
            | ErrorCode::Evidence
            | ErrorCode::KeyRevoked
            | ErrorCode::VersionRevoked
            | ErrorCode::VersionNotAllowed
            | ErrorCode::OutsideWindow
            | ErrorCode::SignatureRequired
            | ErrorCode::ModelMismatch => 403,
            ErrorCode::NotFound | ErrorCode::UnknownKey | ErrorCode::UnknownReference => 404,
            ErrorCode::Timeout => 408,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::BadSignature => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// A key-release refusal (audited and rate-limited), as opposed to a transport error.
    pub fn is_denial(self) -> bool {
        (self.http_status() == 403 && self != ErrorCode::Forbidden)
            || self == ErrorCode::UnknownKey
            || self == ErrorCode::UnknownReference
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every non-2xx response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{code}{}: {reason}", check.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For [`ErrorCode::Evidence`]: the verifier's stable check name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    pub reason: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        ErrorBody { code, check: None, reason: reason.into() }
    }
    pub fn with_check(mut self, check: impl Into<String>) -> Self {
        self.check = Some(check.into());
        self
    }
}

// ---- admin API ------------------------------------------------------------------------------

/// `POST /v1/admin/keys`: register a key (version 1) with its release policy.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    pub key_id: String,
    pub data_key: ByteBuf,
    /// The release policy, TOML (see the service's `ReleasePolicy`).
    pub policy: String,
    /// The model version 1 is for. Required, with a signature by one of its signers, when the
    /// policy names `signers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRegistration>,
}

/// `POST /v1/admin/keys/{id}/versions`: add a version and make it current.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotate {
    pub data_key: ByteBuf,
    /// If set, the version this rotation must create, or 409: a model sealed for version N
    /// (the version is in its authenticated header) cannot be registered as another one.
    #[serde(default)]
    pub version: Option<u32>,
    /// The model the new version is for (see [`KeyCreate::model`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRegistration>,
}

// Data keys never appear in Debug output.
impl core::fmt::Debug for KeyCreate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyCreate")
            .field("key_id", &self.key_id)
            .field("data_key", &"<redacted>")
            .field("model", &self.model)
            .finish()
    }
}
impl core::fmt::Debug for KeyRotate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyRotate")
            .field("data_key", &"<redacted>")
            .field("version", &self.version)
            .field("model", &self.model)
            .finish()
    }
}

/// `POST /v1/admin/keys/{id}/revoke`: the whole key, or one version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRevoke {
    #[serde(default)]
    pub version: Option<u32>,
}

/// `POST /v1/admin/keys/{id}/rollback`: re-point the current version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRollback {
    pub version: u32,
}

/// `PUT /v1/admin/keys/{id}/policy`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    pub policy: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersionInfo {
    pub version: u32,
    pub created_at: i64,
    pub revoked: bool,
    /// The model this version was registered for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
}

/// A key version's registered model as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub model_identity: Sha256,
    /// Whether a signature bundle is stored with the version (releases under a policy with
    /// signers re-check it against the policy's current signers).
    pub signature_bundle: bool,
    /// The signature as verified at registration, when the policy then named signers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<ModelSignature>,
}

/// A key as the admin API shows it: never the key material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    pub key_id: String,
    pub current_version: u32,
    pub revoked: bool,
    pub versions: Vec<KeyVersionInfo>,
    pub policy: String,
}

/// `POST /v1/admin/reference-values`: import (or replace, by name) signed reference values.
/// The service verifies the signature over the exact document bytes with its configured
/// `trusted_image_signers` before anything is parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceImport {
    /// `reference-values.json`, byte for byte.
    pub document: ByteBuf,
    /// `reference-values.sig` (JSON `{algorithm, public_key, signature}`), byte for byte.
    pub signature: ByteBuf,
}

/// Imported reference values as the admin API shows them (`GET /v1/admin/reference-values`
/// lists them; an import answers with the stored one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceInfo {
    pub name: String,
    /// Hex Ed25519 public key that signed the document.
    pub signer: String,
    /// Unix seconds.
    pub imported_at: i64,
    /// Hex SHA-256 of the stored document.
    pub document_sha256: String,
    pub measurements: Vec<crate::reference::Expected>,
}

/// One hash-chained audit record (DESIGN.md §10), as exported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: i64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `release`, `deny`, `key_create`, `key_rotate`, `key_revoke`, `key_rollback`, `policy_set`,
    /// `reference_import`, `master_rewrap`.
    pub action: String,
    pub actor: String,
    pub key_id: Option<String>,
    pub key_version: Option<i64>,
    /// `allow` or `deny`.
    pub decision: String,
    pub reason: Option<String>,
    pub tee: Option<String>,
    /// Hex.
    pub measurement: Option<String>,
    /// Hex.
    pub chip_id: Option<String>,
    pub source: Option<String>,
    /// Hex SHA-256 of the previous record (64 zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record's canonical encoding ([`AuditRecord::compute_hash`]).
    pub hash: String,
}

impl AuditRecord {
    /// SHA-256 over the CBOR array of every field but `hash`, in declaration order. Any edit of
    /// a field, and any change of position (through `seq` and `prev_hash`), changes it.
    pub fn compute_hash(&self) -> String {
        use ciborium::Value;
        let opt_text = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
        let fields = Value::Array(vec![
            Value::Integer(self.seq.into()),
            Value::Integer(self.time_ms.into()),
            Value::Text(self.action.clone()),
            Value::Text(self.actor.clone()),
            opt_text(&self.key_id),
            self.key_version.map_or(Value::Null, |v| Value::Integer(v.into())),
            Value::Text(self.decision.clone()),
            opt_text(&self.reason),
            opt_text(&self.tee),
            opt_text(&self.measurement),
            opt_text(&self.chip_id),
            opt_text(&self.source),
            Value::Text(self.prev_hash.clone()),
        ]);
        let mut bytes = Vec::with_capacity(256);
        // Writing a Value into a Vec cannot fail.
        let _ = ciborium::into_writer(&fields, &mut bytes);
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"nacre/v1/audit");
        ctx.update(&bytes);
        hex::encode(ctx.finish())
    }
}

/// The hash that precedes the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
