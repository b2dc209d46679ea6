//! The model a key version is registered for, and the publisher's signature over it (issue 16,
//! OpenSSF Model Signing): what `nacre seal --register` sends with a key, what the service
//! stores with the key version, and what the signed attestation result tells the enclave.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{ErrorBody, ErrorCode};

/// Longest signature bundle the protocol carries: nacre-signing's `MAX_BUNDLE_LEN` (a
/// `model-signing` bundle of one file is a few KiB).
pub const MAX_SIGNATURE_BUNDLE_LEN: usize = 64 * 1024;

/// Length of a model identity (SHA-256).
pub const MODEL_IDENTITY_LEN: usize = 32;

/// A model to register with a key version: the sealed header's values, byte for byte.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRegistration {
    /// The sealed header's model identity (format v2: SHA-256 of the shard manifest).
    pub model_identity: ByteBuf,
    /// The header's publisher signature bundle (OMS, Sigstore bundle v0.3 JSON), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_bundle: Option<ByteBuf>,
}

// The identity in hex and the bundle's length: a KeyCreate in a log stays one short line.
impl core::fmt::Debug for ModelRegistration {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ModelRegistration")
            .field("model_identity", &hex::encode(&self.model_identity))
            .field("signature_bundle_len", &self.signature_bundle.as_ref().map(|b| b.len()))
            .finish()
    }
}

impl ModelRegistration {
    /// A registration of `model_identity`, with `signature_bundle` if the model is signed.
    pub fn new(model_identity: [u8; 32], signature_bundle: Option<Vec<u8>>) -> Self {
        ModelRegistration {
            model_identity: ByteBuf::from(model_identity.to_vec()),
            signature_bundle: signature_bundle.map(ByteBuf::from),
        }
    }

    /// Lengths: a 32-byte identity, a bundle of 1..=[`MAX_SIGNATURE_BUNDLE_LEN`] bytes.
    pub fn check(&self) -> Result<[u8; 32], ErrorBody> {
        let identity: [u8; 32] = self.model_identity.as_slice().try_into().map_err(|_| {
            ErrorBody::new(
                ErrorCode::Malformed,
                format!(
                    "model identity of {} bytes, expected {MODEL_IDENTITY_LEN}",
                    self.model_identity.len()
                ),
            )
        })?;
        if let Some(b) = &self.signature_bundle
            && (b.is_empty() || b.len() > MAX_SIGNATURE_BUNDLE_LEN)
        {
            return Err(ErrorBody::new(
                ErrorCode::Malformed,
                format!("signature bundle of {} bytes, expected 1-{MAX_SIGNATURE_BUNDLE_LEN}", b.len()),
            ));
        }
        Ok(identity)
    }
}

/// A SHA-256 value in the admin API and the attestation result: written as 64 lowercase hex
/// digits (as the audit log and reference values write digests, so that `nacre … keys show`
/// and a client's JSON rendering read alike), read back strictly.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl core::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl core::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let lower =
            text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut out = [0u8; 32];
        match hex::decode_to_slice(&text, &mut out) {
            Ok(()) if lower => Ok(Sha256(out)),
            _ => Err(serde::de::Error::custom("a SHA-256 must be 64 lowercase hex digits")),
        }
    }
}

/// What the publisher signed: a manifest of shard digests or one whole-file digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedManifest {
    /// Shard digests at some shard size: the service recomputed the model identity from them
    /// and found the registered one.
    Shards,
    /// One SHA-256 over the whole file: the service cannot relate it to the identity without
    /// the plaintext, so the enclave must check `file_sha256` against the plaintext it opened.
    WholeFile,
}

impl SignedManifest {
    pub fn as_str(self) -> &'static str {
        match self {
            SignedManifest::Shards => "shards",
            SignedManifest::WholeFile => "whole_file",
        }
    }
}

/// A verified publisher signature over a registered model: shown by the admin API with the key
/// version, and put into the signed attestation result so that the enclave can show who signed
/// the model it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSignature {
    /// Who signed: `key:sha256:<hex of the DER SubjectPublicKeyInfo>` for a bare key, or the
    /// identity the release policy pinned and the certificate carried (`email:…`, `uri:…`,
    /// `cn:…`).
    pub signer: String,
    /// The signing certificate's subject and issuer names (certificate signers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_issuer: Option<String>,
    /// The registered model identity the signature was related to.
    pub model_identity: Sha256,
    pub manifest: SignedManifest,
    /// The OMS statement's subject digest (SHA-256 over the signed resource digests).
    pub subject_digest: Sha256,
    /// For [`SignedManifest::WholeFile`]: the signed SHA-256 of the whole model file, which
    /// the enclave must find over the plaintext it opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<Sha256>,
    /// Unix seconds the signature and its certificate chain were checked at: the model's
    /// registration. Certificates are never re-validated at release time.
    pub checked_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lengths_are_checked() {
        assert_eq!(ModelRegistration::new([7; 32], Some(b"{}".to_vec())).check().unwrap(), [7; 32]);
        let short = ModelRegistration { model_identity: ByteBuf::from(vec![1; 31]), signature_bundle: None };
        assert!(short.check().unwrap_err().reason.contains("31 bytes"));
        let empty = ModelRegistration::new([1; 32], Some(Vec::new()));
        assert_eq!(empty.check().unwrap_err().code, ErrorCode::Malformed);
        let big = ModelRegistration::new([1; 32], Some(vec![b' '; MAX_SIGNATURE_BUNDLE_LEN + 1]));
        assert!(big.check().unwrap_err().reason.contains("bytes, expected 1-"));
    }

    /// Strict both ways: an unknown field is refused, an absent bundle is not written.
    #[test]
    fn strict_cbor() {
        let bytes = crate::cbor::to_vec(&ModelRegistration::new([1; 32], None)).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("signature_bundle"));
        let back: ModelRegistration = crate::cbor::from_slice(&bytes).unwrap();
        assert_eq!(back.signature_bundle, None);
        #[derive(Serialize)]
        struct Odd {
            model_identity: ByteBuf,
            guard: u8,
        }
        let odd = crate::cbor::to_vec(&Odd { model_identity: ByteBuf::from(vec![1; 32]), guard: 1 }).unwrap();
        assert!(crate::cbor::from_slice::<ModelRegistration>(&odd).is_err());
    }

    #[test]
    fn digests_are_lowercase_hex_both_ways() {
        let d = Sha256([0xab; 32]);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", "ab".repeat(32)));
        let back: Sha256 = crate::cbor::from_slice(&crate::cbor::to_vec(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        for bad in [
            "AB".repeat(32),
            "ab".repeat(31),
            "ab".repeat(33),
            "zz".repeat(32),
            format!("+{}", "a".repeat(63)),
        ] {
            assert!(serde_json::from_str::<Sha256>(&format!("\"{bad}\"")).is_err(), "{bad}");
        }
    }
}
