//! The model identity (docs/sealed-format.md, "The model identity"): the SHA-256 of a canonical
//! manifest of shard digests and the model's length. Shards hash independently, so computing it
//! scales with the cores; the same shard digests give an OpenSSF Model Signing shard manifest's
//! subject digest when the shard sizes agree.

use aws_lc_rs::digest;

use crate::error::SealError;
use crate::header::{MAX_SHARD, MIN_SHARD};
use crate::source::Source;

/// Domain separation for the manifest, so that no other SHA-256 input can be mistaken for it.
pub const MANIFEST_DOMAIN: &[u8; 22] = b"NACRE-MODEL-IDENTITY-2";

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    finish(digest::digest(&digest::SHA256, bytes))
}

pub(crate) fn finish(d: digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A model's identity with what it was computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIdentity {
    pub len: u64,
    pub shard_size: u64,
    /// SHA-256 of each shard, in order (none for an empty model).
    pub shard_digests: Vec<[u8; 32]>,
}

impl ModelIdentity {
    /// The canonical manifest: `MANIFEST_DOMAIN || len (u64 BE) || shard_size (u64 BE) ||
    /// digest_0 || … || digest_{n−1}`. Every field has a fixed length, so it parses one way.
    pub fn manifest(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(MANIFEST_DOMAIN.len() + 16 + 32 * self.shard_digests.len());
        m.extend_from_slice(MANIFEST_DOMAIN);
        m.extend_from_slice(&self.len.to_be_bytes());
        m.extend_from_slice(&self.shard_size.to_be_bytes());
        for d in &self.shard_digests {
            m.extend_from_slice(d);
        }
        m
    }

    /// The identity: SHA-256 of the manifest.
    pub fn identity(&self) -> [u8; 32] {
        sha256(&self.manifest())
    }

    /// The subject digest an OpenSSF Model Signing bundle of this one file, sharded at the same
    /// size, states: SHA-256 over the shard digests concatenated in order.
    pub fn oms_subject_digest(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for d in &self.shard_digests {
            ctx.update(d);
        }
        finish(ctx.finish())
    }

    /// Computes the identity of `src` on `workers` threads (`nacre model digest`).
    pub fn compute<S: Source + ?Sized>(src: &S, shard_size: u64, workers: usize) -> Result<Self, SealError> {
        if !(MIN_SHARD..=MAX_SHARD).contains(&shard_size) {
            return Err(SealError::Header(format!("shard size {shard_size} is outside 1 MiB..4 GiB")));
        }
        let len = src.len();
        let layout = crate::header::Layout { len, shard: shard_size, chunk: 1 << 20 };
        let digests = DigestSlots::new(layout.shard_count());
        let items: Vec<u64> = (0..layout.shard_count()).collect();
        crate::workers::run(
            items,
            workers,
            || vec![0u8; 1 << 20],
            |buf, j| {
                let range = layout.shard_range(j);
                let mut ctx = digest::Context::new(&digest::SHA256);
                if let Some(all) = src.as_slice() {
                    ctx.update(&all[range.start as usize..range.end as usize]);
                } else {
                    let mut at = range.start;
                    while at < range.end {
                        let n = (range.end - at).min(buf.len() as u64) as usize;
                        src.read_exact_at(&mut buf[..n], at).map_err(SealError::Io)?;
                        ctx.update(&buf[..n]);
                        at += n as u64;
                    }
                }
                digests.set(j, finish(ctx.finish()));
                Ok(())
            },
        )?;
        Ok(ModelIdentity { len, shard_size, shard_digests: digests.into_vec() })
    }
}

/// One digest per shard, filled in by whichever worker hashed it.
pub(crate) struct DigestSlots(std::sync::Mutex<Vec<[u8; 32]>>);

impl DigestSlots {
    pub(crate) fn new(n: u64) -> Self {
        DigestSlots(std::sync::Mutex::new(vec![[0; 32]; n as usize]))
    }

    pub(crate) fn set(&self, j: u64, d: [u8; 32]) {
        if let Ok(mut v) = self.0.lock() {
            v[j as usize] = d;
        }
    }

    pub(crate) fn into_vec(self) -> Vec<[u8; 32]> {
        self.0.into_inner().unwrap_or_default()
    }
}
