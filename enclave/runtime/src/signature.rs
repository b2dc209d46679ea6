//! The publisher's signature bundle in a sealed header (OpenSSF Model Signing): the enclave
//! checks that it states the very model it opened. The signer was checked by the attestation
//! service at registration, against the key's release policy; the bundle itself is
//! authenticated here as part of the sealed header. What is left is the link between the
//! bundle's manifest and the plaintext, which only the enclave can see:
//! - a shard manifest must have the header's shard size and length, and its shard digests must
//!   be the ones recomputed while opening (free: they are the identity's);
//! - a whole-file manifest costs one sequential SHA-256 of the plaintext.

use nacre_sealed::Opened;
use nacre_signing::Manifest;

/// Why the bundle does not state the opened model.
#[derive(Debug, thiserror::Error)]
pub enum SignatureMismatch {
    #[error("publisher signature bundle: {0}")]
    Bundle(#[from] nacre_signing::SignatureError),
    #[error("the publisher signed shards of {signed} bytes; the model was sealed with shards of {sealed:?}")]
    ShardSize { signed: u64, sealed: Option<u64> },
    #[error("the publisher signed {signed} bytes; the model has {opened}")]
    Length { signed: u64, opened: u64 },
    #[error("shard {shard} differs from the one the publisher signed")]
    Shard { shard: usize },
    #[error("the model's SHA-256 differs from the one the publisher signed")]
    WholeFile,
    #[error("the bundle's manifest is of a kind this enclave cannot check")]
    UnknownManifest,
}

pub fn check_subject(bundle: &[u8], opened: &Opened) -> Result<(), SignatureMismatch> {
    match nacre_signing::signed_manifest(bundle)? {
        Manifest::Shards { shard_size, total_len, digests, .. } => {
            if opened.header.shard_size != Some(shard_size) {
                return Err(SignatureMismatch::ShardSize {
                    signed: shard_size,
                    sealed: opened.header.shard_size,
                });
            }
            if total_len != opened.header.plaintext_len {
                return Err(SignatureMismatch::Length {
                    signed: total_len,
                    opened: opened.header.plaintext_len,
                });
            }
            match digests.iter().zip(&opened.shard_digests).position(|(a, b)| a != b) {
                Some(shard) => Err(SignatureMismatch::Shard { shard }),
                None if digests.len() != opened.shard_digests.len() => {
                    Err(SignatureMismatch::Shard { shard: digests.len().min(opened.shard_digests.len()) })
                }
                None => Ok(()),
            }
        }
        Manifest::WholeFile { sha256, .. } => {
            if nacre_sealed::identity::sha256(opened.plaintext.as_slice()) == sha256 {
                Ok(())
            } else {
                Err(SignatureMismatch::WholeFile)
            }
        }
        // A manifest kind this build does not know cannot be checked: refuse.
        _ => Err(SignatureMismatch::UnknownManifest),
    }
}
