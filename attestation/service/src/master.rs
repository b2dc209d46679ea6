//! Envelope encryption of data keys at rest (DESIGN.md §6). A key-encryption key is derived
//! from the master key with HKDF-SHA256; each data key version is sealed with AES-256-GCM under
//! it, with the key id and version as associated data, so a row copied onto another key or
//! version does not decrypt. Each stored row names its master key by a fingerprint, which is
//! what makes rotation possible without downtime.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("master key: expected 64 hex digits")]
    Format,
    #[error("data key of {key_id} v{version} is wrapped under master key {kek_id}, which is not configured")]
    UnknownKek { key_id: String, version: u32, kek_id: String },
    #[error("data key of {key_id} v{version} does not decrypt: wrong master key or edited row")]
    Decrypt { key_id: String, version: u32 },
    #[error("random number generator failed")]
    Rng,
}

/// One master key: its fingerprint and the derived key-encryption key.
pub struct MasterKey {
    id: String,
    kek: LessSafeKey,
    /// Nonce-MAC key derived from the same master, shared by every replica.
    nonce_mac: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(master: &[u8; 32], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"nacre/v1/master").extract(master);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit, so expand and fill cannot fail.
    if let Ok(okm) = prk.expand(&[info], Len(32)) {
        let _ = okm.fill(&mut out[..]);
    }
    out
}

impl MasterKey {
    /// Parses 64 hex digits (surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, MasterKeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), &mut bytes[..]).map_err(|_| MasterKeyError::Format)?;
        Ok(Self::from_bytes(&bytes))
    }

    pub fn from_bytes(master: &[u8; 32]) -> Self {
        let kek = derive(master, b"kek");
        let id = hex::encode(&derive(master, b"kek-id")[..8]);
        let kek = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &kek[..]).unwrap_or_else(|_| unreachable!("32-byte key")),
        );
        MasterKey { id, kek, nonce_mac: derive(master, b"nonce-mac") }
    }

    /// A fresh master key as 64 hex digits.
    pub fn generate_hex() -> Result<Zeroizing<String>, MasterKeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(&mut bytes[..]).map_err(|_| MasterKeyError::Rng)?;
        Ok(Zeroizing::new(hex::encode(&bytes[..])))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn nonce_mac_key(&self) -> &[u8; 32] {
        &self.nonce_mac
    }

    fn aad(key_id: &str, version: u32) -> Vec<u8> {
        let mut aad = b"nacre/v1/data-key\0".to_vec();
        aad.extend_from_slice(key_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    /// `nonce ‖ ciphertext ‖ tag` of the data key.
    pub fn seal(&self, key_id: &str, version: u32, data_key: &[u8; 32]) -> Result<Vec<u8>, MasterKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| MasterKeyError::Rng)?;
        let mut out = nonce.to_vec();
        let mut body = data_key.to_vec();
        self.kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(key_id, version)),
                &mut body,
            )
            .map_err(|_| MasterKeyError::Rng)?;
        out.extend_from_slice(&body);
        zeroize::Zeroize::zeroize(&mut body);
        Ok(out)
    }

    pub fn open(
        &self,
        key_id: &str,
        version: u32,
        sealed: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, MasterKeyError> {
        let err = || MasterKeyError::Decrypt { key_id: key_id.into(), version };
        if sealed.len() != NONCE_LEN + 32 + 16 {
            return Err(err());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut body = Zeroizing::new(body.to_vec());
        let plain = self
            .kek
            .open_in_place(nonce, Aad::from(Self::aad(key_id, version)), &mut body)
            .map_err(|_| err())?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(plain);
        Ok(key)
    }
}

/// The current master key and any previous ones still being rotated away from.
#[derive(Debug)]
pub struct Keyring {
    pub current: MasterKey,
    pub previous: Vec<MasterKey>,
}

impl Keyring {
    pub fn find(&self, kek_id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(&self.previous).find(|k| k.id == kek_id)
    }

    pub fn open(
        &self,
        kek_id: &str,
        key_id: &str,
        version: u32,
        sealed: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, MasterKeyError> {
        self.find(kek_id)
            .ok_or_else(|| MasterKeyError::UnknownKek {
                key_id: key_id.into(),
                version,
                kek_id: kek_id.into(),
            })?
            .open(key_id, version, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_is_bound_to_key_and_version() {
        let m = MasterKey::from_bytes(&[9; 32]);
        let sealed = m.seal("model", 1, &[5; 32]).unwrap();
        assert_eq!(*m.open("model", 1, &sealed).unwrap(), [5; 32]);
        assert!(m.open("model", 2, &sealed).is_err());
        assert!(m.open("other", 1, &sealed).is_err());
        assert!(MasterKey::from_bytes(&[8; 32]).open("model", 1, &sealed).is_err());
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(m.open("model", 1, &bad).is_err());
    }

    #[test]
    fn fingerprints_differ_and_hex_parses_strictly() {
        assert_ne!(MasterKey::from_bytes(&[1; 32]).id(), MasterKey::from_bytes(&[2; 32]).id());
        assert_eq!(MasterKey::from_hex("abcd").unwrap_err(), MasterKeyError::Format);
        let hex = MasterKey::generate_hex().unwrap();
        assert_eq!(MasterKey::from_hex(&format!("{}\n", *hex)).unwrap().id().len(), 16);
    }
}
