//! The guest's side: a fresh TLS key, evidence bound to it and to the model, and a self-signed
//! certificate that carries the evidence.
//!
//! The key is ECDSA P-256 (every TLS 1.3 client supports it). It is generated inside aws-lc
//! and never serialized: rcgen signs the certificate and rustls signs handshakes through the
//! same in-memory key, so no PKCS#8 copy exists to leak, log or forget to zeroize.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use nacre_wire::Evidence;
use nacre_wire::binding::TlsBinding;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use time::{Duration, OffsetDateTime};

use crate::error::{AtlsError, CertError};
use crate::extension;
use crate::fresh::{Exporter, Nonce};

/// What the certificate says besides the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertOptions {
    /// DNS names and IP addresses (IP literals become IP SANs). Clients do not rely on them —
    /// the evidence, not the name, identifies the server — but generic tools like to see them.
    pub subject_alt_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertOptions {
    /// How long a certificate is valid by default. A guest renews it well before then (the
    /// enclave at half-life: a new key, new evidence, a new certificate); clients check the
    /// window at each handshake, so a connection made before the renewal is not affected.
    pub const DEFAULT_LIFETIME: Duration = Duration::hours(24);
    /// Backdating of `not_before`, for clients whose clocks run behind.
    pub const CLOCK_SKEW: Duration = Duration::minutes(5);

    /// Valid from `now` − [`Self::CLOCK_SKEW`] for [`Self::DEFAULT_LIFETIME`].
    pub fn new(subject_alt_names: Vec<String>, now: OffsetDateTime) -> Self {
        Self::with_lifetime(subject_alt_names, now, Self::DEFAULT_LIFETIME)
    }

    /// Valid from `now` − [`Self::CLOCK_SKEW`] until `now + lifetime`.
    pub fn with_lifetime(subject_alt_names: Vec<String>, now: OffsetDateTime, lifetime: Duration) -> Self {
        CertOptions { subject_alt_names, not_before: now - Self::CLOCK_SKEW, not_after: now + lifetime }
    }
}

/// The guest's attested certificate and its key.
pub struct AttestedCert {
    certified: Arc<CertifiedKey>,
    spki_sha256: [u8; 32],
    model_digest: [u8; 32],
    evidence: Evidence,
    not_after: OffsetDateTime,
}

impl core::fmt::Debug for AttestedCert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttestedCert")
            .field("spki_sha256", &hex::encode(self.spki_sha256))
            .field("model_digest", &hex::encode(self.model_digest))
            .field("evidence", &self.evidence)
            .finish_non_exhaustive()
    }
}

impl AttestedCert {
    /// Generates a key, asks `attest` for evidence over
    /// `TlsBinding { spki_sha256, model_digest, None, None }.report_data()` and issues the
    /// self-signed certificate carrying that evidence.
    pub fn generate<E>(
        options: &CertOptions,
        model_digest: [u8; 32],
        attest: impl FnOnce([u8; 64]) -> Result<Evidence, E>,
    ) -> Result<Self, CertError<E>> {
        let key = Arc::new(TlsKey::generate().ok_or(CertError::KeyGeneration)?);
        let spki_sha256 = sha256(&key.spki_der);
        let report_data = TlsBinding {
            spki_sha256: &spki_sha256,
            model_digest: &model_digest,
            client_nonce: None,
            tls_exporter: None,
        }
        .report_data()
        .map_err(CertError::Binding)?;
        let evidence = attest(report_data).map_err(CertError::Attester)?;

        let mut params = CertificateParams::new(options.subject_alt_names.clone())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "Nacre enclave");
        params.not_before = options.not_before;
        params.not_after = options.not_after;
        params.serial_number = Some(random_serial().ok_or(CertError::Random)?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.custom_extensions = vec![extension::custom_extension(&evidence).map_err(CertError::Evidence)?];
        let cert = params.self_signed(key.as_ref())?;
        let der: CertificateDer<'static> = cert.der().clone();

        // The binding was computed over our own SPKI encoding; make sure the certificate
        // carries exactly those bytes, as the client will hash them from the certificate.
        let parsed =
            nacre_verifier::x509::parse_cert(&der).map_err(|e| CertError::SelfCheck(e.to_string()))?;
        if nacre_verifier::x509::spki_sha256(&parsed) != spki_sha256 {
            return Err(CertError::SelfCheck("certificate SPKI differs from the bound key".into()));
        }
        let certified = CertifiedKey::new(vec![der], Arc::new(TlsSigningKey(key)));
        certified.keys_match().map_err(|e| CertError::SelfCheck(e.to_string()))?;
        Ok(AttestedCert {
            certified: Arc::new(certified),
            spki_sha256,
            model_digest,
            evidence,
            not_after: options.not_after,
        })
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        // `generate` builds the chain with exactly one certificate.
        &self.certified.cert[0]
    }

    /// SHA-256 of the certificate's SubjectPublicKeyInfo, as bound in REPORT_DATA.
    pub fn spki_sha256(&self) -> &[u8; 32] {
        &self.spki_sha256
    }

    pub fn model_digest(&self) -> &[u8; 32] {
        &self.model_digest
    }

    /// The evidence inside the certificate.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The end of the certificate's validity window (clients refuse it after this).
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The certificate and key as rustls uses them (for a custom `ResolvesServerCert`, e.g. to
    /// rotate certificates).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// A TLS 1.3-only server configuration presenting this certificate: no client
    /// authentication, no session tickets (clients do not resume: each connection is attested).
    /// Set `alpn_protocols` as the server needs.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, AtlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AtlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())));
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// REPORT_DATA for a fresh attestation on a connection with exporter value `exporter`
    /// (see [`crate::fresh::fresh_report_data`]).
    pub fn fresh_report_data(
        &self,
        nonce: &Nonce,
        exporter: &Exporter,
    ) -> Result<[u8; 64], nacre_wire::WireError> {
        crate::fresh::fresh_report_data(&self.spki_sha256, &self.model_digest, nonce, exporter)
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A positive 16-byte serial (RFC 5280 §4.1.2.2) whose first octet keeps the DER INTEGER
/// minimal.
fn random_serial() -> Option<SerialNumber> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).ok()?;
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Some(SerialNumber::from(serial.to_vec()))
}

/// The TLS key: ECDSA P-256 inside aws-lc (which clears it when dropped).
struct TlsKey {
    pair: EcdsaKeyPair,
    spki_der: Vec<u8>,
}

impl TlsKey {
    fn generate() -> Option<Self> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).ok()?;
        let mut key = TlsKey { pair, spki_der: Vec::new() };
        key.spki_der = key.subject_public_key_info();
        Some(key)
    }

    fn sign(&self, message: &[u8]) -> Option<Vec<u8>> {
        self.pair.sign(&SystemRandom::new(), message).ok().map(|s| s.as_ref().to_vec())
    }
}

impl core::fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TlsKey(ECDSA P-256, spki_sha256 {})", hex::encode(sha256(&self.spki_der)))
    }
}

impl PublicKeyData for TlsKey {
    fn der_bytes(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for TlsKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        TlsKey::sign(self, msg).ok_or(rcgen::Error::RingUnspecified)
    }
}

/// The key as rustls signs handshakes with it.
#[derive(Debug)]
struct TlsSigningKey(Arc<TlsKey>);

impl rustls::sign::SigningKey for TlsSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(self.0.clone())) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.0.spki_der.as_slice()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TlsSigner(Arc<TlsKey>);

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0.sign(message).ok_or_else(|| rustls::Error::General("TLS key: signing failed".into()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use nacre_wire::Tee;

    fn fake_evidence(rd: [u8; 64]) -> Result<Evidence, std::convert::Infallible> {
        Ok(Evidence { tee: Tee::Sim, report: rd.to_vec(), certs: vec![], event_log: None })
    }

    #[test]
    fn certificate_carries_the_evidence_and_the_bound_key() {
        let now = OffsetDateTime::now_utc();
        let opts = CertOptions::new(vec!["enclave.example".into(), "127.0.0.1".into()], now);
        let model = [9u8; 32];
        let cert = AttestedCert::generate(&opts, model, fake_evidence).unwrap();
        // Our SPKI encoding is the standard one aws-lc produces.
        let key = &cert.certified.key;
        let spki = key.public_key().unwrap();
        let parsed = nacre_verifier::x509::parse_cert(cert.cert_der()).unwrap();
        assert_eq!(parsed.public_key().raw, spki.as_ref());
        assert_eq!(&sha256(spki.as_ref()), cert.spki_sha256());
        // The evidence's stand-in report is the REPORT_DATA the attester was asked for.
        let want = TlsBinding {
            spki_sha256: cert.spki_sha256(),
            model_digest: &model,
            client_nonce: None,
            tls_exporter: None,
        }
        .report_data()
        .unwrap();
        assert_eq!(cert.evidence().report, want.to_vec());
        let ext: Vec<_> =
            parsed.extensions().iter().filter(|e| e.oid.to_id_string() == crate::EVIDENCE_OID_STR).collect();
        assert_eq!(ext.len(), 1);
        assert!(!ext[0].critical);
        assert_eq!(&extension::decode_value(ext[0].value).unwrap(), cert.evidence());
        // Names, validity, no CA.
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 2);
        assert!(!parsed.is_ca());
        assert_eq!(parsed.validity().not_after.timestamp(), opts.not_after.unix_timestamp());
        assert_eq!(cert.not_after(), opts.not_after);
        assert_eq!(opts.not_after - now, CertOptions::DEFAULT_LIFETIME);
        // Two certificates never share a key.
        let other = AttestedCert::generate(&opts, model, fake_evidence).unwrap();
        assert_ne!(other.spki_sha256(), cert.spki_sha256());
        assert!(!format!("{cert:?}").is_empty());
    }

    #[test]
    fn spki_matches_aws_lc() {
        let key = TlsKey::generate().unwrap();
        assert_eq!(key.spki_der, key.pair.public_key().as_der().unwrap().as_ref());
    }

    #[test]
    fn attester_errors_and_oversized_evidence_are_reported() {
        let opts = CertOptions::new(vec![], OffsetDateTime::now_utc());
        let e = AttestedCert::generate(&opts, [0; 32], |_| Err::<Evidence, _>("no TEE")).unwrap_err();
        assert!(matches!(e, CertError::Attester("no TEE")));
        let huge = |_| {
            Ok::<_, std::convert::Infallible>(Evidence {
                tee: Tee::Sim,
                report: vec![0; nacre_wire::evidence::MAX_REPORT_LEN + 1],
                certs: vec![],
                event_log: None,
            })
        };
        assert!(matches!(AttestedCert::generate(&opts, [0; 32], huge), Err(CertError::Evidence(_))));
    }
}
