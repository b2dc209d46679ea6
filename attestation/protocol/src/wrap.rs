//! The data key wrapped to the enclave's ephemeral key: HPKE base mode (RFC 9180) with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM (DESIGN.md §6).
//!
//! `info` binds the key id and version, `aad` binds the challenge nonce, so a wrapped key
//! cannot be replayed into another release context even by someone who saw the response.

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

type PrivateKey = <X25519HkdfSha256 as Kem>::PrivateKey;
type PublicKey = <X25519HkdfSha256 as Kem>::PublicKey;
type EncappedKey = <X25519HkdfSha256 as Kem>::EncappedKey;

/// Length of a wrapped data key: 32 bytes of key and a 16-byte tag.
pub const WRAPPED_LEN: usize = 48;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrapError {
    #[error("HPKE public key: {0}")]
    PublicKey(String),
    #[error("HPKE: {0}")]
    Hpke(String),
    #[error("wrapped key of {0} bytes, expected {WRAPPED_LEN}")]
    Length(usize),
}

fn info(key_id: &str, key_version: u32) -> Vec<u8> {
    let mut info = b"nacre/v1/key-release".to_vec();
    info.push(0);
    info.extend_from_slice(key_id.as_bytes());
    info.push(0);
    info.extend_from_slice(&key_version.to_be_bytes());
    info
}

/// Wraps `data_key` to `recipient` (a 32-byte X25519 public key). Returns the encapsulated key
/// and the ciphertext.
pub fn wrap(
    recipient: &[u8],
    key_id: &str,
    key_version: u32,
    nonce: &[u8],
    data_key: &[u8; 32],
) -> Result<(Vec<u8>, Vec<u8>), WrapError> {
    let pk = PublicKey::from_bytes(recipient).map_err(|e| WrapError::PublicKey(e.to_string()))?;
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &pk,
        &info(key_id, key_version),
        data_key,
        nonce,
    )
    .map_err(|e| WrapError::Hpke(e.to_string()))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// The enclave's ephemeral HPKE key pair, used for one release.
pub struct RecipientKey {
    private: PrivateKey,
    public: [u8; 32],
}

impl core::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RecipientKey {{ public: {}, private: <redacted> }}", hex::encode(self.public))
    }
}

impl RecipientKey {
    pub fn generate() -> Self {
        let (private, public) = X25519HkdfSha256::gen_keypair();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        RecipientKey { private, public: bytes }
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Unwraps a data key released for (`key_id`, `key_version`, `nonce`).
    pub fn unwrap(
        &self,
        encapsulated: &[u8],
        wrapped: &[u8],
        key_id: &str,
        key_version: u32,
        nonce: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, WrapError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(WrapError::Length(wrapped.len()));
        }
        let enc = EncappedKey::from_bytes(encapsulated).map_err(|e| WrapError::PublicKey(e.to_string()))?;
        let plain = Zeroizing::new(
            hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &self.private,
                &enc,
                &info(key_id, key_version),
                wrapped,
                nonce,
            )
            .map_err(|e| WrapError::Hpke(e.to_string()))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain[..32]);
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_context_binding() {
        let r = RecipientKey::generate();
        let key = [7u8; 32];
        let (enc, ct) = wrap(r.public_key(), "model", 2, b"nonce", &key).unwrap();
        assert_eq!(ct.len(), WRAPPED_LEN);
        assert_eq!(*r.unwrap(&enc, &ct, "model", 2, b"nonce").unwrap(), key);
        // Any other context fails: key id, version, nonce, recipient.
        assert!(r.unwrap(&enc, &ct, "other", 2, b"nonce").is_err());
        assert!(r.unwrap(&enc, &ct, "model", 3, b"nonce").is_err());
        assert!(r.unwrap(&enc, &ct, "model", 2, b"nonce2").is_err());
        assert!(RecipientKey::generate().unwrap(&enc, &ct, "model", 2, b"nonce").is_err());
        let mut flipped = ct.clone();
        flipped[0] ^= 1;
        assert!(r.unwrap(&enc, &flipped, "model", 2, b"nonce").is_err());
        assert_eq!(r.unwrap(&enc, &ct[..40], "model", 2, b"nonce"), Err(WrapError::Length(40)));
    }

    #[test]
    fn bad_public_key_is_refused() {
        assert!(matches!(wrap(&[1u8; 31], "k", 1, b"n", &[0; 32]), Err(WrapError::PublicKey(_))));
    }
}
