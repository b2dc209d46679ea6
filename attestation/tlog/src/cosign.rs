//! Witness cosignatures (C2SP tlog-cosignature v1, Ed25519): a timestamped statement that, as
//! of that time, this is the largest consistent tree the witness has seen for the log.

use crate::TlogError;
use crate::keys::{KeyKind, NoteSigner};

/// The message a v1 cosignature signs: two header lines, then the checkpoint's note text
/// (its body with the final newline, without signature lines).
pub(crate) fn cosigned_message(time: u64, note_text: &[u8]) -> Vec<u8> {
    let mut msg = format!("cosignature/v1\ntime {time}\n").into_bytes();
    msg.extend_from_slice(note_text);
    msg
}

/// Cosigns a checkpoint's note text at `time` (POSIX seconds) and returns the note signature
/// line (`— <name> <base64>\n`).
pub fn cosign(signer: &NoteSigner, note_text: &[u8], time: u64) -> Result<Vec<u8>, TlogError> {
    if signer.public().kind() != KeyKind::Cosignature {
        return Err(TlogError::KeyKind("a cosignature needs a cosignature (0x04) key"));
    }
    if time > i64::MAX as u64 {
        return Err(TlogError::Malformed("cosignature time beyond 2^63 - 1".into()));
    }
    let mut sig = time.to_be_bytes().to_vec();
    sig.extend_from_slice(&signer.sign_raw(&cosigned_message(time, note_text)));
    signature_line(signer, sig)
}

pub(crate) fn signature_line(signer: &NoteSigner, sig: Vec<u8>) -> Result<Vec<u8>, TlogError> {
    let public = signer.public();
    let line = signed_note::Signature::new(public.name().to_owned(), public.id(), sig)
        .map_err(|e| TlogError::Malformed(format!("signature line: {e}")))?;
    Ok(line.to_bytes())
}
