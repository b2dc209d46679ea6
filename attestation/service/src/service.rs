//! The service's decisions, independent of HTTP: challenges, key release, admin changes.
//! Every release and every denial of a well-formed release request is committed to the audit
//! log before the caller can answer; internal failures answer 500 and release nothing. A
//! caller past its denial allowance (see [`crate::ratelimit`]) is answered 429 with no record,
//! whether that is known up front (its source, its token) or only once its evidence proved to
//! come from a chip that has used up its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nacre_protocol::messages::{
    AuditRecord, Challenge, ChallengeRequest, KeyCreate, KeyInfo, KeyRevoke, KeyRollback, KeyRotate,
    KeyVersionInfo, ModelInfo, PolicySet, ReferenceImport, ReferenceInfo, ReleaseLog, ReleaseRequest,
    ReleaseResponse, check_key_id,
};
use nacre_protocol::model::{ModelRegistration, ModelSignature};
use nacre_protocol::reference::{ReferenceError, ReferenceValues};
use nacre_protocol::result::{
    AttestationResult, EAR_PROFILE, GuestAppraisal, ResultSigner, SUBMOD, VerifierId,
};
use nacre_protocol::{ErrorBody, ErrorCode, wrap};
use nacre_verifier::collateral::FileCache;
use nacre_verifier::{
    Appraiser, Claims, ConfigError, EvidenceVerifier, ExpectedReportData, PlatformClaims, SnpRoots,
    VerifyError,
};
use nacre_wire::binding::KeyReleaseBinding;
use serde_bytes::ByteBuf;

use crate::appraisal::AppraisalPool;
use crate::config::{Config, Limits};
use crate::master::{Keyring, MasterKey};
use crate::metrics::Metrics;
use crate::nonce::NonceIssuer;
use crate::policy::ReleasePolicy;
use crate::ratelimit::{Charge, DenialLimiter};
use crate::signers::{self, ModelRow};
use crate::store::{
    AuditEntry, Committed, DecidedUnder, KeyRow, LogKeys, ReferenceRow, ReleaseCommit, Store, StoreError,
};
use crate::tokens::{Principal, Role, Tokens};

pub struct Service {
    store: Store,
    keyring: Keyring,
    nonces: NonceIssuer,
    verifier: EvidenceVerifier,
    signer: ResultSigner,
    tokens: Tokens,
    limiter: DenialLimiter,
    limits: Limits,
    pub metrics: Metrics,
    /// The witnesses checkpoints are pushed to (`witnesses`).
    witnesses: Vec<Arc<crate::witnesses::Peer>>,
    /// Parsed release policies by key id, with the text they were parsed from.
    policies: Mutex<HashMap<String, (String, Arc<ReleasePolicy>)>>,
    /// Ed25519 keys whose reference values may be imported and used (`trusted_image_signers`).
    image_signers: Vec<[u8; 32]>,
    /// Verified, parsed reference-values documents by the SHA-256 of their bytes. Content
    /// addressed: a re-import stores another document, so an entry is never stale.
    references: Mutex<HashMap<[u8; 32], Arc<ReferenceValues>>>,
    /// Appraisers of policies that name reference values, by key id, each valid only for the
    /// policy (same parse) and the document digests it was built from.
    resolved: Mutex<HashMap<String, ResolvedPolicy>>,
    /// Evidence appraisal: one thread per CPU, first come, first served.
    appraisals: AppraisalPool,
    /// Key and reference-values rows as last read for releases, so that a release reads no
    /// row from the database before its commit. Only a hint: the commit refuses a release
    /// whose key or documents changed since the rows were read (another replica's write, or a
    /// race with an admin call here) and the release is decided again on fresh rows; a denial
    /// decided on cached rows stands only if fresh rows equal them. Admin calls here drop
    /// what they change.
    rows: Mutex<RowCache>,
    /// Per-key locks (striped by key id, so their number is fixed): a release holds its key's
    /// for reading from its decision to its commit, an admin change to the key for writing.
    /// So on this replica a change waits for the releases of that key in flight (first come,
    /// first served), and they never have to be decided again because of it; only a change
    /// made through another replica can make a commit refuse (`KeyChanged`).
    key_locks: Box<[tokio::sync::RwLock<()>]>,
    admission: Arc<nacre_http::conns::Admission>,
    /// Model signatures checked for releases, by (key id, version), each valid only under the
    /// policy (same parse) it was checked against. A version's model never changes once
    /// stored, so the policy is all that can make an entry stale.
    signatures: Mutex<HashMap<(String, u32), CheckedSignature>>,
}

/// A model signature checked for releases under this policy (same parse).
type CheckedSignature = (Arc<ReleasePolicy>, Arc<ModelSignature>);

/// Number of per-key lock stripes.
const KEY_LOCK_STRIPES: usize = 64;

#[derive(Default)]
struct RowCache {
    keys: HashMap<String, Arc<KeyRow>>,
    references: HashMap<String, Arc<(ReferenceRow, [u8; 32])>>,
}

/// Bound on each map of the row cache (cleared when exceeded; it refills on use).
const ROW_CACHE_MAX: usize = 4096;

/// The rows a release was decided under.
#[derive(Clone)]
struct Basis {
    key: Arc<KeyRow>,
    /// (name, document digest) of the reference values the policy names, in its order.
    references: Vec<(String, [u8; 32])>,
    /// Whether any of it came from the row cache rather than from a read just made.
    cached: bool,
}

impl Basis {
    /// The digests the log entry records: the release policy's text, and the reference values
    /// (each name and document digest, in the policy's order), if the policy names any.
    fn log_digests(&self) -> (Option<String>, Option<String>) {
        let sha = |parts: &[&[u8]]| {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            parts.iter().for_each(|p| ctx.update(p));
            hex::encode(ctx.finish())
        };
        let references = (!self.references.is_empty()).then(|| {
            let parts: Vec<Vec<u8>> = self
                .references
                .iter()
                .map(|(name, digest)| [name.as_bytes(), b"\0", digest].concat())
                .collect();
            sha(&parts.iter().map(Vec::as_slice).collect::<Vec<_>>())
        });
        (Some(sha(&[self.key.policy.as_bytes()])), references)
    }

    fn decided_under(&self) -> DecidedUnder {
        DecidedUnder {
            key: Some((self.key.current_version, self.key.policy.clone())),
            references: self.references.clone(),
        }
    }
}

/// A release policy with its reference values resolved.
struct ResolvedPolicy {
    policy: Arc<ReleasePolicy>,
    digests: Vec<[u8; 32]>,
    appraiser: Arc<Appraiser>,
}

/// Bound on the parsed-documents cache (cleared when exceeded; it refills on use).
const REFERENCE_CACHE_MAX: usize = 1024;

/// How often a release is re-decided when reference values it used were replaced before it
/// could commit.
const RELEASE_ATTEMPTS: usize = 3;

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("verifier", &self.verifier)
            .field("kek", &self.keyring.current.id())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{what}: {message}")]
    Load { what: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn load(what: impl std::fmt::Display, message: impl std::fmt::Display) -> StartError {
    StartError::Load { what: what.to_string(), message: message.to_string() }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Loads the master keyring named by `config`.
pub fn load_keyring(config: &Config) -> Result<Keyring, StartError> {
    let read = |p: &std::path::Path| {
        let text = std::fs::read_to_string(p).map_err(|e| load(p.display(), e))?;
        MasterKey::from_hex(&text).map_err(|e| load(p.display(), e))
    };
    let current = match (&config.master_key_file, &config.master_key_env) {
        (Some(p), _) => read(p)?,
        (None, Some(var)) => {
            let text = std::env::var(var).map_err(|_| load(format!("${var}"), "not set"))?;
            MasterKey::from_hex(&text).map_err(|e| load(format!("${var}"), e))?
        }
        (None, None) => return Err(load("master key", "not configured")),
    };
    let previous = config.previous_master_key_files.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    Ok(Keyring { current, previous })
}

/// The transparency log's keys: the seed in `log_signing_key` (64 hex digits), under
/// `log_origin`.
pub fn load_log_keys(config: &Config) -> Result<LogKeys, StartError> {
    let path = &config.log_signing_key;
    let text = std::fs::read_to_string(path).map_err(|e| load(path.display(), e))?;
    let seed = zeroize::Zeroizing::new(
        hex::decode(text.trim()).map_err(|_| load(path.display(), "not 64 hex digits"))?,
    );
    let seed: &[u8; 32] =
        seed.as_slice().try_into().map_err(|_| load(path.display(), "not 64 hex digits"))?;
    LogKeys::from_seed(&config.log_origin, seed).map_err(|e| load("log_origin", e))
}

/// Opens the store with the log's keys.
pub async fn open_store(config: &Config, max_connections: u32) -> Result<Store, StartError> {
    if let Some(risk) = config.database_transport_risk() {
        tracing::warn!("{risk}");
    }
    Ok(Store::connect(&config.database, max_connections, load_log_keys(config)?).await?)
}

/// Master-key rotation, second step: re-wraps every data key version that is not yet under
/// the current master key (opened with the previous keys of the keyring), in one audited
/// transaction. Safe while the service runs: each version is readable before and after.
pub async fn rewrap_data_keys(config: &Config, actor: &str) -> Result<usize, StartError> {
    let keyring = load_keyring(config)?;
    let store = open_store(config, 1).await?;
    let current = &keyring.current;
    let audit = AuditEntry {
        time_ms: now_ms(),
        action: "master_rewrap",
        actor: actor.to_owned(),
        allow: true,
        ..AuditEntry::default()
    };
    let corrupt = |e: crate::master::MasterKeyError| StoreError::Corrupt(e.to_string());
    let changed = store
        .rewrap(
            current.id(),
            |row, key_id| {
                if row.kek_id == current.id() {
                    return Ok(None);
                }
                let key =
                    keyring.open(&row.kek_id, key_id, row.version, &row.wrapped_key).map_err(corrupt)?;
                current.seal(key_id, row.version, &key).map(Some).map_err(corrupt)
            },
            audit,
        )
        .await?;
    store.close().await;
    Ok(changed)
}

fn store_error(e: StoreError) -> ErrorBody {
    match e {
        StoreError::UnknownKey(k) => ErrorBody::new(ErrorCode::UnknownKey, format!("key {k} is unknown")),
        StoreError::KeyExists(_) | StoreError::VersionMismatch { .. } => {
            ErrorBody::new(ErrorCode::Conflict, e.to_string())
        }
        StoreError::UnknownVersion { .. } => ErrorBody::new(ErrorCode::NotFound, e.to_string()),
        StoreError::KeyRevoked(_) => ErrorBody::new(ErrorCode::KeyRevoked, e.to_string()),
        StoreError::VersionRevoked { .. } => ErrorBody::new(ErrorCode::VersionRevoked, e.to_string()),
        StoreError::NonceReplayed => ErrorBody::new(ErrorCode::NonceReplayed, e.to_string()),
        StoreError::NonceExpired => ErrorBody::new(ErrorCode::NonceExpired, e.to_string()),
        StoreError::UnknownReference(_) => ErrorBody::new(ErrorCode::UnknownReference, e.to_string()),
        StoreError::ReferenceChanged(_) | StoreError::KeyChanged(_) => {
            ErrorBody::new(ErrorCode::Unavailable, format!("{e}; retry with a new challenge"))
        }
        StoreError::Db(_)
        | StoreError::Migrate(_)
        | StoreError::Corrupt(_)
        | StoreError::BatchFailed(_)
        | StoreError::Log(_) => {
            tracing::error!(error = %e, "storage failure");
            ErrorBody::new(ErrorCode::Internal, "storage failure")
        }
    }
}

/// The answer to evidence the verifier did not accept. Evidence that is malformed, not
/// authentic or refused by the policy is the guest's: a denial ([`ErrorCode::Evidence`],
/// audited, charged to its source). A verifier that could not decide, because of its own
/// configuration or a collateral cache that lacks this platform's endorsements, is the
/// service's fault: a server error (logged here with its details, not audited as the guest's
/// denial, not charged to it), which names only the check. Sim evidence at a service that
/// does not trust the sim root is the exception: refusing it is that configuration working,
/// so it stays a denial.
fn evidence_error(key_id: &str, e: &VerifyError) -> ErrorBody {
    match e {
        VerifyError::Config(c) if !matches!(c, ConfigError::NoSimRoot) => {
            tracing::error!(key_id, error = %e, "evidence could not be appraised: verifier configuration or collateral");
            ErrorBody::new(ErrorCode::Internal, "the evidence could not be appraised").with_check(e.check())
        }
        _ => ErrorBody::new(ErrorCode::Evidence, e.to_string()).with_check(e.check()),
    }
}

/// What a decided release request contributes to its audit record, and whom its refusal is
/// charged to.
struct Subject {
    tee: Option<String>,
    measurement: Option<String>,
    chip_id: Option<String>,
    /// The chip of authentic SNP evidence (see [`Charge::chip`]).
    chip: Option<Charge>,
    /// The released version's model signature, when the policy requires signers.
    model_signature: Option<Arc<ModelSignature>>,
}

fn subject(claims: &Claims) -> Subject {
    let (chip_id, chip) = match &claims.platform {
        PlatformClaims::Snp(s) => (Some(hex::encode(s.report.chip_id)), Charge::chip(&s.report.chip_id)),
        PlatformClaims::Tdx(_) => (None, None),
    };
    Subject {
        tee: Some(claims.tee.as_str().into()),
        measurement: Some(hex::encode(claims.measurement)),
        chip_id,
        chip,
        model_signature: None,
    }
}

/// A refusal, with what is known about the requester at that point.
struct Denied {
    body: ErrorBody,
    nonce_expires_at: Option<i64>,
    subject: Option<Subject>,
    /// The rows the denial was decided on, if it depends on any.
    basis: Option<Basis>,
}

impl From<ErrorBody> for Denied {
    fn from(body: ErrorBody) -> Self {
        Denied { body, nonce_expires_at: None, subject: None, basis: None }
    }
}

impl Service {
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let keyring = load_keyring(config)?;
        let signer_der = std::fs::read(&config.result_signing_key)
            .map_err(|e| load(config.result_signing_key.display(), e))?;
        let signer = ResultSigner::from_pkcs8(&signer_der)
            .map_err(|e| load(config.result_signing_key.display(), e))?;
        let collateral = config
            .collateral_dir
            .as_ref()
            .map(|d| Arc::new(FileCache::new(d)) as Arc<dyn nacre_verifier::collateral::CollateralSource>);
        let mut verifier = EvidenceVerifier::new(collateral);
        if let Some(root) = &config.insecure_sim_root {
            let bytes = std::fs::read(root).map_err(|e| load(root.display(), e))?;
            let der = match pem_cert(&bytes) {
                Some(der) => der,
                None => bytes,
            };
            verifier = verifier.with_sim(SnpRoots::insecure_sim(&der).map_err(|e| load(root.display(), e))?);
            tracing::warn!("INSECURE: insecure_sim_root is set: simulated-TEE evidence can obtain keys");
        }
        let tokens = Tokens::new(&config.tokens).map_err(|e| load("tokens", e))?;
        let image_signers = config.image_signers().map_err(|e| load("trusted_image_signers", e))?;
        let store = open_store(config, config.limits.db_connections).await?;
        let witnesses = config
            .witnesses
            .iter()
            .map(|w| crate::witnesses::Peer::new(w).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(|e| load("witnesses", e))?;
        let admission = nacre_http::conns::Admission::new(crate::http::conn_limits(&config.limits));
        Ok(Service {
            witnesses,
            nonces: NonceIssuer::new(keyring.current.nonce_mac_key()),
            store,
            keyring,
            verifier,
            signer,
            tokens,
            limiter: DenialLimiter::new(
                config.limits.denial_burst,
                config.limits.denials_per_minute,
                config.limits.max_tracked_sources,
            ),
            limits: config.limits.clone(),
            metrics: Metrics::default().with_connections(admission.clone()),
            policies: Mutex::default(),
            image_signers,
            references: Mutex::default(),
            resolved: Mutex::default(),
            appraisals: AppraisalPool::start(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )
            .map_err(|e| load("evidence appraisal threads", e))?,
            rows: Mutex::default(),
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
            admission,
            signatures: Mutex::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn witnesses(&self) -> &[Arc<crate::witnesses::Peer>] {
        &self.witnesses
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The connection table (its counters go to the metrics).
    pub fn admission(&self) -> &Arc<nacre_http::conns::Admission> {
        &self.admission
    }

    pub fn result_public_key(&self) -> &[u8] {
        self.signer.public_key()
    }

    /// Refuses a caller (see [`Charge`]) that used up its denial allowance.
    pub fn admit(&self, who: impl Into<Charge>) -> Result<(), ErrorBody> {
        let who = who.into();
        if self.limiter.allowed(&who) {
            Ok(())
        } else {
            self.metrics.deny(ErrorCode::RateLimited.as_str());
            Err(ErrorBody::new(
                ErrorCode::RateLimited,
                format!("too many refused requests from {}; retry later", who.noun()),
            ))
        }
    }

    /// Charges a refusal to `who` and counts it. A server error is the service's fault,
    /// never charged to the caller.
    pub fn charge(&self, who: impl Into<Charge>, code: ErrorCode) {
        if code.http_status() >= 500 {
            return;
        }
        self.limiter.record_denial(&who.into());
        self.metrics.deny(code.as_str());
    }

    /// Callers whose denials are tracked now: never more than `max_tracked_sources`.
    pub fn tracked_callers(&self) -> usize {
        self.limiter.tracked()
    }

    pub fn challenge(&self, req: &ChallengeRequest) -> Result<Challenge, ErrorBody> {
        check_key_id(&req.key_id)?;
        let expires_at = now_unix() + self.limits.challenge_ttl_secs;
        let nonce = self
            .nonces
            .issue(&req.key_id, expires_at)
            .map_err(|c| ErrorBody::new(c, "random number generator failed"))?;
        Ok(Challenge { nonce: ByteBuf::from(nonce), expires_at })
    }

    fn policy_for(&self, key_id: &str, text: &str) -> Result<Arc<ReleasePolicy>, ErrorBody> {
        let mut cache = self.policies.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached_text, p)) = cache.get(key_id)
            && cached_text == text
        {
            return Ok(p.clone());
        }
        let parsed = Arc::new(ReleasePolicy::parse(text).map_err(|e| {
            tracing::error!(key_id, error = %e, "stored release policy does not parse");
            ErrorBody::new(ErrorCode::Internal, "stored release policy is invalid")
        })?);
        cache.insert(key_id.to_owned(), (text.to_owned(), parsed.clone()));
        Ok(parsed)
    }

    /// Handles a release request from `source`: decides, commits, answers.
    pub async fn release(&self, req: ReleaseRequest, source: IpAddr) -> Result<ReleaseResponse, ErrorBody> {
        req.check()?;
        let audit = |allow: bool, reason: Option<String>, s: Option<&Subject>| AuditEntry {
            time_ms: now_ms(),
            action: if allow { "release" } else { "deny" },
            actor: "guest".into(),
            key_id: Some(req.key_id.clone()),
            key_version: Some(req.key_version),
            allow,
            // A release names the model's signer (issue 16): who signed what was released.
            reason: reason.or_else(|| {
                s.and_then(|s| s.model_signature.as_deref())
                    .map(|m| format!("model {}", signers::describe_signature(m)))
            }),
            tee: s.and_then(|s| s.tee.clone()).or_else(|| Some(req.evidence.tee.as_str().into())),
            measurement: s.and_then(|s| s.measurement.clone()),
            chip_id: s.and_then(|s| s.chip_id.clone()),
            source: Some(source.to_string()),
            ..AuditEntry::default()
        };
        let nonce_hex = hex::encode(&req.nonce);
        let _key = self.key_lock(&req.key_id).read().await;
        let mut attempt = 0;
        let mut fresh = false;
        let outcome = loop {
            attempt += 1;
            let (response, subject, nonce_expires_at, basis) = match self.decide(&req, fresh).await {
                Ok(decided) => decided,
                // Denied on cached rows: the denial stands only if the stored rows are the same.
                Err(Denied { body, basis: Some(basis), .. })
                    if body.code.is_denial()
                        && basis.cached
                        && attempt < RELEASE_ATTEMPTS
                        && self.changed_since(&req.key_id, &basis).await.map_err(store_error)? =>
                {
                    fresh = true;
                    continue;
                }
                Err(denied) => break denied,
            };
            let t = Instant::now();
            let committed = self
                .store
                .commit_release_checked(
                    ReleaseCommit {
                        nonce_hex: &nonce_hex,
                        nonce_expires_at,
                        key_id: &req.key_id,
                        version: req.key_version,
                        audit: {
                            let (policy_sha256, reference_values_sha256) = basis.log_digests();
                            AuditEntry {
                                policy_sha256,
                                reference_values_sha256,
                                release_key_sha256: Some(hex::encode(aws_lc_rs::digest::digest(
                                    &aws_lc_rs::digest::SHA256,
                                    &req.hpke_public_key,
                                ))),
                                ..audit(true, None, Some(&subject))
                            }
                        },
                    },
                    &basis.decided_under(),
                )
                .await;
            self.metrics.stage("storage", t.elapsed().as_secs_f64());
            match committed {
                Ok(Committed { record, log }) => {
                    let mut response = response;
                    response.audit_seq = record.seq;
                    response.log = log.map(|leaf| ReleaseLog {
                        entry: ByteBuf::from(leaf.entry),
                        index: leaf.index,
                        inclusion: leaf.inclusion.iter().map(|h| ByteBuf::from(h.0.to_vec())).collect(),
                        checkpoint: ByteBuf::from(leaf.checkpoint.to_vec()),
                    });
                    self.metrics.releases.inc();
                    tracing::info!(key_id = %req.key_id, version = req.key_version, %source, "key released");
                    return Ok(response);
                }
                // The key or its reference values changed between the read and the commit
                // (nothing was written): decide again on fresh rows.
                Err(e @ (StoreError::ReferenceChanged(_) | StoreError::KeyChanged(_)))
                    if attempt < RELEASE_ATTEMPTS =>
                {
                    tracing::info!(key_id = %req.key_id, reason = %e, "re-deciding on fresh rows");
                    fresh = true; // the fresh read replaces the cached rows
                    continue;
                }
                Err(
                    e @ (StoreError::NonceReplayed
                    | StoreError::NonceExpired
                    | StoreError::KeyRevoked(_)
                    | StoreError::VersionRevoked { .. }
                    | StoreError::UnknownReference(_)),
                ) => {
                    break Denied {
                        body: store_error(e),
                        nonce_expires_at: Some(nonce_expires_at),
                        subject: Some(subject),
                        basis: None,
                    };
                }
                Err(e) => return Err(store_error(e)),
            }
        };
        let Denied { body, nonce_expires_at, subject, basis } = outcome;
        if body.code.is_denial() {
            // Refused after the evidence proved to come from a real chip: the chip pays, not
            // the relay its guest shares with others. A chip past its allowance is refused
            // without a record (as a source past its allowance is, before any work), and the
            // source pays for that: a chip that keeps sending refused evidence past its own
            // allowance is making appraisal work, which its address must carry.
            let who = match subject.as_ref().and_then(|s| s.chip) {
                Some(chip) => {
                    if let Err(limited) = self.admit(chip) {
                        self.limiter.record_denial(&Charge::from(source));
                        tracing::info!(key_id = %req.key_id, %source, "release denied: chip over its denial allowance");
                        return Err(limited);
                    }
                    chip
                }
                None => Charge::from(source),
            };
            self.charge(who, body.code);
            let reason = Some(match &body.check {
                Some(check) => format!("{}/{check}: {}", body.code, body.reason),
                None => format!("{}: {}", body.code, body.reason),
            });
            let nonce = nonce_expires_at.map(|e| (nonce_hex.as_str(), e));
            let (policy_sha256, reference_values_sha256) =
                basis.as_ref().map(Basis::log_digests).unwrap_or_default();
            let entry = AuditEntry {
                policy_sha256,
                reference_values_sha256,
                ..audit(false, reason, subject.as_ref())
            };
            self.store.commit_denial(entry, nonce).await.map_err(store_error)?;
            tracing::info!(key_id = %req.key_id, %source, code = %body.code, reason = %body.reason, "release denied");
        }
        Err(body)
    }

    /// The key row for a release: from the row cache unless `fresh` (then read, and cached).
    async fn key_row(&self, key_id: &str, fresh: bool) -> Result<Option<(Arc<KeyRow>, bool)>, StoreError> {
        if !fresh && let Some(row) = self.rows().keys.get(key_id) {
            return Ok(Some((row.clone(), true)));
        }
        let Some(row) = self.store.key(key_id).await? else { return Ok(None) };
        let row = Arc::new(row);
        let mut rows = self.rows();
        if rows.keys.len() >= ROW_CACHE_MAX {
            rows.keys.clear();
        }
        rows.keys.insert(key_id.to_owned(), row.clone());
        Ok(Some((row, false)))
    }

    /// The stored reference-values rows of `names` with their document digests (a missing
    /// name is absent), and whether any came from the row cache (never unless `fresh` is false).
    async fn reference_rows(
        &self,
        names: &[String],
        fresh: bool,
    ) -> Result<(Vec<Arc<(ReferenceRow, [u8; 32])>>, bool), StoreError> {
        if !fresh {
            let rows = self.rows();
            let cached: Vec<_> = names.iter().filter_map(|n| rows.references.get(n).cloned()).collect();
            if cached.len() == names.len() {
                return Ok((cached, true));
            }
        }
        let read: Vec<_> = self
            .store
            .references(names)
            .await?
            .into_iter()
            .map(|row| {
                let digest = row.digest();
                Arc::new((row, digest))
            })
            .collect();
        let mut rows = self.rows();
        if rows.references.len() + read.len() > ROW_CACHE_MAX {
            rows.references.clear();
        }
        for r in &read {
            rows.references.insert(r.0.name.clone(), r.clone());
        }
        Ok((read, false))
    }

    fn key_lock(&self, key_id: &str) -> &tokio::sync::RwLock<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        key_id.hash(&mut h);
        &self.key_locks[(h.finish() % KEY_LOCK_STRIPES as u64) as usize]
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, RowCache> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops a key's cached row (after an admin change to it, or a refused commit).
    fn forget_key(&self, key_id: &str) {
        self.rows().keys.remove(key_id);
    }

    /// Whether the stored key row or reference values differ from `basis` (the stored ones
    /// replace the cached ones).
    async fn changed_since(&self, key_id: &str, basis: &Basis) -> Result<bool, StoreError> {
        let key_changed = match self.key_row(key_id, true).await? {
            Some((row, _)) => *row != *basis.key,
            None => true,
        };
        let names: Vec<String> = basis.references.iter().map(|(n, _)| n.clone()).collect();
        let (rows, _) = self.reference_rows(&names, true).await?;
        let now: Vec<(String, [u8; 32])> = rows.iter().map(|r| (r.0.name.clone(), r.1)).collect();
        Ok(key_changed || now != basis.references)
    }

    /// Resolves the reference values `policy` names, as stored (or cached, unless `fresh`):
    /// the appraiser to use (None: the policy names none, use its own), the (name, document
    /// digest) pairs the commit must find unchanged, and whether any row came from the cache.
    /// A name that is not imported denies the release.
    async fn resolve_references(
        &self,
        key_id: &str,
        policy: &Arc<ReleasePolicy>,
        fresh: bool,
    ) -> Result<(Option<Arc<Appraiser>>, Vec<(String, [u8; 32])>, bool), ErrorBody> {
        if policy.reference_values.is_empty() {
            return Ok((None, Vec::new(), false));
        }
        let (rows, cached) =
            self.reference_rows(&policy.reference_values, fresh).await.map_err(store_error)?;
        if let Some(missing) = policy.reference_values.iter().find(|n| !rows.iter().any(|r| &r.0.name == *n))
        {
            return Err(ErrorBody::new(
                ErrorCode::UnknownReference,
                format!(
                    "the key's release policy names reference values {missing:?}, which are not imported"
                ),
            ));
        }
        let digests: Vec<[u8; 32]> = rows.iter().map(|r| r.1).collect();
        let pairs = rows.iter().map(|r| (r.0.name.clone(), r.1)).collect();
        {
            let cache = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = cache.get(key_id)
                && Arc::ptr_eq(&r.policy, policy)
                && r.digests == digests
            {
                return Ok((Some(r.appraiser.clone()), pairs, cached));
            }
        }
        let values = rows.iter().map(|r| self.reference(&r.0, &r.1)).collect::<Result<Vec<_>, _>>()?;
        let appraiser =
            Arc::new(policy.resolve(&values.iter().map(Arc::as_ref).collect::<Vec<_>>()).map_err(|e| {
                tracing::error!(key_id, error = %e, "stored reference values do not resolve");
                ErrorBody::new(ErrorCode::Internal, "stored reference values are invalid")
            })?);
        self.resolved.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key_id.to_owned(),
            ResolvedPolicy { policy: policy.clone(), digests, appraiser: appraiser.clone() },
        );
        Ok((Some(appraiser), pairs, cached))
    }

    /// A stored reference-values document, verified under this service's trusted signers and
    /// parsed once per distinct document.
    fn reference(&self, row: &ReferenceRow, digest: &[u8; 32]) -> Result<Arc<ReferenceValues>, ErrorBody> {
        if let Some(v) = self.references.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            return Ok(v.clone());
        }
        let verified =
            ReferenceValues::verify(row.document.as_bytes(), row.signature.as_bytes(), &self.image_signers)
                .and_then(|v| {
                    if v.name == row.name {
                        Ok(v)
                    } else {
                        Err(ReferenceError::Format(format!(
                            "stored under {:?} but named {:?}",
                            row.name, v.name
                        )))
                    }
                });
        let values = match verified {
            Ok(v) => Arc::new(v),
            Err(ReferenceError::UntrustedSigner(signer)) => {
                return Err(ErrorBody::new(
                    ErrorCode::UntrustedSigner,
                    format!(
                        "reference values {:?} are signed by {signer}, which this service does not trust",
                        row.name
                    ),
                ));
            }
            Err(e) => {
                tracing::error!(name = %row.name, error = %e, "stored reference values do not verify");
                return Err(ErrorBody::new(ErrorCode::Internal, "stored reference values are invalid"));
            }
        };
        let mut cache = self.references.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REFERENCE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(*digest, values.clone());
        Ok(values)
    }

    /// The model signature a release of `version` under `policy` relies on (None when the
    /// policy names no signers): the stored bundle verified against the policy's signers at
    /// its registration time, once per policy parse.
    fn model_signature(
        &self,
        key_id: &str,
        version: &crate::store::VersionRow,
        policy: &Arc<ReleasePolicy>,
    ) -> Result<Option<Arc<ModelSignature>>, ErrorBody> {
        if policy.signers.is_empty() {
            return Ok(None);
        }
        let cache_key = (key_id.to_owned(), version.version);
        {
            let cache = self.signatures.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((p, signature)) = cache.get(&cache_key)
                && Arc::ptr_eq(p, policy)
            {
                return Ok(Some(signature.clone()));
            }
        }
        let signature =
            Arc::new(signers::check_at_release(&policy.signers, version.version, version.model.as_ref())?);
        let mut cache = self.signatures.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= ROW_CACHE_MAX {
            cache.clear();
        }
        cache.insert(cache_key, (policy.clone(), signature.clone()));
        Ok(Some(signature))
    }

    /// Decides a release on the key's rows (cached ones unless `fresh`): the response to send
    /// once committed, the subject, the nonce's expiry and the rows it was decided on.
    async fn decide(
        &self,
        req: &ReleaseRequest,
        fresh: bool,
    ) -> Result<(ReleaseResponse, Subject, i64, Basis), Denied> {
        let now = now_unix();
        let nonce = self
            .nonces
            .check(&req.nonce, &req.key_id, now)
            .map_err(|code| ErrorBody::new(code, "the challenge nonce was refused"))?;
        let expires = Some(nonce.expires_at);
        let Some((key, cached)) = self.key_row(&req.key_id, fresh).await.map_err(store_error)? else {
            let body = ErrorBody::new(ErrorCode::UnknownKey, format!("key {} is unknown", req.key_id));
            return Err(Denied { body, nonce_expires_at: expires, subject: None, basis: None });
        };
        let mut basis = Basis { key, references: Vec::new(), cached };
        let denied = |body: ErrorBody, basis: &Basis| Denied {
            body,
            nonce_expires_at: expires,
            subject: None,
            basis: Some(basis.clone()),
        };
        let key = basis.key.clone();
        if key.revoked {
            let body = ErrorBody::new(ErrorCode::KeyRevoked, format!("key {} is revoked", req.key_id));
            return Err(denied(body, &basis));
        }
        let Some(version) = key.version(req.key_version) else {
            let body = ErrorBody::new(
                ErrorCode::UnknownKey,
                format!("key {} has no version {}", req.key_id, req.key_version),
            );
            return Err(denied(body, &basis));
        };
        if version.revoked {
            let body =
                ErrorBody::new(ErrorCode::VersionRevoked, format!("version {} is revoked", req.key_version));
            return Err(denied(body, &basis));
        }
        let policy = self.policy_for(&req.key_id, &key.policy).map_err(|b| denied(b, &basis))?;
        if !policy.version_allowed(req.key_version, key.current_version) {
            let body = ErrorBody::new(
                ErrorCode::VersionNotAllowed,
                format!(
                    "version {} is not current ({}) nor allowed by the policy",
                    req.key_version, key.current_version
                ),
            );
            return Err(denied(body, &basis));
        }
        if !policy.in_window(now) {
            let body = ErrorBody::new(ErrorCode::OutsideWindow, "outside the key's release window");
            return Err(denied(body, &basis));
        }
        let model_signature =
            self.model_signature(&req.key_id, version, &policy).map_err(|b| denied(b, &basis))?;
        let (resolved, references, references_cached) =
            self.resolve_references(&req.key_id, &policy, fresh).await.map_err(|b| denied(b, &basis))?;
        basis.references = references;
        basis.cached |= references_cached;

        // The evidence must bind exactly this nonce, this HPKE key and this key id.
        let expected = KeyReleaseBinding {
            nonce: &req.nonce,
            hpke_public_key: &req.hpke_public_key,
            key_id: &req.key_id,
        }
        .report_data()
        .map_err(|e| denied(ErrorBody::new(ErrorCode::Internal, e.to_string()), &basis))?;
        let t = Instant::now();
        let (verifier, evidence, policy2) = (self.verifier.clone(), req.evidence.clone(), policy.clone());
        let verdict = self
            .appraisals
            .run(move || {
                let appraiser = resolved.as_deref().unwrap_or(&policy2.appraiser);
                verifier.appraise_reporting(
                    appraiser,
                    &evidence,
                    ExpectedReportData::Exact(expected),
                    now_unix(),
                )
            })
            .await
            .ok_or_else(|| denied(ErrorBody::new(ErrorCode::Internal, "verification task failed"), &basis))?;
        self.metrics.stage("verify", t.elapsed().as_secs_f64());
        let claims = verdict
            .map_err(|refusal| {
                let mut d = denied(evidence_error(&req.key_id, &refusal.error), &basis);
                // Authentic evidence refused by the binding or the policy: the audit record
                // names the TEE, measurement and chip it came from.
                d.subject = refusal.authentic.as_deref().map(subject);
                d
            })?
            .into_inner();
        let mut subject = subject(&claims);
        subject.model_signature = model_signature.clone();

        let t = Instant::now();
        let data_key = self
            .keyring
            .open(&version.kek_id, &req.key_id, req.key_version, &version.wrapped_key)
            .map_err(|e| {
                tracing::error!(error = %e, "data key does not unwrap");
                Denied::from(ErrorBody::new(ErrorCode::Internal, "stored data key is unusable"))
            })?;
        let (encapsulated, wrapped) =
            wrap::wrap(&req.hpke_public_key, &req.key_id, req.key_version, &req.nonce, &data_key)
                .map_err(|e| Denied::from(ErrorBody::new(ErrorCode::Malformed, e.to_string())))?;
        let result = AttestationResult {
            eat_profile: EAR_PROFILE.into(),
            iat: now,
            exp: now + self.limits.result_ttl_secs,
            eat_nonce: req.nonce.clone(),
            verifier_id: VerifierId { developer: "nacre".into(), build: env!("CARGO_PKG_VERSION").into() },
            submods: [(
                SUBMOD.to_owned(),
                GuestAppraisal {
                    status: if claims.warnings.is_empty() { "affirming" } else { "warning" }.into(),
                    tee: claims.tee.as_str().into(),
                    measurement: ByteBuf::from(claims.measurement.to_vec()),
                    report_data: ByteBuf::from(claims.report_data.to_vec()),
                    key_id: req.key_id.clone(),
                    key_version: req.key_version,
                    warnings: claims.warnings.clone(),
                    model_signature: model_signature.as_deref().cloned(),
                },
            )]
            .into(),
        };
        let signed = self
            .signer
            .sign(&result)
            .map_err(|e| Denied::from(ErrorBody::new(ErrorCode::Internal, e.to_string())))?;
        self.metrics.stage("wrap", t.elapsed().as_secs_f64());
        let response = ReleaseResponse {
            key_id: req.key_id.clone(),
            key_version: req.key_version,
            encapsulated_key: ByteBuf::from(encapsulated),
            wrapped_key: ByteBuf::from(wrapped),
            attestation_result: ByteBuf::from(signed),
            audit_seq: 0, // set once the audit record is committed
            log: None,    // likewise, the log leaf
        };
        Ok((response, subject, nonce.expires_at, basis))
    }

    // ---- admin ----------------------------------------------------------------------------

    /// Admits an admin or auditor call: authenticates its bearer token and checks its role.
    ///
    /// The token is checked first (a digest and a constant-time comparison: no database, no
    /// body read). A call whose token authenticates is admitted on the token's own denial
    /// allowance, whatever its source has collected, so nobody sharing the admin's address (a
    /// NAT, a relay) can lock the admin out; its own refusals (a role it lacks) are charged to
    /// the token. A call without a valid token is refused 429 if its source has used its
    /// allowance, else 401 and charged to the source: token guessing stays limited per source.
    /// (A source past its allowance still learns whether a token is valid, 429 or admitted;
    /// with the generated 256-bit tokens that is worth nothing at any rate.)
    pub async fn authorize(
        &self,
        bearer: Option<&str>,
        need: Role,
        action: &'static str,
        source: IpAddr,
    ) -> Result<Principal, ErrorBody> {
        let Some((principal, token)) =
            bearer.and_then(|t| Some((self.tokens.authenticate(t)?, Charge::token(t))))
        else {
            self.admit(source)?;
            self.charge(source, ErrorCode::Unauthorized);
            tracing::warn!(%source, action, "admin call without a valid token");
            return Err(ErrorBody::new(ErrorCode::Unauthorized, "a valid bearer token is required"));
        };
        self.admit(token)?;
        if principal.role < need {
            self.charge(token, ErrorCode::Forbidden);
            let body = ErrorBody::new(
                ErrorCode::Forbidden,
                format!(
                    "{action} needs the {} role; {} is {}",
                    need.as_str(),
                    principal.name,
                    principal.role.as_str()
                ),
            );
            // An authenticated principal overstepping its role is worth an audit record.
            self.store
                .commit_denial(
                    self.admin_audit(
                        &principal,
                        action,
                        None,
                        None,
                        (false, Some(body.reason.clone())),
                        source,
                    ),
                    None,
                )
                .await
                .map_err(store_error)?;
            return Err(body);
        }
        Ok(principal)
    }

    fn admin_audit(
        &self,
        who: &Principal,
        action: &'static str,
        key_id: Option<&str>,
        key_version: Option<u32>,
        (allow, reason): (bool, Option<String>),
        source: IpAddr,
    ) -> AuditEntry {
        AuditEntry {
            time_ms: now_ms(),
            action,
            actor: format!("{}:{}", who.role.as_str(), who.name),
            key_id: key_id.map(str::to_owned),
            key_version,
            allow,
            reason,
            source: Some(source.to_string()),
            ..AuditEntry::default()
        }
    }

    fn admin_done(&self, action: &str) {
        self.metrics.admin_actions.get_or_create(&crate::metrics::Action { action: action.to_owned() }).inc();
    }

    pub async fn key_info(&self, key_id: &str) -> Result<KeyInfo, ErrorBody> {
        check_key_id(key_id)?;
        let row = self.store.key(key_id).await.map_err(store_error)?;
        let row =
            row.ok_or_else(|| ErrorBody::new(ErrorCode::UnknownKey, format!("key {key_id} is unknown")))?;
        Ok(info(row))
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>, ErrorBody> {
        Ok(self.store.list_keys().await.map_err(store_error)?.into_iter().map(info).collect())
    }

    fn data_key(bytes: &[u8]) -> Result<zeroize::Zeroizing<[u8; 32]>, ErrorBody> {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(ErrorBody::new(
                ErrorCode::Malformed,
                format!("data key of {} bytes, expected 32", bytes.len()),
            ));
        }
        key.copy_from_slice(bytes);
        Ok(key)
    }

    /// A policy parses, and every reference-values name it has is imported.
    async fn check_policy(&self, text: &str) -> Result<ReleasePolicy, ErrorBody> {
        let policy = ReleasePolicy::parse(text).map_err(|e| ErrorBody::new(ErrorCode::Malformed, e))?;
        if policy.reference_values.is_empty() {
            return Ok(policy);
        }
        let rows = self.store.references(&policy.reference_values).await.map_err(store_error)?;
        match policy.reference_values.iter().find(|n| !rows.iter().any(|r| &r.name == *n)) {
            Some(missing) => Err(ErrorBody::new(
                ErrorCode::UnknownReference,
                format!("the policy names reference values {missing:?}, which are not imported"),
            )),
            None => Ok(policy),
        }
    }

    /// Checks the model a key version is registered for against `policy`'s signers
    /// ([`signers::register`], at the service's clock). A refusal is audited as `action` and
    /// charged to nobody (the caller is an authenticated admin).
    async fn register_model(
        &self,
        who: &Principal,
        action: &'static str,
        key_id: &str,
        policy: &ReleasePolicy,
        model: Option<&ModelRegistration>,
        source: IpAddr,
    ) -> Result<Option<ModelRow>, ErrorBody> {
        match signers::register(&policy.signers, model, now_unix()) {
            Ok(row) => Ok(row),
            Err(body) => {
                tracing::warn!(key_id, code = %body.code, reason = %body.reason, "model registration refused");
                let audit = self.admin_audit(
                    who,
                    action,
                    Some(key_id),
                    None,
                    (false, Some(format!("{}: {}", body.code, body.reason))),
                    source,
                );
                Err(match self.store.commit_denial(audit, None).await {
                    Ok(_) => body,
                    Err(e) => store_error(e),
                })
            }
        }
    }

    pub async fn create_key(
        &self,
        who: &Principal,
        req: &KeyCreate,
        source: IpAddr,
    ) -> Result<KeyInfo, ErrorBody> {
        check_key_id(&req.key_id)?;
        let key = Self::data_key(&req.data_key)?;
        let policy = self.check_policy(&req.policy).await?;
        let model =
            self.register_model(who, "key_create", &req.key_id, &policy, req.model.as_ref(), source).await?;
        let kek = &self.keyring.current;
        let wrapped =
            kek.seal(&req.key_id, 1, &key).map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?;
        let reason = signers::describe(model.as_ref());
        let audit = AuditEntry {
            policy_sha256: Some(hex::encode(aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                req.policy.as_bytes(),
            ))),
            ..self.admin_audit(who, "key_create", Some(&req.key_id), Some(1), (true, reason), source)
        };
        self.store
            .create_key(&req.key_id, &req.policy, kek.id(), &wrapped, model.as_ref(), audit)
            .await
            .map_err(store_error)?;
        self.admin_done("key_create");
        self.key_info(&req.key_id).await
    }

    pub async fn rotate(
        &self,
        who: &Principal,
        key_id: &str,
        req: &KeyRotate,
        source: IpAddr,
    ) -> Result<KeyInfo, ErrorBody> {
        check_key_id(key_id)?;
        let key = Self::data_key(&req.data_key)?;
        // The model is checked under the key's policy as stored now; the rotation commits only
        // if the policy is still that text.
        let current = self.store.key(key_id).await.map_err(store_error)?;
        let (policy_text, model) = match &current {
            Some(row) => {
                let policy = self.policy_for(key_id, &row.policy)?;
                let model = self
                    .register_model(who, "key_rotate", key_id, &policy, req.model.as_ref(), source)
                    .await?;
                (Some(row.policy.as_str()), model)
            }
            // The store refuses an unknown key.
            None => (None, None),
        };
        let kek = &self.keyring.current;
        let reason = signers::describe(model.as_ref());
        let audit = self.admin_audit(who, "key_rotate", Some(key_id), None, (true, reason), source);
        let wrap = |v: u32| kek.seal(key_id, v, &key).map_err(|e| StoreError::Corrupt(e.to_string()));
        let locked = self.key_lock(key_id).write().await;
        let result =
            self.store.rotate(key_id, req.version, kek.id(), wrap, model.as_ref(), policy_text, audit).await;
        self.forget_key(key_id);
        drop(locked);
        result.map_err(store_error)?;
        self.admin_done("key_rotate");
        self.key_info(key_id).await
    }

    pub async fn revoke(
        &self,
        who: &Principal,
        key_id: &str,
        req: &KeyRevoke,
        source: IpAddr,
    ) -> Result<KeyInfo, ErrorBody> {
        check_key_id(key_id)?;
        let audit = self.admin_audit(who, "key_revoke", Some(key_id), req.version, (true, None), source);
        let locked = self.key_lock(key_id).write().await;
        let result = self.store.revoke(key_id, req.version, audit).await;
        self.forget_key(key_id);
        drop(locked);
        result.map_err(store_error)?;
        self.admin_done("key_revoke");
        self.key_info(key_id).await
    }

    pub async fn rollback(
        &self,
        who: &Principal,
        key_id: &str,
        req: &KeyRollback,
        source: IpAddr,
    ) -> Result<KeyInfo, ErrorBody> {
        check_key_id(key_id)?;
        let audit =
            self.admin_audit(who, "key_rollback", Some(key_id), Some(req.version), (true, None), source);
        let locked = self.key_lock(key_id).write().await;
        let result = self.store.rollback(key_id, req.version, audit).await;
        self.forget_key(key_id);
        drop(locked);
        result.map_err(store_error)?;
        self.admin_done("key_rollback");
        self.key_info(key_id).await
    }

    pub async fn set_policy(
        &self,
        who: &Principal,
        key_id: &str,
        req: &PolicySet,
        source: IpAddr,
    ) -> Result<KeyInfo, ErrorBody> {
        check_key_id(key_id)?;
        self.check_policy(&req.policy).await?;
        let digest =
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, req.policy.as_bytes()));
        let audit = AuditEntry {
            policy_sha256: Some(digest.clone()),
            ..self.admin_audit(
                who,
                "policy_set",
                Some(key_id),
                None,
                (true, Some(format!("policy sha256 {digest}"))),
                source,
            )
        };
        let locked = self.key_lock(key_id).write().await;
        let result = self.store.set_policy(key_id, &req.policy, audit).await;
        self.forget_key(key_id);
        drop(locked);
        result.map_err(store_error)?;
        self.admin_done("policy_set");
        self.key_info(key_id).await
    }

    /// Imports signed reference values: the signature must verify over the exact document bytes
    /// under one of `trusted_image_signers` (checked before the document is parsed). Replaces
    /// the reference values of the same name. Every refusal is audited.
    pub async fn import_reference(
        &self,
        who: &Principal,
        req: &ReferenceImport,
        source: IpAddr,
    ) -> Result<ReferenceInfo, ErrorBody> {
        let verified = ReferenceValues::verify_signed(&req.document, &req.signature, &self.image_signers);
        let (values, signer) = match verified {
            Ok(v) => v,
            Err(e) => {
                let code = match e {
                    ReferenceError::UntrustedSigner(_) => ErrorCode::UntrustedSigner,
                    ReferenceError::BadSignature => ErrorCode::BadSignature,
                    ReferenceError::Format(_) | ReferenceError::Key(_) => ErrorCode::Malformed,
                };
                let mut reason = e.to_string();
                if code == ErrorCode::UntrustedSigner && self.image_signers.is_empty() {
                    reason.push_str(" (trusted_image_signers is empty: no import is possible)");
                }
                return Err(self.refuse_import(who, ErrorBody::new(code, reason), source).await);
            }
        };
        // Both verified as JSON above, hence UTF-8.
        let text = |b: &[u8]| String::from_utf8(b.to_vec());
        let (Ok(document), Ok(signature)) = (text(&req.document), text(&req.signature)) else {
            let body = ErrorBody::new(ErrorCode::Malformed, "reference values must be UTF-8");
            return Err(self.refuse_import(who, body, source).await);
        };
        let row = ReferenceRow {
            name: values.name.clone(),
            document,
            signature,
            signer: hex::encode(signer),
            imported_at: now_unix(),
        };
        let digest = row.digest();
        let tees = |tee: &str| values.measurements.iter().filter(|m| m.tee == tee).count();
        let reason = format!(
            "reference values {} (document sha256 {}) signed by {}: {} measurements (sim {}, snp {}, tdx {})",
            row.name,
            hex::encode(digest),
            row.signer,
            values.measurements.len(),
            tees("sim"),
            tees("snp"),
            tees("tdx"),
        );
        let audit = AuditEntry {
            reference_values_sha256: Some(hex::encode(digest)),
            reference_measurements: Some(
                values
                    .measurements
                    .iter()
                    .map(|m| format!("{}:{}", m.tee, m.measurement.to_ascii_lowercase()))
                    .collect(),
            ),
            ..self.admin_audit(who, "reference_import", None, None, (true, Some(reason)), source)
        };
        let result = self.store.import_reference(&row, audit).await;
        self.rows().references.remove(&row.name);
        result.map_err(store_error)?;
        self.admin_done("reference_import");
        tracing::info!(name = %row.name, signer = %row.signer, "reference values imported");
        let info = reference_info(&row, &values);
        let mut cache = self.references.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() < REFERENCE_CACHE_MAX {
            cache.insert(digest, Arc::new(values));
        }
        Ok(info)
    }

    /// Audits a refused import by `who` and returns the refusal.
    pub async fn refuse_import(&self, who: &Principal, body: ErrorBody, source: IpAddr) -> ErrorBody {
        tracing::warn!(%source, actor = %who.name, code = %body.code, reason = %body.reason, "reference import refused");
        let audit = self.admin_audit(
            who,
            "reference_import",
            None,
            None,
            (false, Some(format!("{}: {}", body.code, body.reason))),
            source,
        );
        match self.store.commit_denial(audit, None).await {
            Ok(_) => body,
            Err(e) => store_error(e),
        }
    }

    /// Every imported reference-values document, by name.
    pub async fn list_references(&self) -> Result<Vec<ReferenceInfo>, ErrorBody> {
        let rows = self.store.list_references().await.map_err(store_error)?;
        rows.iter()
            .map(|row| {
                let values = ReferenceValues::parse_unverified(row.document.as_bytes()).map_err(|e| {
                    tracing::error!(name = %row.name, error = %e, "stored reference values do not parse");
                    ErrorBody::new(ErrorCode::Internal, "stored reference values are invalid")
                })?;
                Ok(reference_info(row, &values))
            })
            .collect()
    }

    pub async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, ErrorBody> {
        self.store.audit_page(after, limit.clamp(1, 10_000)).await.map_err(store_error)
    }
}

fn reference_info(row: &ReferenceRow, values: &ReferenceValues) -> ReferenceInfo {
    ReferenceInfo {
        name: row.name.clone(),
        signer: row.signer.clone(),
        imported_at: row.imported_at,
        document_sha256: hex::encode(row.digest()),
        measurements: values.measurements.clone(),
    }
}

fn info(row: KeyRow) -> KeyInfo {
    KeyInfo {
        key_id: row.key_id,
        current_version: row.current_version,
        revoked: row.revoked,
        versions: row
            .versions
            .iter()
            .map(|v| KeyVersionInfo {
                version: v.version,
                created_at: v.created_at,
                revoked: v.revoked,
                model: v.model.as_ref().map(|m| ModelInfo {
                    model_identity: nacre_protocol::model::Sha256(m.identity),
                    signature_bundle: m.bundle.is_some(),
                    signature: m.signature.clone(),
                }),
            })
            .collect(),
        policy: row.policy,
    }
}

/// The first certificate of a PEM file, as DER.
pub fn pem_cert(bytes: &[u8]) -> Option<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    if !bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return None;
    }
    CertificateDer::pem_slice_iter(bytes).next()?.ok().map(|c| c.to_vec())
}
