//! REPORT_DATA bindings (DESIGN.md §3): `REPORT_DATA = SHA-512(tag || CBOR(binding))`.
//!
//! The tag separates purposes, so evidence made for key release can never pass as a TLS
//! binding. The binding is a CBOR array with a fixed field order and definite lengths, which
//! makes its encoding deterministic without map-key sorting. The whole 64-byte value is
//! compared; nothing is truncated or padded.

use sha2::{Digest, Sha512};

use crate::error::WireError;

/// Domain-separation tag for key release.
pub const TAG_KEY_RELEASE: &[u8] = b"nacre/v1/key-release";
/// Domain-separation tag for attested TLS, version 2 (the model binding's three values; version
/// 1 bound the model digest alone and is no longer produced or accepted).
pub const TAG_TLS: &[u8] = b"nacre/v2/tls";

/// The 64 bytes a guest puts into REPORT_DATA.
pub type ReportData = [u8; 64];

/// What a key-release request binds: the service's nonce, the enclave's ephemeral HPKE public
/// key and the key it asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyReleaseBinding<'a> {
    pub nonce: &'a [u8],
    pub hpke_public_key: &'a [u8],
    pub key_id: &'a str,
}

/// What the enclave serves, as its attested TLS binds it: which model, under which guard, and
/// with which key release. Fixed-length fields, so it also travels as 96 raw bytes
/// (`to_bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ModelBinding {
    /// The model identity (the sealed header's, recomputed by the enclave from the plaintext).
    pub model_identity: [u8; 32],
    /// SHA-256 of the owner's guard manifest; all zeros without one.
    pub guard_digest: [u8; 32],
    /// SHA-256 of the HPKE public key the enclave sent with its key-release request (the
    /// transparency log records the same digest in the release's leaf); all zeros if the model
    /// was not released by the attestation service.
    pub release_key_digest: [u8; 32],
}

impl ModelBinding {
    pub const LEN: usize = 96;

    /// `model_identity || guard_digest || release_key_digest`.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..32].copy_from_slice(&self.model_identity);
        out[32..64].copy_from_slice(&self.guard_digest);
        out[64..].copy_from_slice(&self.release_key_digest);
        out
    }

    /// The inverse of `to_bytes`; anything but exactly 96 bytes is refused.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let field = |i: usize| {
            let mut f = [0u8; 32];
            f.copy_from_slice(&bytes[32 * i..32 * (i + 1)]);
            f
        };
        Some(ModelBinding { model_identity: field(0), guard_digest: field(1), release_key_digest: field(2) })
    }
}

/// What an attested TLS certificate or a channel-bound attestation binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsBinding<'a> {
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER).
    pub spki_sha256: &'a [u8; 32],
    /// The model, guard and key release this enclave serves under.
    pub model: &'a ModelBinding,
    /// A client's nonce, for a fresh attestation.
    pub client_nonce: Option<&'a [u8]>,
    /// The TLS exporter value of the channel the attestation travels on.
    pub tls_exporter: Option<&'a [u8]>,
}

impl KeyReleaseBinding<'_> {
    pub fn report_data(&self) -> Result<ReportData, WireError> {
        use ciborium::Value;
        bind(
            TAG_KEY_RELEASE,
            Value::Array(vec![
                Value::Bytes(self.nonce.to_vec()),
                Value::Bytes(self.hpke_public_key.to_vec()),
                Value::Text(self.key_id.to_owned()),
            ]),
        )
    }
}

impl TlsBinding<'_> {
    pub fn report_data(&self) -> Result<ReportData, WireError> {
        use ciborium::Value;
        let opt = |v: Option<&[u8]>| v.map_or(Value::Null, |b| Value::Bytes(b.to_vec()));
        bind(
            TAG_TLS,
            Value::Array(vec![
                Value::Bytes(self.spki_sha256.to_vec()),
                Value::Bytes(self.model.model_identity.to_vec()),
                Value::Bytes(self.model.guard_digest.to_vec()),
                Value::Bytes(self.model.release_key_digest.to_vec()),
                opt(self.client_nonce),
                opt(self.tls_exporter),
            ]),
        )
    }
}

fn bind(tag: &[u8], binding: ciborium::Value) -> Result<ReportData, WireError> {
    let mut cbor = Vec::with_capacity(128);
    ciborium::into_writer(&binding, &mut cbor).map_err(|e| WireError::Cbor(e.to_string()))?;
    let mut h = Sha512::new();
    h.update(tag);
    h.update(&cbor);
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_key_release_binding() {
        // The CBOR is written out by hand here: array(3), bytes(3), bytes(2), text(5).
        let rd = KeyReleaseBinding { nonce: &[1, 2, 3], hpke_public_key: &[4, 5], key_id: "model" }
            .report_data()
            .unwrap();
        let mut expected_input = TAG_KEY_RELEASE.to_vec();
        expected_input.extend_from_slice(&[0x83, 0x43, 1, 2, 3, 0x42, 4, 5, 0x65]);
        expected_input.extend_from_slice(b"model");
        let expected: [u8; 64] = Sha512::digest(&expected_input).into();
        assert_eq!(rd, expected);
    }

    #[test]
    fn golden_tls_binding() {
        // array(6), bstr(32) × 4, null × 2 — written out by hand.
        let model =
            ModelBinding { model_identity: [2; 32], guard_digest: [0; 32], release_key_digest: [3; 32] };
        let rd = TlsBinding { spki_sha256: &[1; 32], model: &model, client_nonce: None, tls_exporter: None }
            .report_data()
            .unwrap();
        let mut expected_input = b"nacre/v2/tls".to_vec();
        expected_input.push(0x86);
        for fill in [1u8, 2, 0, 3] {
            expected_input.extend_from_slice(&[0x58, 0x20]);
            expected_input.extend_from_slice(&[fill; 32]);
        }
        expected_input.extend_from_slice(&[0xf6, 0xf6]);
        let expected: [u8; 64] = Sha512::digest(&expected_input).into();
        assert_eq!(rd, expected);
    }

    #[test]
    fn purposes_and_fields_are_separated() {
        let spki = [1u8; 32];
        let model =
            ModelBinding { model_identity: [2; 32], guard_digest: [0; 32], release_key_digest: [3; 32] };
        let tls = TlsBinding { spki_sha256: &spki, model: &model, client_nonce: None, tls_exporter: None };
        let with_nonce = TlsBinding { client_nonce: Some(&[]), ..tls.clone() };
        assert_ne!(tls.report_data().unwrap(), with_nonce.report_data().unwrap());
        // Each of the model binding's values is bound: another guard or release key, another
        // REPORT_DATA; the guard and release-key fields are not interchangeable.
        for other in [
            ModelBinding { guard_digest: [4; 32], ..model },
            ModelBinding { release_key_digest: [0; 32], guard_digest: [3; 32], ..model },
            ModelBinding { model_identity: [5; 32], ..model },
        ] {
            let t = TlsBinding { model: &other, ..tls.clone() };
            assert_ne!(tls.report_data().unwrap(), t.report_data().unwrap());
        }
        assert_eq!(ModelBinding::from_bytes(&model.to_bytes()), Some(model));
        assert_eq!(ModelBinding::from_bytes(&[0; 95]), None);
        let kr = KeyReleaseBinding { nonce: &[1; 32], hpke_public_key: &[2; 32], key_id: "a" };
        let kr2 = KeyReleaseBinding { key_id: "b", ..kr.clone() };
        assert_ne!(kr.report_data().unwrap(), kr2.report_data().unwrap());
        // Moving a byte across a field boundary changes the binding (length-prefixed fields).
        let a = KeyReleaseBinding { nonce: &[1, 2], hpke_public_key: &[3], key_id: "k" };
        let b = KeyReleaseBinding { nonce: &[1], hpke_public_key: &[2, 3], key_id: "k" };
        assert_ne!(a.report_data().unwrap(), b.report_data().unwrap());
    }
}
