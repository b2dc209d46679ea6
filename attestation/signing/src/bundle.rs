//! The Sigstore bundle (JSON) as `model-signing` 1.x writes it, parsed strictly and bounded.
//!
//! Only the shape that the key and certificate methods produce is accepted: media type v0.3,
//! verification material that is a key hint or a certificate chain, no transparency-log or
//! timestamp evidence, and one DSSE envelope with one signature. Unknown fields are refused at
//! every level (serde's derive also refuses duplicate keys), so that nothing in the bundle is
//! silently ignored. Nothing here is authenticated yet: the caller checks the signature over the
//! exact payload bytes decoded here before reading them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::error::{SignatureError, Unsupported};

/// The largest bundle accepted. A one-file bundle with a certificate chain is about 3 KiB; a
/// sharded one grows by ~160 bytes of base64 per shard, so 64 KiB still takes a 200-shard
/// (200 GB at the default shard size) model, and bounds the work an attacker's input can cause.
pub const MAX_BUNDLE_LEN: usize = 64 * 1024;

/// At most this many certificates in the chain (leaf plus intermediates).
const MAX_CHAIN_LEN: usize = 8;

/// The media type written by model-signing 1.x (and sigstore-python 3+/4), in both spellings
/// that the Sigstore bundle spec allows for v0.3. Older versions (0.1, 0.2) carry keyless
/// evidence that this verifier does not check.
const MEDIA_TYPES: [&str; 2] =
    ["application/vnd.dev.sigstore.bundle.v0.3+json", "application/vnd.dev.sigstore.bundle+json;version=0.3"];

/// A parsed, not yet verified bundle.
#[derive(Debug)]
pub(crate) struct Bundle {
    pub(crate) material: Material,
    pub(crate) payload_type: String,
    /// The DSSE payload exactly as decoded from the bundle: the bytes the signature covers.
    pub(crate) payload: Vec<u8>,
    /// The DER ECDSA signature.
    pub(crate) signature: Vec<u8>,
    /// The signing time that log or timestamp evidence proves, in unix seconds. Such evidence
    /// is refused for now, so this is always `None`; the field is where keyless support puts it.
    pub(crate) signing_time: Option<i64>,
}

#[derive(Debug)]
pub(crate) enum Material {
    /// A bare key; model-signing records SHA-256 of its PEM as a hint (not signed).
    PublicKey { hint: Option<[u8; 32]> },
    /// DER certificates, leaf first.
    Chain(Vec<Vec<u8>>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTypeOnly {
    media_type: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBundle {
    #[allow(dead_code)] // checked by the first pass
    media_type: String,
    verification_material: RawMaterial,
    dsse_envelope: Option<RawEnvelope>,
    message_signature: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMaterial {
    public_key: Option<RawPublicKey>,
    x509_certificate_chain: Option<RawChain>,
    certificate: Option<RawCertificate>,
    #[serde(default)]
    tlog_entries: Vec<IgnoredAny>,
    timestamp_verification_data: Option<RawTimestamps>,
}

/// model-signing 1.0 also wrote `rawBytes` and `keyDetails` here (1.1's reader drops them). They
/// are as unsigned as the hint and the pinned key decides, so they are accepted and not used.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPublicKey {
    hint: Option<String>,
    #[allow(dead_code)]
    raw_bytes: Option<IgnoredAny>,
    #[allow(dead_code)]
    key_details: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTimestamps {
    #[serde(default)]
    rfc3161_timestamps: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawSignature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    sig: String,
    /// model-signing writes an empty key id; the pinned trust decides, not this.
    #[allow(dead_code)]
    keyid: Option<String>,
}

/// Parses a bundle. Refuses, in this order: oversized input, input that is not JSON with a
/// media type, an unknown media type (by name), a malformed body, and schemes that are not
/// checked here (by name).
pub(crate) fn parse(json: &[u8]) -> Result<Bundle, SignatureError> {
    if json.len() > MAX_BUNDLE_LEN {
        return Err(SignatureError::Oversized { len: json.len(), max: MAX_BUNDLE_LEN });
    }
    let head: MediaTypeOnly = serde_json::from_slice(json).map_err(|e| SignatureError::parse("JSON", e))?;
    if !MEDIA_TYPES.contains(&head.media_type.as_str()) {
        return Err(SignatureError::UnsupportedMediaType(head.media_type));
    }
    let raw: RawBundle = serde_json::from_slice(json).map_err(|e| SignatureError::parse("JSON", e))?;

    let m = raw.verification_material;
    let has_timestamps = m.timestamp_verification_data.is_some_and(|t| !t.rfc3161_timestamps.is_empty());
    if !m.tlog_entries.is_empty() || has_timestamps {
        return Err(SignatureError::UnsupportedScheme(Unsupported::KeylessEvidence));
    }
    let material = match (m.public_key, m.x509_certificate_chain, m.certificate) {
        (Some(key), None, None) => Material::PublicKey {
            hint: key.hint.as_deref().map(|h| decode_hex32("public key hint", h)).transpose()?,
        },
        (None, Some(chain), None) => {
            if chain.certificates.is_empty() || chain.certificates.len() > MAX_CHAIN_LEN {
                return Err(SignatureError::parse(
                    "certificate chain",
                    format!("{} certificates (expected 1 to {MAX_CHAIN_LEN})", chain.certificates.len()),
                ));
            }
            let ders = chain
                .certificates
                .iter()
                .map(|c| decode_b64("certificate", &c.raw_bytes))
                .collect::<Result<Vec<_>, _>>()?;
            Material::Chain(ders)
        }
        // A lone certificate is the keyless (Fulcio) form; without log evidence it is the same
        // as a chain of one.
        (None, None, Some(cert)) => Material::Chain(vec![decode_b64("certificate", &cert.raw_bytes)?]),
        _ => {
            return Err(SignatureError::parse(
                "verification material",
                "expected exactly one of publicKey, x509CertificateChain, certificate",
            ));
        }
    };

    let envelope = match (raw.dsse_envelope, raw.message_signature) {
        (Some(envelope), None) => envelope,
        (None, Some(_)) => return Err(SignatureError::UnsupportedScheme(Unsupported::MessageSignature)),
        _ => {
            return Err(SignatureError::parse(
                "content",
                "expected exactly one of dsseEnvelope, messageSignature",
            ));
        }
    };
    let [signature] = envelope.signatures.as_slice() else {
        return Err(SignatureError::UnsupportedScheme(Unsupported::SignatureCount(
            envelope.signatures.len(),
        )));
    };
    Ok(Bundle {
        material,
        payload_type: envelope.payload_type,
        payload: decode_b64("DSSE payload", &envelope.payload)?,
        signature: decode_b64("DSSE signature", &signature.sig)?,
        signing_time: None,
    })
}

/// Standard base64 with padding, as protobuf's JSON mapping and model-signing write it.
fn decode_b64(what: &'static str, s: &str) -> Result<Vec<u8>, SignatureError> {
    STANDARD.decode(s).map_err(|e| SignatureError::parse(what, e))
}

/// 64 lowercase hex digits, the only form model-signing writes.
pub(crate) fn decode_hex32(what: &'static str, s: &str) -> Result<[u8; 32], SignatureError> {
    let mut out = [0u8; 32];
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SignatureError::parse(what, "expected 64 lowercase hex digits"));
    }
    hex::decode_to_slice(s, &mut out).map_err(|e| SignatureError::parse(what, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_is_refused_before_parsing() {
        let big = vec![b' '; MAX_BUNDLE_LEN + 1];
        assert!(matches!(parse(&big), Err(SignatureError::Oversized { .. })));
    }

    #[test]
    fn unknown_media_type_is_named() {
        let json = br#"{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.1","x":1}"#;
        match parse(json) {
            Err(SignatureError::UnsupportedMediaType(m)) => assert!(m.ends_with("0.1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let json = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial":{"publicKey":{}},"dsseEnvelope":{"payload":"","payloadType":"x",
            "signatures":[{"sig":""}]},"extra":true}"#;
        assert!(matches!(parse(json), Err(SignatureError::Parse { .. })));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let json = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial":{"publicKey":{}},"dsseEnvelope":{"payload":"","payloadType":"x",
            "payloadType":"y","signatures":[{"sig":""}]}}"#;
        assert!(matches!(parse(json), Err(SignatureError::Parse { .. })));
    }

    #[test]
    fn hex_digests_are_canonical() {
        assert!(decode_hex32("d", &"ab".repeat(32)).is_ok());
        assert!(decode_hex32("d", &"AB".repeat(32)).is_err());
        assert!(decode_hex32("d", &"ab".repeat(31)).is_err());
    }
}
