//! Challenge nonces that need no storage until they are used. A nonce is
//!
//! ```text
//! 0x01 ‖ expires_at (u64 BE) ‖ random (16) ‖ key-id tag (8) ‖ MAC (16)      = 49 bytes
//! ```
//!
//! where the MAC is HMAC-SHA256 (key derived from the master key, so every replica shares it)
//! over everything before it, truncated to 128 bits, and the key-id tag is SHA-256 of the key
//! id. Issuing writes nothing; a release inserts the nonce into `used_nonces` in the same
//! transaction as its audit record, whose primary key makes the second use fail on any replica.

use aws_lc_rs::digest;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use nacre_protocol::ErrorCode;

pub const NONCE_LEN: usize = 49;
const VERSION: u8 = 1;

pub struct NonceIssuer {
    key: hmac::Key,
}

impl core::fmt::Debug for NonceIssuer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NonceIssuer")
    }
}

/// An authentic nonce, not yet consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedNonce {
    pub expires_at: i64,
}

fn key_tag(key_id: &str) -> [u8; 8] {
    let d = digest::digest(&digest::SHA256, key_id.as_bytes());
    let mut t = [0u8; 8];
    t.copy_from_slice(&d.as_ref()[..8]);
    t
}

impl NonceIssuer {
    pub fn new(mac_key: &[u8; 32]) -> Self {
        NonceIssuer { key: hmac::Key::new(hmac::HMAC_SHA256, mac_key) }
    }

    pub fn issue(&self, key_id: &str, expires_at: i64) -> Result<Vec<u8>, ErrorCode> {
        let mut n = Vec::with_capacity(NONCE_LEN);
        n.push(VERSION);
        n.extend_from_slice(&(expires_at as u64).to_be_bytes());
        let mut random = [0u8; 16];
        SystemRandom::new().fill(&mut random).map_err(|_| ErrorCode::Internal)?;
        n.extend_from_slice(&random);
        n.extend_from_slice(&key_tag(key_id));
        let tag = hmac::sign(&self.key, &n);
        n.extend_from_slice(&tag.as_ref()[..16]);
        Ok(n)
    }

    /// Authenticates `nonce` for `key_id` at `now`: MAC first (constant time), then the key,
    /// then the expiry. Whether it was used is the database's answer.
    pub fn check(&self, nonce: &[u8], key_id: &str, now: i64) -> Result<CheckedNonce, ErrorCode> {
        if nonce.len() != NONCE_LEN || nonce[0] != VERSION {
            return Err(ErrorCode::NonceInvalid);
        }
        let (body, mac) = nonce.split_at(NONCE_LEN - 16);
        let expected = hmac::sign(&self.key, body);
        // Constant-time comparison of the truncated tag.
        let diff = expected.as_ref()[..16].iter().zip(mac).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(ErrorCode::NonceInvalid);
        }
        if body[25..33] != key_tag(key_id) {
            return Err(ErrorCode::NonceOtherKey);
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&body[1..9]);
        let expires_at = i64::try_from(u64::from_be_bytes(exp)).map_err(|_| ErrorCode::NonceInvalid)?;
        if now > expires_at {
            return Err(ErrorCode::NonceExpired);
        }
        Ok(CheckedNonce { expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_bound_to_key_expiry_and_issuer() {
        let issuer = NonceIssuer::new(&[1; 32]);
        let n = issuer.issue("model-a", 1000).unwrap();
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(issuer.check(&n, "model-a", 1000), Ok(CheckedNonce { expires_at: 1000 }));
        assert_eq!(issuer.check(&n, "model-a", 1001), Err(ErrorCode::NonceExpired));
        assert_eq!(issuer.check(&n, "model-b", 900), Err(ErrorCode::NonceOtherKey));
        assert_eq!(NonceIssuer::new(&[2; 32]).check(&n, "model-a", 900), Err(ErrorCode::NonceInvalid));
        for i in 0..NONCE_LEN {
            let mut bad = n.clone();
            bad[i] ^= 1;
            assert!(issuer.check(&bad, "model-a", 900).is_err(), "byte {i}");
        }
        assert_eq!(issuer.check(&n[..48], "model-a", 900), Err(ErrorCode::NonceInvalid));
        assert_ne!(issuer.issue("model-a", 1000).unwrap(), n, "random part");
    }
}
