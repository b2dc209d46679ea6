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
/// Domain-separation tag for attested TLS.
pub const TAG_TLS: &[u8] = b"nacre/v1/tls";

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

/// What an attested TLS certificate or a channel-bound attestation binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsBinding<'a> {
    /// SHA-256 of the certificate's SubjectPublicKeyInfo (DER).
    pub spki_sha256: &'a [u8; 32],
    /// SHA-256 of the plaintext model (the sealed header's model digest).
    pub model_digest: &'a [u8; 32],
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
                Value::Bytes(self.model_digest.to_vec()),
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
    fn purposes_and_fields_are_separated() {
        let spki = [1u8; 32];
        let digest = [2u8; 32];
        let tls =
            TlsBinding { spki_sha256: &spki, model_digest: &digest, client_nonce: None, tls_exporter: None };
        let with_nonce = TlsBinding { client_nonce: Some(&[]), ..tls.clone() };
        assert_ne!(tls.report_data().unwrap(), with_nonce.report_data().unwrap());
        let kr = KeyReleaseBinding { nonce: &[1; 32], hpke_public_key: &[2; 32], key_id: "a" };
        let kr2 = KeyReleaseBinding { key_id: "b", ..kr.clone() };
        assert_ne!(kr.report_data().unwrap(), kr2.report_data().unwrap());
        // Moving a byte across a field boundary changes the binding (length-prefixed fields).
        let a = KeyReleaseBinding { nonce: &[1, 2], hpke_public_key: &[3], key_id: "k" };
        let b = KeyReleaseBinding { nonce: &[1], hpke_public_key: &[2, 3], key_id: "k" };
        assert_ne!(a.report_data().unwrap(), b.report_data().unwrap());
    }
}
