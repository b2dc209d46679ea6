//! Why evidence was rejected, grouped by cause (STYLE.md §4): the bytes were malformed, the
//! evidence is not authentic or not current, the policy refuses it, or the verifier was set up
//! wrongly. Every variant names the failed check and the values involved.

use nacre_wire::WireError;

/// Top-level verification error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The evidence or collateral does not parse.
    #[error("malformed input: {0}")]
    Malformed(#[from] MalformedError),
    /// The evidence is not authentic, or its endorsements are not valid now.
    #[error("authenticity: {0}")]
    Chain(#[from] ChainError),
    /// Authentic evidence that the policy does not accept.
    #[error("policy: {0}")]
    Policy(#[from] PolicyViolation),
    /// The verifier or its policy is misconfigured.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
}

impl VerifyError {
    /// A stable, machine-readable name of the failed check (for metrics, audit and JSON).
    pub fn check(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "parse",
            VerifyError::Chain(c) => c.check(),
            VerifyError::Policy(p) => p.check(),
            VerifyError::Config(_) => "config",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("TDX quote: {0}")]
    Quote(String),
    #[error("collateral: {0}")]
    Collateral(String),
    #[error("TDX {0}")]
    EventLog(#[from] nacre_wire::ccel::EventLogError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("{what}: unsupported signature algorithm ({algorithm})")]
    UnsupportedAlgorithm { what: &'static str, algorithm: String },
    #[error("{what}: signature does not verify")]
    BadSignature { what: &'static str },
    #[error("{what}: issuer name does not match the issuing certificate")]
    IssuerMismatch { what: &'static str },
    #[error("{role}: certificate missing")]
    Missing { role: &'static str },
    #[error("{role}: {count} candidate certificates; supply exactly one")]
    Ambiguous { role: &'static str, count: usize },
    #[error("root key {spki_sha256} is not a pinned {expected} root")]
    UntrustedRoot { spki_sha256: String, expected: String },
    #[error("unknown product: CPUID family {family:#x} model {model:#x}")]
    UnknownProduct { family: u8, model: u8 },
    #[error("{what} is not valid at {now}: valid from {not_before} until {not_after}")]
    NotValidNow { what: &'static str, now: i64, not_before: i64, not_after: i64 },
    #[error(
        "no CRL from the ARK supplied (required; --allow-missing-crl / insecure_allow_missing_crl to go without)"
    )]
    CrlMissing,
    #[error("CRL has no nextUpdate")]
    CrlNoNextUpdate,
    #[error("{what} serial {serial} is revoked by the ARK's CRL")]
    Revoked { what: &'static str, serial: String },
    #[error("report is signed by {report} but the endorsement certificate is a {cert}")]
    EndorsementKind { report: &'static str, cert: &'static str },
    #[error("endorsement key is not an ECDSA P-384 key")]
    EndorsementKeyType,
    #[error("report signature does not verify with the {key}")]
    ReportSignature { key: &'static str },
    #[error("VCEK/VLEK TCB extension {component}={cert} differs from REPORTED_TCB {component}={report}")]
    TcbExtension { component: &'static str, cert: u8, report: u8 },
    #[error("VCEK TCB extension {component} missing or malformed")]
    TcbExtensionMissing { component: &'static str },
    #[error("VCEK hwID {hwid} does not match CHIP_ID {chip_id}")]
    ChipId { hwid: String, chip_id: String },
    #[error("report is unsigned (SIGNING_KEY = none)")]
    Unsigned,
    #[error("TDX quote verification failed: {0}")]
    Tdx(String),
    /// The TD's event log replays to other RTMRs than its authenticated quote holds: the log
    /// is not the one the TD booted with (or was changed on the way), so none of it is evidence.
    #[error(
        "the event log does not match the quote: it replays {register} to {replayed}, the quote has {quoted}"
    )]
    EventLogMismatch { register: &'static str, replayed: String, quoted: String },
}

impl ChainError {
    pub fn check(&self) -> &'static str {
        match self {
            ChainError::UnsupportedAlgorithm { .. }
            | ChainError::BadSignature { .. }
            | ChainError::IssuerMismatch { .. }
            | ChainError::Missing { .. }
            | ChainError::Ambiguous { .. } => "chain",
            ChainError::UntrustedRoot { .. } => "root",
            ChainError::UnknownProduct { .. } => "product",
            ChainError::NotValidNow { .. } => "validity",
            ChainError::CrlMissing | ChainError::CrlNoNextUpdate | ChainError::Revoked { .. } => "crl",
            ChainError::EndorsementKind { .. } | ChainError::EndorsementKeyType => "endorsement_key",
            ChainError::ReportSignature { .. } | ChainError::Unsigned => "report_signature",
            ChainError::TcbExtension { .. } | ChainError::TcbExtensionMissing { .. } => "tcb_extension",
            ChainError::ChipId { .. } => "chip_id",
            ChainError::Tdx(_) => "tdx_quote",
            ChainError::EventLogMismatch { .. } => "event_log",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyViolation {
    #[error("REPORT_DATA {actual} differs from the expected binding {expected}")]
    ReportData { expected: String, actual: String },
    #[error("{field} {value} is not in the policy's allow-list")]
    NotAllowed { field: &'static str, value: String },
    #[error("{field} is {actual}, policy requires {expected}")]
    Mismatch { field: &'static str, expected: String, actual: String },
    #[error("debug is enabled ({detail}) and the policy forbids debug guests")]
    Debug { detail: &'static str },
    #[error("VMPL {vmpl} exceeds the policy's maximum {max}")]
    Vmpl { vmpl: u32, max: u32 },
    #[error("{which} {component}={value} is below the floor {floor}")]
    TcbFloor { which: &'static str, component: &'static str, value: u8, floor: u8 },
    #[error("guest policy: {what}")]
    GuestPolicy { what: String },
    #[error("TDX TCB status {status} is not allowed (allowed: {allowed})")]
    TdxTcbStatus { status: String, allowed: String },
    #[error("TDX advisory {id} is rejected by the policy")]
    Advisory { id: String },
    #[error("no policy section for {tee} evidence")]
    NoSection { tee: &'static str },
    /// The TD's MRTD and RTMR0–2 equal no allowed launch. `closest` names the allowed launch
    /// that differs in the fewest registers, and those registers, so that an operator sees
    /// which input (firmware, its configuration, kernel, command line or initrd) changed.
    #[error("the TD's boot chain (MRTD, RTMR0–2) matches no allowed launch: {closest}")]
    TdxLaunch { closest: String },
    #[error("the policy pins SNP measurements but sets no TCB floor for {product}")]
    NoTcbFloor { product: &'static str },
}

impl PolicyViolation {
    pub fn check(&self) -> &'static str {
        match self {
            PolicyViolation::ReportData { .. } => "report_data",
            PolicyViolation::NotAllowed { field, .. } | PolicyViolation::Mismatch { field, .. } => field,
            PolicyViolation::Debug { .. } => "debug",
            PolicyViolation::Vmpl { .. } => "vmpl",
            PolicyViolation::TcbFloor { .. } => "tcb_floor",
            PolicyViolation::GuestPolicy { .. } => "guest_policy",
            PolicyViolation::TdxTcbStatus { .. } => "tcb_status",
            PolicyViolation::Advisory { .. } => "advisory",
            PolicyViolation::NoSection { .. } => "policy",
            PolicyViolation::TdxLaunch { .. } => "tdx_launch",
            PolicyViolation::NoTcbFloor { .. } => "tcb_floor_missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("policy file: {0}")]
    Policy(String),
    #[error("simulated TEE evidence needs an explicitly configured insecure sim root")]
    NoSimRoot,
    #[error("sim root: {0}")]
    SimRoot(String),
    #[error("collateral source: {0}")]
    Collateral(String),
    #[error(
        "the SNP allow-list pins measurements with no TCB floor (snp.min_tcb): firmware with a published attestation-key compromise would pass"
    )]
    NoTcbFloor,
}
