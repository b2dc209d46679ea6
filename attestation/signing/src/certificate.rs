//! The `certificate` method: a leaf and intermediates in the bundle, chained to a pinned root
//! (a local CA, not the Web PKI), the leaf allowed to sign, and naming the pinned identity.
//!
//! Path building, signatures, basic and name constraints and validity of every certificate on
//! the path are rustls-webpki's (the validator rustls uses, already in this tree), with
//! aws-lc-rs algorithms only. What webpki leaves to the caller is done here with x509-parser:
//! key usage and the signer's identity.
//!
//! The chain is checked at one instant: the signing time when the bundle proves one, otherwise
//! the caller's `now`. model-signing's certificate method writes no log or timestamp evidence,
//! so today that instant is always `now`. (Its own verifier checks the chain at the leaf's
//! notBefore, which accepts expired certificates; this one does not.)

use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage, aws_lc_rs as algs};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::Identity;
use crate::error::{SignatureError, WrongSigner};
use crate::key::PublicKey;

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER content octets.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

/// Algorithms accepted for certificate signatures on the path: ECDSA and RSA as CAs commonly
/// use them. (The DSSE signature itself is ECDSA only, see `key`.)
static CHAIN_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    algs::ECDSA_P256_SHA256,
    algs::ECDSA_P256_SHA384,
    algs::ECDSA_P384_SHA256,
    algs::ECDSA_P384_SHA384,
    algs::ECDSA_P521_SHA256,
    algs::ECDSA_P521_SHA384,
    algs::ECDSA_P521_SHA512,
    algs::ED25519,
    algs::RSA_PKCS1_2048_8192_SHA256,
    algs::RSA_PKCS1_2048_8192_SHA384,
    algs::RSA_PKCS1_2048_8192_SHA512,
    algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Pinned roots and the identity the leaf must carry.
#[derive(Debug, Clone)]
pub(crate) struct CertificateTrust {
    anchors: Vec<TrustAnchor<'static>>,
    /// Each root's validity (unix seconds), in `anchors`' order. webpki's trust anchors carry
    /// none, so the root that a path ends at is checked here: an expired root is not trusted.
    validity: Vec<(i64, i64)>,
    identity: Identity,
}

/// What the leaf says about its holder, once the chain has verified.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub(crate) key: PublicKey,
    pub(crate) identity: String,
    pub(crate) subject: String,
    pub(crate) issuer: String,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl CertificateTrust {
    pub(crate) fn from_pem(roots_pem: &[u8], identity: Identity) -> Result<Self, SignatureError> {
        let misuse = |why: String| SignatureError::InvalidTrust(why);
        let blocks = pem::parse_many(roots_pem).map_err(|e| misuse(format!("root PEM: {e}")))?;
        if blocks.is_empty() {
            return Err(misuse("no root certificate in the PEM".to_owned()));
        }
        let mut anchors = Vec::with_capacity(blocks.len());
        let mut validity = Vec::with_capacity(blocks.len());
        for block in &blocks {
            if block.tag() != "CERTIFICATE" {
                return Err(misuse(format!("expected PEM certificates, found {:?}", block.tag())));
            }
            let der = CertificateDer::from(block.contents());
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| misuse(format!("root certificate: {e}")))?;
            anchors.push(anchor.to_owned());
            let (_, root) = X509Certificate::from_der(block.contents())
                .map_err(|e| misuse(format!("root certificate: {e}")))?;
            let v = root.validity();
            validity.push((v.not_before.timestamp(), v.not_after.timestamp()));
        }
        Ok(Self { anchors, validity, identity })
    }

    /// Verifies `chain` (DER, leaf first) at `at` (unix seconds) and returns the leaf's key.
    pub(crate) fn verify(&self, chain: &[Vec<u8>], at: i64) -> Result<Leaf, SignatureError> {
        let (leaf_der, intermediates) =
            chain.split_first().ok_or_else(|| SignatureError::parse("certificate chain", "empty"))?;
        let leaf_der = CertificateDer::from(leaf_der.as_slice());
        let intermediates: Vec<CertificateDer<'_>> =
            intermediates.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
        let ee = EndEntityCert::try_from(&leaf_der)
            .map_err(|e| SignatureError::parse("signing certificate", e))?;
        let secs = u64::try_from(at)
            .map_err(|_| SignatureError::InvalidTrust(format!("verification time {at} is before 1970")))?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let path = ee
            .verify_for_usage(
                CHAIN_ALGS,
                &self.anchors,
                &intermediates,
                time,
                // A code-signing EKU if the leaf restricts its purposes at all (as model-signing's
                // verifier also accepts a leaf without EKU that may sign by key usage).
                KeyUsage::required_if_present(CODE_SIGNING),
                None,
                None,
            )
            .map_err(|e| chain_error(e, at))?;
        self.check_root_validity(path.anchor(), at)?;

        let (rest, cert) = X509Certificate::from_der(&leaf_der)
            .map_err(|e| SignatureError::parse("signing certificate", e))?;
        if !rest.is_empty() {
            return Err(SignatureError::parse("signing certificate", "trailing bytes"));
        }
        check_signing_usage(&cert)?;
        let found = identities(&cert)?;
        let identity = self.identity.find_in(&found).ok_or_else(|| {
            SignatureError::WrongSigner(WrongSigner::Identity {
                expected: self.identity.to_string(),
                found: found.iter().map(ToString::to_string).collect(),
            })
        })?;
        let validity = cert.validity();
        Ok(Leaf {
            key: PublicKey::from_spki_der(cert.public_key().raw)?,
            identity,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }
}

impl CertificateTrust {
    fn check_root_validity(&self, used: &TrustAnchor<'_>, at: i64) -> Result<(), SignatureError> {
        let spki = used.subject_public_key_info.as_ref();
        let index = self
            .anchors
            .iter()
            .position(|a| {
                a.subject_public_key_info.as_ref() == spki && a.subject.as_ref() == used.subject.as_ref()
            })
            .ok_or_else(|| SignatureError::UntrustedChain("the path ends at no pinned root".to_owned()))?;
        let (not_before, not_after) = self.validity[index];
        if at < not_before {
            return Err(SignatureError::CertificateNotYetValid { at, not_before });
        }
        if at > not_after {
            return Err(SignatureError::CertificateExpired { at, not_after });
        }
        Ok(())
    }
}

/// model-signing's rule is "key usage digitalSignature, or EKU codeSigning". Stricter here: a
/// key usage that is present must include digitalSignature (an explicit "no" is a no), and an
/// EKU that is present must include codeSigning (checked by webpki above).
fn check_signing_usage(cert: &X509Certificate<'_>) -> Result<(), SignatureError> {
    let ku = cert.key_usage().map_err(|e| SignatureError::parse("key usage", e))?;
    let eku = cert.extended_key_usage().map_err(|e| SignatureError::parse("extended key usage", e))?;
    match (ku, eku) {
        (Some(ku), _) if !ku.value.digital_signature() => {
            Err(SignatureError::NotForSigning("its key usage lacks digitalSignature"))
        }
        (Some(_), _) => Ok(()),
        (None, Some(eku)) if eku.value.code_signing => Ok(()),
        (None, _) => Err(SignatureError::NotForSigning(
            "it has neither a key usage with digitalSignature nor the code-signing extended key usage",
        )),
    }
}

/// Every identity the leaf carries: SAN e-mail addresses and URIs, and subject common names.
fn identities(cert: &X509Certificate<'_>) -> Result<Vec<Identity>, SignatureError> {
    let mut out = Vec::new();
    if let Some(san) =
        cert.subject_alternative_name().map_err(|e| SignatureError::parse("subject alternative name", e))?
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::RFC822Name(email) => out.push(Identity::Email((*email).to_owned())),
                GeneralName::URI(uri) => out.push(Identity::Uri((*uri).to_owned())),
                _ => {}
            }
        }
    }
    // A common name in a string type x509-parser cannot read (e.g. BMPString) names no one
    // here; it is skipped rather than failing a certificate pinned by its SAN.
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            out.push(Identity::CommonName(cn.to_owned()));
        }
    }
    Ok(out)
}

fn chain_error(e: webpki::Error, at: i64) -> SignatureError {
    let secs = |t: UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    match e {
        webpki::Error::CertExpired { not_after, .. } => {
            SignatureError::CertificateExpired { at, not_after: secs(not_after) }
        }
        webpki::Error::CertNotValidYet { not_before, .. } => {
            SignatureError::CertificateNotYetValid { at, not_before: secs(not_before) }
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            SignatureError::NotForSigning("its extended key usage excludes code signing")
        }
        webpki::Error::UnknownIssuer => {
            SignatureError::UntrustedChain("no path to a pinned root (unknown issuer)".to_owned())
        }
        other => SignatureError::UntrustedChain(other.to_string()),
    }
}
