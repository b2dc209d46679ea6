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
use nacre_wire::binding::{ModelBinding, TlsBinding};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose, PublicKeyData,
    SerialNumber,
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
    model: ModelBinding,
    evidence: Evidence,
    not_after: OffsetDateTime,
}

impl core::fmt::Debug for AttestedCert {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AttestedCert")
            .field("spki_sha256", &hex::encode(self.spki_sha256))
            .field("model_identity", &hex::encode(self.model.model_identity))
            .field("guard_digest", &hex::encode(self.model.guard_digest))
            .field("release_key_digest", &hex::encode(self.model.release_key_digest))
            .field("evidence", &self.evidence)
            .finish_non_exhaustive()
    }
}

impl AttestedCert {
    /// Generates a key, asks `attest` for evidence over
    /// `TlsBinding { spki_sha256, model, None, None }.report_data()` and issues the
    /// self-signed certificate carrying that evidence and the model binding.
    pub fn generate<E>(
        options: &CertOptions,
        model: ModelBinding,
        attest: impl FnOnce([u8; 64]) -> Result<Evidence, E>,
    ) -> Result<Self, CertError<E>> {
        let key = Arc::new(TlsKey::generate().ok_or(CertError::KeyGeneration)?);
        let spki_sha256 = sha256(&key.spki_der);
        let report_data =
            TlsBinding { spki_sha256: &spki_sha256, model: &model, client_nonce: None, tls_exporter: None }
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
        params.custom_extensions = vec![
            extension::custom_extension(&evidence).map_err(CertError::Evidence)?,
            extension::binding_extension(&model),
        ];
        // Subject and authority key identifiers (RFC 5280 §4.2.1.1–2), both non-critical. RFC 5280
        // requires an SKI of CA certificates and recommends one for the rest, and clients that
        // take this certificate as their CA file treat it as one; the AKI, optional in a
        // self-signed certificate, is there for the path builders and linters that expect it. Its
        // keyIdentifier is the SKI: OpenSSL treats the certificate as self-signed only if they
        // match. rcgen writes the SKI only beside BasicConstraints: `ExplicitNoCa` makes that
        // cA = FALSE (rcgen marks it critical), which this certificate is.
        params.key_identifier_method = KeyIdMethod::PreSpecified(key.key_identifier().to_vec());
        params.use_authority_key_identifier_extension = true;
        params.is_ca = IsCa::ExplicitNoCa;
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
            model,
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

    /// The model, guard and key release the certificate's evidence binds.
    pub fn model(&self) -> &ModelBinding {
        &self.model
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
        crate::fresh::fresh_report_data(&self.spki_sha256, &self.model, nonce, exporter)
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

    /// RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value (the
    /// uncompressed point), what OpenSSL's `subjectKeyIdentifier=hash` computes. The identifier
    /// only names the key for path building; the binding is SHA-256 over the whole SPKI, so
    /// SHA-1's weakness does not matter here. (rcgen's own `KeyIdMethod::Sha256` truncates
    /// SHA-256 of the whole DER SPKI, not of the BIT STRING's value as RFC 7093 method 1, which
    /// its documentation cites, specifies.)
    fn key_identifier(&self) -> [u8; 20] {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, self.der_bytes());
        let mut out = [0u8; 20];
        out.copy_from_slice(d.as_ref());
        out
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
        let model =
            ModelBinding { model_identity: [9; 32], guard_digest: [8; 32], release_key_digest: [7; 32] };
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
            model: &model,
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
        let ext: Vec<_> =
            parsed.extensions().iter().filter(|e| e.oid.to_id_string() == crate::BINDING_OID_STR).collect();
        assert_eq!(ext.len(), 1);
        assert!(!ext[0].critical);
        assert_eq!(extension::decode_binding(ext[0].value).unwrap(), model);
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
        let e = AttestedCert::generate(&opts, ModelBinding::default(), |_| Err::<Evidence, _>("no TEE"))
            .unwrap_err();
        assert!(matches!(e, CertError::Attester("no TEE")));
        let huge = |_| {
            Ok::<_, std::convert::Infallible>(Evidence {
                tee: Tee::Sim,
                report: vec![0; nacre_wire::evidence::MAX_REPORT_LEN + 1],
                certs: vec![],
                event_log: None,
            })
        };
        assert!(matches!(
            AttestedCert::generate(&opts, ModelBinding::default(), huge),
            Err(CertError::Evidence(_))
        ));
    }

    #[test]
    fn certificate_carries_key_identifiers_beside_the_usual_extensions() {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        use x509_parser::oid_registry::{
            OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        };

        let opts =
            CertOptions::new(vec!["enclave.example".into(), "127.0.0.1".into()], OffsetDateTime::now_utc());
        let cert = AttestedCert::generate(
            &opts,
            ModelBinding { model_identity: [9; 32], ..ModelBinding::default() },
            fake_evidence,
        )
        .unwrap();
        let parsed = nacre_verifier::x509::parse_cert(cert.cert_der()).unwrap();

        // SKI: RFC 5280 §4.2.1.2 method (1), recomputed from the certificate's own bits.
        let bits = &parsed.public_key().subject_public_key.data;
        let want = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bits);
        let ski = parsed.get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).unwrap().unwrap();
        assert!(!ski.critical);
        let ParsedExtension::SubjectKeyIdentifier(ski) = ski.parsed_extension() else {
            panic!("SKI does not parse: {:?}", ski.parsed_extension());
        };
        assert_eq!(ski.0.len(), 20);
        assert_eq!(ski.0, want.as_ref());

        // AKI: the key identifier alone, equal to the SKI (the certificate issued itself).
        let aki = parsed.get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).unwrap().unwrap();
        assert!(!aki.critical);
        let ParsedExtension::AuthorityKeyIdentifier(aki) = aki.parsed_extension() else {
            panic!("AKI does not parse: {:?}", aki.parsed_extension());
        };
        assert_eq!(aki.key_identifier.as_ref().map(|k| k.0), Some(ski.0));
        assert!(aki.authority_cert_issuer.is_none() && aki.authority_cert_serial.is_none());

        // What was there before: key usage digitalSignature alone (critical), EKU serverAuth,
        // both names; and BasicConstraints, which rcgen writes with the SKI, says cA = FALSE.
        let ku = parsed.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.digital_signature());
        assert_eq!(ku.value.flags, 1, "digitalSignature only");
        let eku = parsed.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth);
        assert!(!eku.value.any && !eku.value.client_auth && eku.value.other.is_empty());
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [GeneralName::DNSName("enclave.example"), GeneralName::IPAddress(&[127, 0, 0, 1])]
        );
        let bc = parsed.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca && bc.value.path_len_constraint.is_none());
        assert!(!parsed.is_ca());
        assert_eq!(parsed.extensions().len(), 8, "SAN, KU, EKU, BC, SKI, AKI, evidence, model binding");
    }

    /// An independent X.509 implementation, as strict as it gets, with the certificate as its
    /// own and only trust anchor: how OpenSSL-based clients treat it when a user passes it as
    /// their CA file (Python ≥ 3.13's default context sets `VERIFY_X509_STRICT` and
    /// `VERIFY_X509_PARTIAL_CHAIN`). OpenSSL's strict rules skip a chain of one certificate, so
    /// `verify` accepted this certificate before it had key identifiers too; OpenSSL is
    /// therefore also asked to read them back, and must find the SKI and the AKI equal to the
    /// SHA-1 of the key bits.
    #[test]
    fn openssl_verifies_the_certificate_strictly_and_reads_its_key_identifiers() {
        if !openssl_available() {
            return;
        }
        let opts =
            CertOptions::new(vec!["enclave.example".into(), "127.0.0.1".into()], OffsetDateTime::now_utc());
        let cert = AttestedCert::generate(
            &opts,
            ModelBinding { model_identity: [9; 32], ..ModelBinding::default() },
            fake_evidence,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("nacre-atls-strict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let der = dir.join("cert.der");
        std::fs::write(&der, cert.cert_der()).unwrap();
        let pem = dir.join("cert.pem");
        let (der, pem) = (der.to_str().unwrap(), pem.to_str().unwrap());
        openssl(&["x509", "-inform", "DER", "-in", der, "-out", pem]);
        let verified = openssl(&[
            "verify",
            "-x509_strict",
            "-partial_chain",
            "-check_ss_sig",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "enclave.example",
            "-CAfile",
            pem,
            pem,
        ]);
        let ids =
            openssl(&["x509", "-in", pem, "-noout", "-ext", "subjectKeyIdentifier,authorityKeyIdentifier"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(verified.trim(), format!("{pem}: OK"));

        let parsed = nacre_verifier::x509::parse_cert(cert.cert_der()).unwrap();
        let bits = &parsed.public_key().subject_public_key.data;
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bits);
        let want: Vec<String> = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let want = want.join(":");
        // Two headings, each followed by the identifier on an indented line (OpenSSL 1.1 prefixed
        // the AKI's with "keyid:").
        let lines: Vec<&str> = ids.lines().map(|l| l.trim().trim_start_matches("keyid:")).collect();
        assert_eq!(
            lines,
            ["X509v3 Authority Key Identifier:", &want, "X509v3 Subject Key Identifier:", &want],
            "openssl x509 -ext printed:\n{ids}"
        );
    }

    /// Runs `openssl` with `args`; returns its standard output, or fails with everything it said.
    fn openssl(args: &[&str]) -> String {
        let out = std::process::Command::new("openssl").args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "openssl {} failed ({}):\n{stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Whether `openssl` is on PATH. Its absence fails the test that needs it, unless
    /// `NACRE_TEST_WITHOUT_OPENSSL` is set, which skips that test with a warning.
    fn openssl_available() -> bool {
        let found =
            std::process::Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
        if !found && std::env::var_os("NACRE_TEST_WITHOUT_OPENSSL").is_some() {
            // Straight to stderr: the test harness captures `eprintln!` of a passing test.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"SKIPPED: openssl is not on PATH; the strict X.509 check did not run\n",
            );
            return false;
        }
        assert!(
            found,
            "openssl is not on PATH: this test checks the certificate with an independent verifier. \
             Install it (Debian: apt-get install openssl) or set NACRE_TEST_WITHOUT_OPENSSL=1 to skip it."
        );
        true
    }
}
