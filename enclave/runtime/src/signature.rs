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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use nacre_sealed::{AwsLcGcm, DataKey, Output, SealParams};

    /// The bundles model-signing 1.1.1 made (attestation/signing/tests/fixtures, README there).
    fn bundle(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../attestation/signing/tests/fixtures/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    /// The fixture model, as make.py writes it: block i = SHA-256(SEED || i as u64 BE).
    fn model() -> Vec<u8> {
        let len = (5 << 20) / 2 + 7;
        let mut out = Vec::with_capacity(len + 32);
        for i in 0u64.. {
            if out.len() >= len {
                break;
            }
            out.extend_from_slice(&nacre_sealed::identity::sha256(
                &[&b"nacre-oms-fixture-v1"[..], &i.to_be_bytes()].concat(),
            ));
        }
        out.truncate(len);
        out
    }

    /// Seals `model` with the bundle in its slot at `shard_size`, and opens it.
    fn opened(model: &[u8], bundle: &[u8], shard_size: u64) -> Opened {
        let cipher = AwsLcGcm::new(&DataKey::generate().unwrap()).unwrap();
        let params = SealParams {
            shard_size,
            signature_bundle: Some(bundle.to_vec()),
            ..SealParams::new("k", 1, "m", "1")
        };
        let mut sealed = Vec::new();
        nacre_sealed::seal(model, Output::Memory(&mut sealed), &cipher, &params, 2, &|_| {}).unwrap();
        nacre_sealed::open(&sealed[..], &cipher, u64::MAX, 2).unwrap()
    }

    #[test]
    fn a_bundle_must_state_the_opened_model() {
        let model = model();
        let shards = bundle("shards-1mib.sig.json");
        let whole = bundle("whole-file.sig.json");
        // model-signing's API default: 1,000,000,000-byte shards, one shard here.
        let default = bundle("shards-default.sig.json");
        check_subject(&shards, &opened(&model, &shards, 1 << 20)).unwrap();
        check_subject(&whole, &opened(&model, &whole, 4 << 20)).unwrap();
        check_subject(&default, &opened(&model, &default, 1_000_000_000)).unwrap();

        // Sealed at another shard size than the bundle's.
        let e = check_subject(&shards, &opened(&model, &shards, 4 << 20)).unwrap_err();
        assert!(
            matches!(e, SignatureMismatch::ShardSize { signed: 1_048_576, sealed: Some(4_194_304) }),
            "{e}"
        );
        // Other weights under the same bundle (a key holder sealing something else): the shard
        // that differs is named; a whole-file bundle costs the SHA-256 and refuses too.
        let mut other = model.clone();
        other[(1 << 20) + 5] ^= 1;
        let e = check_subject(&shards, &opened(&other, &shards, 1 << 20)).unwrap_err();
        assert!(matches!(e, SignatureMismatch::Shard { shard: 1 }), "{e}");
        let e = check_subject(&whole, &opened(&other, &whole, 4 << 20)).unwrap_err();
        assert!(matches!(e, SignatureMismatch::WholeFile), "{e}");
        // One byte more: the length differs.
        let mut longer = model.clone();
        longer.push(0);
        let e = check_subject(&shards, &opened(&longer, &shards, 1 << 20)).unwrap_err();
        assert!(matches!(e, SignatureMismatch::Length { .. }), "{e}");
        // Not a bundle at all.
        let e = check_subject(b"{}", &opened(&model, &shards, 1 << 20)).unwrap_err();
        assert!(matches!(e, SignatureMismatch::Bundle(_)), "{e}");
    }
}
