//! Signing keys: ECDSA on P-256, P-384 or P-521, the curves model-signing accepts, each with the
//! hash model-signing pairs with it (SHA-256, SHA-384, SHA-512; `get_ec_key_hash`). OMS has no
//! Ed25519 or RSA signer, so neither is accepted.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{SignatureError, Unsupported};

/// A parsed ECDSA public key and the DER SubjectPublicKeyInfo it came from.
#[derive(Debug, Clone)]
pub(crate) struct PublicKey {
    alg: &'static dyn VerificationAlgorithm,
    point: Vec<u8>,
    spki_der: Vec<u8>,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), the form model-signing's `--public_key`
    /// takes. Errors are the caller's (misuse), so they are `InvalidTrust`.
    pub(crate) fn from_pem(pem_bytes: &[u8]) -> Result<Self, SignatureError> {
        let block = pem::parse(pem_bytes)
            .map_err(|e| SignatureError::InvalidTrust(format!("public key PEM: {e}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(SignatureError::InvalidTrust(format!(
                "expected a PEM \"PUBLIC KEY\", found {:?}",
                block.tag()
            )));
        }
        Self::from_spki_der(block.contents()).map_err(|e| match e {
            SignatureError::Parse { reason, .. } => SignatureError::InvalidTrust(reason),
            other => other,
        })
    }

    /// Parses a DER SubjectPublicKeyInfo, refusing trailing bytes and other key types by name.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, SignatureError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|e| SignatureError::parse("public key", e))?;
        if !rest.is_empty() {
            return Err(SignatureError::parse("public key", "trailing bytes after the key"));
        }
        if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
            return Err(SignatureError::UnsupportedScheme(Unsupported::KeyType(format!(
                "with algorithm OID {}",
                spki.algorithm.algorithm
            ))));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| SignatureError::parse("public key", "EC key without a named curve"))?;
        let alg: &'static dyn VerificationAlgorithm = if curve == OID_EC_P256 {
            &signature::ECDSA_P256_SHA256_ASN1
        } else if curve == OID_NIST_EC_P384 {
            &signature::ECDSA_P384_SHA384_ASN1
        } else if curve == OID_NIST_EC_P521 {
            &signature::ECDSA_P521_SHA512_ASN1
        } else {
            return Err(SignatureError::UnsupportedScheme(Unsupported::KeyType(format!("on curve {curve}"))));
        };
        Ok(Self { alg, point: spki.subject_public_key.data.to_vec(), spki_der: der.to_vec() })
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo: the key's identity in `Signer::Key`.
    pub(crate) fn spki_sha256(&self) -> [u8; 32] {
        sha256(&self.spki_der)
    }

    /// The hint model-signing writes: SHA-256 of the key's PEM as Python's `cryptography`
    /// encodes it (64-column base64, LF line ends, a final LF).
    pub(crate) fn pem_hint(&self) -> [u8; 32] {
        let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
        let text = pem::encode_config(&pem::Pem::new("PUBLIC KEY", self.spki_der.clone()), config);
        sha256(text.as_bytes())
    }

    pub(crate) fn verify(&self, message: &[u8], der_signature: &[u8]) -> Result<(), ()> {
        UnparsedPublicKey::new(self.alg, &self.point).verify(message, der_signature).map_err(|_| ())
    }
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}
