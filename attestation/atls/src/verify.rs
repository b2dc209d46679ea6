//! The client's side: a rustls `ServerCertVerifier` that accepts a server certificate only if
//! the evidence it carries is genuine, acceptable to the client's policy, and bound to the
//! certificate's key and the model the client expects.
//!
//! Order of checks ([`verify_certificate`]): strict X.509 parse (one certificate, v3, no
//! duplicated extension, every known extension parses) → exactly one non-critical evidence
//! extension, strictly decoded → the certificate's validity window → SHA-256 of its SPKI → the
//! model binding extension (exactly one, non-critical, 96 bytes) → its model identity equals the
//! policy's, and its guard digest too if the policy pins one → the appraisal pipeline with
//! `REPORT_DATA = TlsBinding { spki, model binding, None, None }`. The
//! handshake signature is then verified against the same certificate's key (TLS 1.3 only).
//! The certificate's self-signature is not checked: it proves only possession of the key, which
//! the handshake signature proves for this very connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use nacre_verifier::{Appraiser, Claims, EvidenceVerifier, ExpectedReportData, Verified};
use nacre_wire::binding::{ModelBinding, TlsBinding};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Version;

use crate::error::{AtlsError, Malformed};
use crate::extension;

/// What a client requires of an attested server: the verifiers it trusts, its appraisal
/// policy, the identity of the model it means to talk to, and optionally the guard manifest
/// that must run in front of it.
#[derive(Clone, Debug)]
pub struct AttestationPolicy {
    evidence: EvidenceVerifier,
    appraiser: Appraiser,
    model_identity: [u8; 32],
    guard_digest: Option<[u8; 32]>,
}

impl AttestationPolicy {
    /// Any guard manifest (or none) is accepted and reported; see [`Self::with_guard_digest`].
    pub fn new(evidence: EvidenceVerifier, appraiser: Appraiser, model_identity: [u8; 32]) -> Self {
        AttestationPolicy { evidence, appraiser, model_identity, guard_digest: None }
    }

    /// Requires exactly this guard manifest digest (all zeros: no guard manifest).
    pub fn with_guard_digest(mut self, guard_digest: Option<[u8; 32]>) -> Self {
        self.guard_digest = guard_digest;
        self
    }

    /// The model identity the server must bind (a v1 model's is its SHA-256).
    pub fn model_identity(&self) -> &[u8; 32] {
        &self.model_identity
    }

    /// The guard manifest digest the server must bind, if pinned.
    pub fn guard_digest(&self) -> Option<&[u8; 32]> {
        self.guard_digest.as_ref()
    }

    /// The appraiser (policy) evidence must pass.
    pub fn appraiser(&self) -> &Appraiser {
        &self.appraiser
    }

    /// Runs the appraisal pipeline on `evidence`, expecting exactly `report_data`.
    pub(crate) fn appraise(
        &self,
        evidence: &nacre_wire::Evidence,
        report_data: [u8; 64],
        now: i64,
    ) -> Result<Verified<Claims>, nacre_verifier::VerifyError> {
        self.evidence.appraise(&self.appraiser, evidence, ExpectedReportData::Exact(report_data), now)
    }
}

/// A server certificate that passed [`verify_certificate`]: what was verified, for the client
/// to show and to check fresh attestations against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedPeer {
    claims: Verified<Claims>,
    spki_sha256: [u8; 32],
    model: ModelBinding,
    certificate_sha256: [u8; 32],
    /// The certificate itself: clients that cannot verify evidence (Python's `ssl`, grpcio)
    /// are given it as their only trusted certificate, pinning the verified key.
    certificate_der: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

impl AttestedPeer {
    /// The appraised claims of the certificate's evidence.
    pub fn claims(&self) -> &Verified<Claims> {
        &self.claims
    }
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (bound by the evidence).
    pub fn spki_sha256(&self) -> &[u8; 32] {
        &self.spki_sha256
    }
    /// The model identity, guard digest and release-key digest the evidence binds.
    pub fn model(&self) -> &ModelBinding {
        &self.model
    }
    /// The model identity the evidence binds (the one the client expected).
    pub fn model_identity(&self) -> &[u8; 32] {
        &self.model.model_identity
    }
    /// SHA-256 of the whole certificate (DER).
    pub fn certificate_sha256(&self) -> &[u8; 32] {
        &self.certificate_sha256
    }
    /// The verified certificate (DER).
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }
    /// The verified certificate as PEM, for a client library's CA file.
    pub fn certificate_pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.certificate_der.clone()))
    }
    /// The certificate's validity window, Unix seconds.
    pub fn validity(&self) -> (i64, i64) {
        (self.not_before, self.not_after)
    }
}

impl core::fmt::Display for AttestedPeer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let c = self.claims.get();
        writeln!(f, "TEE:                    {}", c.tee)?;
        writeln!(f, "measurement:            {}", hex::encode(c.measurement))?;
        writeln!(f, "debug:                  {}", c.debug)?;
        writeln!(f, "model identity:         {}", hex::encode(self.model.model_identity))?;
        writeln!(f, "guard manifest:         {}", guard_text(&self.model.guard_digest))?;
        writeln!(f, "release key (SHA-256):  {}", release_text(&self.model.release_key_digest))?;
        writeln!(f, "TLS key (SPKI SHA-256): {}", hex::encode(self.spki_sha256))?;
        writeln!(f, "certificate SHA-256:    {}", hex::encode(self.certificate_sha256))?;
        write!(f, "certificate valid:      {} .. {} (Unix seconds)", self.not_before, self.not_after)?;
        for w in &c.warnings {
            write!(f, "\nwarning:                {w}")?;
        }
        Ok(())
    }
}

/// Verifies an attested server certificate (DER) at `now` (Unix seconds) against `policy`.
/// This is everything the TLS verifier checks except the handshake signature.
pub fn verify_certificate(
    policy: &AttestationPolicy,
    cert_der: &[u8],
    now: i64,
) -> Result<AttestedPeer, AtlsError> {
    let cert = nacre_verifier::x509::parse_cert(cert_der).map_err(|e| Malformed::X509(e.to_string()))?;
    if cert.version() != X509Version::V3 {
        return Err(Malformed::Version { version: cert.version().0 + 1 }.into());
    }
    let mut found = Vec::new();
    let mut bindings = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
            return Err(Malformed::Extension { oid: ext.oid.to_id_string(), error: error.to_string() }.into());
        }
        if ext.oid.iter().is_some_and(|arcs| arcs.eq(crate::EVIDENCE_OID.iter().copied())) {
            found.push(ext);
        }
        if ext.oid.iter().is_some_and(|arcs| arcs.eq(crate::BINDING_OID.iter().copied())) {
            bindings.push(ext);
        }
    }
    let ext = match found.as_slice() {
        [] => return Err(Malformed::NoEvidence.into()),
        [one] => *one,
        more => return Err(Malformed::DuplicateEvidence { count: more.len() }.into()),
    };
    if cert.extensions_map().is_err() {
        return Err(Malformed::DuplicateExtension.into());
    }
    if ext.critical {
        return Err(Malformed::CriticalEvidence.into());
    }
    let evidence = extension::decode_value(ext.value)?;
    let binding = match bindings.as_slice() {
        [] => return Err(Malformed::NoBinding.into()),
        [one] if one.critical => return Err(Malformed::CriticalBinding.into()),
        [one] => *one,
        more => return Err(Malformed::DuplicateBinding { count: more.len() }.into()),
    };
    let model = extension::decode_binding(binding.value)?;
    if model.model_identity != policy.model_identity {
        return Err(AtlsError::WrongModel {
            expected: hex::encode(policy.model_identity),
            served: hex::encode(model.model_identity),
        });
    }
    if let Some(guard) = policy.guard_digest
        && guard != model.guard_digest
    {
        return Err(AtlsError::WrongGuard {
            expected: guard_text(&guard),
            served: guard_text(&model.guard_digest),
        });
    }

    let (not_before, not_after) = nacre_verifier::x509::validity(&cert);
    if now < not_before || now > not_after {
        return Err(AtlsError::CertificateNotValidNow { now, not_before, not_after });
    }

    let spki_sha256 = nacre_verifier::x509::spki_sha256(&cert);
    let report_data =
        TlsBinding { spki_sha256: &spki_sha256, model: &model, client_nonce: None, tls_exporter: None }
            .report_data()
            .map_err(AtlsError::Binding)?;
    let claims = policy.appraise(&evidence, report_data, now).map_err(AtlsError::Evidence)?;
    Ok(AttestedPeer {
        claims,
        spki_sha256,
        model,
        certificate_sha256: sha256(cert_der),
        certificate_der: cert_der.to_vec(),
        not_before,
        not_after,
    })
}

/// A guard digest as shown: all zeros means there is no guard manifest.
pub fn guard_text(digest: &[u8; 32]) -> String {
    if *digest == [0; 32] { "none".into() } else { hex::encode(digest) }
}

/// A release-key digest as shown: all zeros means the model was not released by a service.
pub fn release_text(digest: &[u8; 32]) -> String {
    if *digest == [0; 32] { "none (no key release)".into() } else { hex::encode(digest) }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How many verified certificates a verifier remembers for [`AttestedServerVerifier::peer`].
const REMEMBERED: usize = 64;

/// The client's certificate verifier. Build a client configuration with
/// [`AttestedServerVerifier::client_config`]; after a handshake, [`AttestedServerVerifier::peer`]
/// gives what was verified for that connection. "Now" is the client configuration's rustls
/// `TimeProvider` (the system clock unless built with `ClientConfig::builder_with_details`).
#[derive(Debug)]
pub struct AttestedServerVerifier {
    policy: AttestationPolicy,
    algorithms: WebPkiSupportedAlgorithms,
    /// The most recently verified certificates, newest last. Looked up by the certificate a
    /// connection actually presented, so concurrent handshakes cannot mix up their results.
    verified: Mutex<VecDeque<Arc<AttestedPeer>>>,
}

impl AttestedServerVerifier {
    pub fn new(policy: AttestationPolicy) -> Arc<Self> {
        let algorithms = rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        Arc::new(AttestedServerVerifier { policy, algorithms, verified: Mutex::new(VecDeque::new()) })
    }

    pub fn policy(&self) -> &AttestationPolicy {
        &self.policy
    }

    /// A TLS 1.3-only client configuration that verifies servers with this verifier and never
    /// resumes a session, so that every connection's certificate is appraised. Set
    /// `alpn_protocols` as needed.
    pub fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, AtlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // `dangerous()` is rustls's name for "not the WebPKI verifier"; this verifier is
        // stricter than WebPKI for this purpose, not looser.
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AtlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// What was verified for the connection `conn` (a `ClientConnection`, or tokio-rustls'
    /// `stream.get_ref().1`): the entry for the certificate it presented, if this verifier
    /// accepted it recently.
    pub fn peer(&self, conn: &rustls::CommonState) -> Option<Arc<AttestedPeer>> {
        let cert = conn.peer_certificates()?.first()?;
        let digest = sha256(cert.as_ref());
        let verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        verified.iter().rev().find(|p| p.certificate_sha256 == digest).cloned()
    }

    fn remember(&self, peer: AttestedPeer) {
        let mut verified = self.verified.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        verified.retain(|p| p.certificate_sha256 != peer.certificate_sha256);
        if verified.len() >= REMEMBERED {
            verified.pop_front();
        }
        verified.push_back(Arc::new(peer));
    }
}

impl ServerCertVerifier for AttestedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(AtlsError::from(Malformed::ChainLength { count: intermediates.len() + 1 }).into());
        }
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let peer = verify_certificate(&self.policy, end_entity.as_ref(), now)?;
        self.remember(peer);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(AtlsError::Tls12Refused.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
