//! DSSE v1: the pre-authentication encoding and its signature check.
//!
//! The signature covers PAE(payloadType, payload) over the payload bytes exactly as decoded from
//! the bundle; the statement is parsed only after this succeeds, and from those same bytes.
//! model-signing's `pae_compat` (a pre-1.0 bug that signed a Python `repr` of the payload) is
//! not accepted: such bundles come from 0.2 and use the legacy predicate, refused anyway.

use crate::error::SignatureError;
use crate::key::PublicKey;

/// The only payload type OMS uses.
pub(crate) const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub(crate) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Checks a DER ECDSA signature over the PAE of `payload`.
pub(crate) fn verify(
    key: &PublicKey,
    payload_type: &str,
    payload: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    key.verify(&pae(payload_type, payload), signature).map_err(|()| SignatureError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the DSSE v1 protocol document.
    #[test]
    fn pae_matches_the_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }
}
