//! What a verified bundle says was signed: one file, whole or as shards.

use aws_lc_rs::digest;

use crate::error::{ModelMismatch, SignatureError};

/// The signed digests of one model file.
///
/// `name` is the statement's subject name (model-signing takes it from the signed path's last
/// component; informative only, renaming a model does not invalidate its signature). `path` is
/// the resource's path relative to what was signed: `"."` when the file itself was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Manifest {
    /// Method "files": one SHA-256 over the whole file, the model-signing CLI's default. Checking
    /// it costs one sequential pass over the model.
    WholeFile { name: String, path: String, sha256: [u8; 32] },
    /// Method "shards": SHA-256 of each `shard_size`-byte shard (the last may be shorter), in
    /// order from offset 0, so that the model hashes in parallel.
    Shards { name: String, path: String, shard_size: u64, total_len: u64, digests: Vec<[u8; 32]> },
}

impl Manifest {
    /// The statement's subject digest: SHA-256 over the resource digests, concatenated raw in
    /// the manifest's order. `verify` has checked that the signed subject equals this.
    pub fn subject_digest(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        match self {
            Self::WholeFile { sha256, .. } => ctx.update(sha256),
            Self::Shards { digests, .. } => digests.iter().for_each(|d| ctx.update(d)),
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The subject name the publisher signed.
    pub fn name(&self) -> &str {
        match self {
            Self::WholeFile { name, .. } | Self::Shards { name, .. } => name,
        }
    }

    /// Recomputes the digests over `model` and compares them with the signed ones: the check a
    /// holder of the plaintext makes. Sequential; a caller that hashes shards in parallel
    /// compares its own digests with `Manifest::Shards::digests` instead.
    pub fn check_model(&self, model: &[u8]) -> Result<(), SignatureError> {
        let mismatch = |m| Err(SignatureError::ModelMismatch(m));
        match self {
            Self::WholeFile { sha256, .. } => {
                if digest::digest(&digest::SHA256, model).as_ref() != sha256 {
                    return mismatch(ModelMismatch::WholeFileDigest);
                }
            }
            Self::Shards { shard_size, total_len, digests, .. } => {
                let found = model.len() as u64;
                if found != *total_len {
                    return mismatch(ModelMismatch::Length { expected: *total_len, found });
                }
                // shard_size ≤ total_len ≤ usize::MAX here, so the conversion is exact.
                let size = usize::try_from(*shard_size).unwrap_or(usize::MAX);
                for (index, (shard, signed)) in model.chunks(size).zip(digests).enumerate() {
                    if digest::digest(&digest::SHA256, shard).as_ref() != signed {
                        return mismatch(ModelMismatch::ShardDigest { index });
                    }
                }
            }
        }
        Ok(())
    }
}
