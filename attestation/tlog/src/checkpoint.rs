//! Checkpoints: C2SP tlog-checkpoint notes signed by the log's key, carrying witness
//! cosignatures. Opening one verifies the log's signature and every cosignature from a key the
//! reader names; lines from unknown keys are ignored, as the signed-note format requires.

use std::collections::BTreeMap;

use signed_note::{Note, Verifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::TlogError;
use crate::cosign::signature_line;
use crate::keys::{KeyKind, LineVerifier, NoteKey, NoteSigner, split_cosignature};

/// Signs a checkpoint for a tree of `size` leaves with root `root`. The origin is the log key's
/// name, so a reader configured with the key also knows which log it reads.
pub fn sign_checkpoint(signer: &NoteSigner, size: u64, root: Hash) -> Result<Vec<u8>, TlogError> {
    let key = signer.public();
    if key.kind() != KeyKind::Checkpoint {
        return Err(TlogError::KeyKind("a checkpoint needs a checkpoint (0x01) key"));
    }
    let body = Checkpoint::new(key.name(), size, root, "")
        .map_err(|_| TlogError::Malformed("checkpoint origin".into()))?
        .to_bytes();
    let mut note = body.clone();
    note.push(b'\n');
    note.extend(signature_line(signer, signer.sign_raw(&body).to_vec())?);
    Ok(note)
}

/// A checkpoint whose log signature verified, with the cosignatures that verified.
#[derive(Debug)]
pub struct OpenedCheckpoint {
    checkpoint: Checkpoint,
    note: Note,
    /// Witness name to cosignature time (POSIX seconds), one per named witness.
    cosigned: BTreeMap<String, u64>,
}

impl OpenedCheckpoint {
    pub fn origin(&self) -> &str {
        self.checkpoint.origin()
    }

    pub fn size(&self) -> u64 {
        self.checkpoint.size()
    }

    pub fn root(&self) -> Hash {
        *self.checkpoint.hash()
    }

    /// The note text: what the log signed and what a witness cosigns.
    pub fn text(&self) -> &[u8] {
        self.note.text()
    }

    /// The whole note, signature lines included.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.note.to_bytes()
    }

    /// Verified cosignatures: witness name and the time it signed.
    pub fn cosigned(&self) -> &BTreeMap<String, u64> {
        &self.cosigned
    }

    /// Refuses unless at least `k` of the named witnesses cosigned, none of them more than
    /// `max_skew_s` seconds in the future of `now` (a witness clock far ahead is a witness bug or
    /// a forged time, and a future time would outlive any freshness check).
    pub fn require_cosigners(&self, k: usize, now: u64, max_skew_s: u64) -> Result<(), TlogError> {
        if let Some((name, time)) = self.cosigned.iter().find(|(_, t)| **t > now + max_skew_s) {
            return Err(TlogError::CosignatureFromFuture { witness: name.clone(), time: *time });
        }
        if self.cosigned.len() < k {
            return Err(TlogError::NotEnoughCosignatures {
                need: k,
                have: self.cosigned.keys().cloned().collect(),
            });
        }
        Ok(())
    }

    /// Adds verified signature lines (a witness's answer) to this checkpoint. Every line must be
    /// a valid cosignature from one of `witnesses`.
    pub fn add_cosignatures(&mut self, lines: &[u8], witnesses: &[NoteKey]) -> Result<(), TlogError> {
        let mut combined = self.note.text().to_vec();
        combined.push(b'\n');
        combined.extend_from_slice(lines);
        let answer = Note::from_bytes(&combined)
            .map_err(|e| TlogError::Malformed(format!("cosignature lines: {e}")))?;
        let (verified, unknown) = answer
            .verify(&verifiers(witnesses.iter()))
            .map_err(|e| TlogError::Signature(format!("cosignature: {e}")))?;
        if !unknown.is_empty() {
            return Err(TlogError::Signature("a cosignature from a witness not asked".into()));
        }
        let mut sigs = self.note_sigs();
        for sig in verified {
            let time = cosignature_time(&sig)?;
            self.cosigned.insert(sig.name().to_owned(), time);
            sigs.retain(|s| (s.name(), s.id()) != (sig.name(), sig.id()));
            sigs.push(sig);
        }
        self.note = Note::new(self.note.text(), &sigs)
            .map_err(|e| TlogError::Malformed(format!("checkpoint note: {e}")))?;
        Ok(())
    }

    fn note_sigs(&self) -> Vec<signed_note::Signature> {
        // The note keeps its signatures private; they round-trip through its encoding.
        let bytes = self.note.to_bytes();
        let sig_part = &bytes[self.note.text().len() + 1..];
        sig_part
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .filter_map(|line| signed_note::Signature::from_bytes(line).ok())
            .collect()
    }
}

/// Opens a checkpoint note: the log's signature must verify under `log`, the origin must be
/// the log key's name, and every cosignature from a key in `witnesses` must verify.
pub fn open_checkpoint(
    bytes: &[u8],
    log: &NoteKey,
    witnesses: &[NoteKey],
) -> Result<OpenedCheckpoint, TlogError> {
    if log.kind() != KeyKind::Checkpoint {
        return Err(TlogError::KeyKind("the log key must be a checkpoint (0x01) key"));
    }
    if let Some(w) = witnesses.iter().find(|w| w.kind() != KeyKind::Cosignature) {
        return Err(TlogError::VerifierKey(format!("witness key {} is not a cosignature key", w.name())));
    }
    let note = Note::from_bytes(bytes).map_err(|e| TlogError::Malformed(format!("checkpoint note: {e}")))?;
    let (verified, _unknown) =
        note.verify(&verifiers(std::iter::once(log).chain(witnesses))).map_err(|e| {
            TlogError::Signature(format!("checkpoint not signed by the log key {}: {e}", log.name()))
        })?;
    if !verified.iter().any(|s| s.name() == log.name() && s.id() == log.id()) {
        return Err(TlogError::Signature(format!("checkpoint not signed by the log key {}", log.name())));
    }
    let checkpoint =
        Checkpoint::from_bytes(note.text()).map_err(|_| TlogError::Malformed("checkpoint body".into()))?;
    if checkpoint.origin() != log.name() {
        return Err(TlogError::Origin {
            expected: log.name().to_owned(),
            found: checkpoint.origin().to_owned(),
        });
    }
    if !checkpoint.extension().is_empty() {
        return Err(TlogError::Malformed("checkpoint extension lines (this log writes none)".into()));
    }
    let mut cosigned = BTreeMap::new();
    for sig in verified.iter().filter(|s| s.name() != log.name() || s.id() != log.id()) {
        cosigned.insert(sig.name().to_owned(), cosignature_time(sig)?);
    }
    Ok(OpenedCheckpoint { checkpoint, note, cosigned })
}

fn cosignature_time(sig: &signed_note::Signature) -> Result<u64, TlogError> {
    split_cosignature(sig.signature())
        .map(|(t, _)| t)
        .ok_or_else(|| TlogError::Malformed(format!("cosignature from {} is not timestamped", sig.name())))
}

fn verifiers<'a>(keys: impl Iterator<Item = &'a NoteKey>) -> VerifierList {
    VerifierList::new(keys.map(|k| Box::new(LineVerifier(k.clone())) as Box<dyn Verifier>).collect())
}
