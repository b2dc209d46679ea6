//! Why an attested-TLS peer or message was refused (client side, [`AtlsError`]) and why the
//! guest could not make its certificate ([`CertError`]), grouped by cause as STYLE.md §4 asks.
//! The mapping to `rustls::Error` is in one place (`impl From<AtlsError> for rustls::Error`) and
//! keeps the typed error so a client can print the reason ([`AtlsError::from_io`]).

use std::sync::Arc;

use nacre_verifier::VerifyError;
use nacre_wire::WireError;

/// A client's reason to refuse an attested-TLS server or a fresh attestation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AtlsError {
    // Malformed input.
    /// The certificate or the evidence it carries does not have the required shape.
    #[error("certificate: {0}")]
    Malformed(#[from] Malformed),
    /// A fresh-attestation request or response is malformed (nonce, query, body).
    #[error("fresh attestation: {0}")]
    BadMessage(String),

    // Not authentic, not current, or not acceptable.
    /// The certificate's evidence failed the appraisal pipeline (chain, freshness of the
    /// endorsements, REPORT_DATA binding to this key and the expected model, policy).
    #[error("certificate evidence: {0}")]
    Evidence(VerifyError),
    /// The certificate is outside its validity window.
    #[error("certificate is not valid at {now}: valid from {not_before} until {not_after}")]
    CertificateNotValidNow { now: i64, not_before: i64, not_after: i64 },
    /// The fresh evidence failed the appraisal pipeline (a REPORT_DATA mismatch here means a
    /// relay, a replayed nonce or another connection's evidence).
    #[error("fresh attestation: {0}")]
    FreshEvidence(VerifyError),
    /// The fresh evidence is authentic and acceptable but comes from another guest than the
    /// certificate's.
    #[error(
        "fresh attestation comes from another guest: {what} {fresh} differs from the certificate's {certificate}"
    )]
    DifferentGuest { what: &'static str, certificate: String, fresh: String },
    /// The certificate states another model identity than the client's policy pins.
    #[error("the server serves model identity {served}; the policy expects {expected}")]
    WrongModel { expected: String, served: String },
    /// The certificate states another guard manifest than the client's policy pins.
    #[error("the server runs guard manifest {served}; the policy expects {expected}")]
    WrongGuard { expected: String, served: String },

    // Protocol.
    /// Attested TLS needs TLS 1.3 (its exporter and signed handshake).
    #[error("TLS 1.2 is refused: attested TLS requires TLS 1.3")]
    Tls12Refused,
    /// The connection cannot provide the exporter value (handshake not complete, not TLS 1.3).
    #[error("TLS exporter: {0}")]
    Exporter(String),

    // Infrastructure and misuse.
    /// The expected REPORT_DATA could not be computed.
    #[error("REPORT_DATA binding: {0}")]
    Binding(WireError),
    /// A TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The system random generator failed.
    #[error("random number generator failed")]
    Random,
}

impl AtlsError {
    /// A stable, machine-readable name of the failed check (for logs and metrics).
    pub fn check(&self) -> &'static str {
        match self {
            AtlsError::Malformed(_) | AtlsError::BadMessage(_) => "parse",
            AtlsError::Evidence(e) | AtlsError::FreshEvidence(e) => e.check(),
            AtlsError::CertificateNotValidNow { .. } => "certificate_validity",
            AtlsError::DifferentGuest { .. } => "same_guest",
            AtlsError::WrongModel { .. } => "model_identity",
            AtlsError::WrongGuard { .. } => "guard_digest",
            AtlsError::Tls12Refused | AtlsError::Exporter(_) => "tls",
            AtlsError::Binding(_) | AtlsError::Config(_) | AtlsError::Random => "internal",
        }
    }

    /// The typed reason inside a `rustls::Error` made by this crate, if it is one.
    pub fn from_rustls(error: &rustls::Error) -> Option<&AtlsError> {
        match error {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<AtlsError>()
            }
            _ => None,
        }
    }

    /// The typed reason inside an I/O error from a TLS handshake (tokio-rustls reports
    /// handshake failures as `io::Error`s wrapping the `rustls::Error`).
    pub fn from_io(error: &std::io::Error) -> Option<&AtlsError> {
        error.get_ref()?.downcast_ref::<rustls::Error>().and_then(Self::from_rustls)
    }
}

/// The one mapping to rustls: every refusal is an invalid certificate (alert
/// `certificate_unknown`) whose source is the typed error, so the reason survives the handshake.
impl From<AtlsError> for rustls::Error {
    fn from(e: AtlsError) -> Self {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(Arc::new(e))))
    }
}

/// A certificate or its evidence extension that does not have the required shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    #[error("{0}")]
    X509(String),
    #[error("the server sent {count} certificates; an attested server sends exactly one")]
    ChainLength { count: usize },
    #[error("X.509 version {version} (extensions need v3)")]
    Version { version: u32 },
    #[error("extension {oid} does not parse: {error}")]
    Extension { oid: String, error: String },
    #[error("an extension appears more than once (RFC 5280 §4.2)")]
    DuplicateExtension,
    #[error("no evidence extension ({})", crate::EVIDENCE_OID_STR)]
    NoEvidence,
    #[error("{count} evidence extensions; exactly one is allowed")]
    DuplicateEvidence { count: usize },
    #[error("the evidence extension is marked critical; it must not be")]
    CriticalEvidence,
    #[error("no model binding extension ({})", crate::BINDING_OID_STR)]
    NoBinding,
    #[error("{count} model binding extensions; exactly one is allowed")]
    DuplicateBinding { count: usize },
    #[error("the model binding extension is marked critical; it must not be")]
    CriticalBinding,
    #[error("the model binding extension holds {len} bytes; it must hold exactly 96")]
    BindingLength { len: usize },
    #[error("evidence extension value: {0}")]
    Der(&'static str),
    #[error("evidence of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("evidence CBOR: {0}")]
    Cbor(String),
    #[error("evidence CBOR is not in its canonical encoding")]
    NonCanonical,
    #[error("evidence envelope: {0}")]
    Envelope(WireError),
}

/// Why the guest could not make its attested certificate. `E` is the attester's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError<E> {
    /// The attester could not produce evidence.
    #[error("attester: {0}")]
    Attester(E),
    /// The attester's evidence cannot be carried (over the limits, unencodable).
    #[error("evidence: {0}")]
    Evidence(Malformed),
    #[error("TLS key generation failed")]
    KeyGeneration,
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("REPORT_DATA binding: {0}")]
    Binding(WireError),
    /// The built certificate does not carry the key that was bound (a bug, checked anyway).
    #[error("certificate self-check: {0}")]
    SelfCheck(String),
    #[error("random number generator failed")]
    Random,
}
