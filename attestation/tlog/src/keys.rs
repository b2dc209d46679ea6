//! Ed25519 note keys: the log's checkpoint key (signed-note type 0x01) and a witness's
//! cosigning key (tlog-cosignature type 0x04), in the C2SP `vkey` text encoding
//! `<name>+<hex key id>+<base64(type || public key)>`.
//!
//! Our own [`signed_note::Verifier`] implementations verify with `verify_strict`, which refuses
//! small-order keys and non-canonical signatures that plain Ed25519 verification lets through.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

use crate::TlogError;

/// Which signature a note key makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A log's checkpoint signature (signed-note Ed25519, type 0x01).
    Checkpoint,
    /// A witness's timestamped cosignature (tlog-cosignature v1, type 0x04).
    Cosignature,
}

impl KeyKind {
    fn type_byte(self) -> u8 {
        match self {
            KeyKind::Checkpoint => 0x01,
            KeyKind::Cosignature => 0x04,
        }
    }
}

/// A named public note key: what a client, witness or monitor is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteKey {
    name: String,
    id: u32,
    kind: KeyKind,
    key: VerifyingKey,
}

impl NoteKey {
    pub fn new(name: &str, kind: KeyKind, key: VerifyingKey) -> Result<Self, TlogError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(TlogError::KeyName(name.to_owned()));
        }
        let id = key_id(name, kind, &key);
        Ok(Self { name: name.to_owned(), id, kind, key })
    }

    /// Parses a `vkey` strictly: the id must be the one the name and key give, the type byte
    /// must be one we verify, and the key must not be of small order.
    pub fn parse(vkey: &str) -> Result<Self, TlogError> {
        let bad = |why: &str| TlogError::VerifierKey(format!("{why}: {vkey:?}"));
        let mut parts = vkey.trim_end_matches('\n').splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not name+id+key"));
        };
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("key id is not 8 hex digits"));
        }
        let id = u32::from_str_radix(id_hex, 16).map_err(|_| bad("key id"))?;
        let raw = B64.decode(key_b64).map_err(|_| bad("key is not base64"))?;
        let kind = match raw.first() {
            Some(0x01) => KeyKind::Checkpoint,
            Some(0x04) => KeyKind::Cosignature,
            _ => return Err(bad("not an Ed25519 checkpoint (0x01) or cosignature (0x04) key")),
        };
        let bytes: [u8; 32] = raw[1..].try_into().map_err(|_| bad("key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not an Ed25519 point"))?;
        if key.is_weak() {
            return Err(bad("small-order key"));
        }
        let parsed = Self::new(name, kind, key)?;
        if parsed.id != id {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(parsed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The `vkey` text form.
    pub fn vkey(&self) -> String {
        let mut raw = vec![self.kind.type_byte()];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

impl std::fmt::Display for NoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.vkey())
    }
}

fn key_id(name: &str, kind: KeyKind, key: &VerifyingKey) -> u32 {
    let mut raw = vec![kind.type_byte()];
    raw.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &raw)
}

/// A private note key. `Debug` shows the public half only.
pub struct NoteSigner {
    public: NoteKey,
    secret: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner").field("public", &self.public.vkey()).finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (kept by the caller: sealed, derived or on disk).
    pub fn from_seed(name: &str, kind: KeyKind, seed: &[u8; 32]) -> Result<Self, TlogError> {
        let secret = SigningKey::from_bytes(seed);
        let public = NoteKey::new(name, kind, secret.verifying_key())?;
        Ok(Self { public, secret })
    }

    pub fn public(&self) -> &NoteKey {
        &self.public
    }

    pub(crate) fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.secret.sign(msg).to_bytes()
    }
}

/// Verifies one key's signature lines inside [`signed_note::Note::verify`].
pub(crate) struct LineVerifier(pub NoteKey);

impl signed_note::Verifier for LineVerifier {
    fn name(&self) -> &str {
        &self.0.name
    }

    fn key_id(&self) -> u32 {
        self.0.id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self.0.kind {
            KeyKind::Checkpoint => verify_strict(&self.0.key, msg, sig),
            KeyKind::Cosignature => {
                let Some((time, sig)) = split_cosignature(sig) else { return false };
                verify_strict(&self.0.key, &crate::cosign::cosigned_message(time, msg), sig)
            }
        }
    }
}

pub(crate) fn split_cosignature(sig: &[u8]) -> Option<(u64, &[u8])> {
    if sig.len() != 8 + 64 {
        return None;
    }
    let time = u64::from_be_bytes(sig[..8].try_into().ok()?);
    (time <= i64::MAX as u64).then_some((time, &sig[8..]))
}

fn verify_strict(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
    key.verify_strict(msg, &sig).is_ok()
}
