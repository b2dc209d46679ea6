//! nacre-tlog: the key-release transparency log's formats and checks.
//!
//! - [`entry`]: what one leaf records (public fields only).
//! - [`tree`]: the RFC 6962 tree, proofs, C2SP tiles.
//! - [`checkpoint`]: signed checkpoints and their cosignatures.
//! - [`witness`]: the C2SP witness's checks and durable state.
//! - [`proof`]: the release proof a client requires.
//! - [`monitor`]: following the log and flagging what a correct service never logs.
//!
//! Formats are the C2SP ones (signed-note, tlog-checkpoint, tlog-tiles, tlog-cosignature v1,
//! tlog-witness), so any tool that speaks them can audit this log.

pub mod checkpoint;
pub mod cosign;
pub mod entry;
pub mod keys;
pub mod monitor;
pub mod proof;
pub mod tree;
pub mod witness;

pub use checkpoint::{OpenedCheckpoint, open_checkpoint, sign_checkpoint};
pub use entry::{Action, Entry};
pub use keys::{KeyKind, NoteKey, NoteSigner};
pub use proof::{LogRequirement, ReleaseProof, VerifiedRelease};
pub use tree::{Hash, MemoryTree};

#[cfg(test)]
mod tests;

/// Every way a log operation or check fails.
#[derive(Debug, thiserror::Error)]
pub enum TlogError {
    #[error("invalid note key name {0:?} (empty, or with a space or '+')")]
    KeyName(String),
    #[error("invalid verifier key: {0}")]
    VerifierKey(String),
    #[error("wrong key kind: {0}")]
    KeyKind(&'static str),
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("signature: {0}")]
    Signature(String),
    #[error("checkpoint origin {found:?}, expected {expected:?}")]
    Origin { expected: String, found: String },
    #[error("{} witness cosignatures needed, {} verified ({})", need, have.len(), have.join(", "))]
    NotEnoughCosignatures { need: usize, have: Vec<String> },
    #[error("cosignature by {witness} dated {time}, in the future")]
    CosignatureFromFuture { witness: String, time: u64 },
    #[error("the inclusion proof does not verify")]
    InclusionProof,
    #[error("the consistency proof does not verify")]
    ConsistencyProof,
    #[error("fork: two different trees of {size} leaves")]
    Fork { size: u64 },
    #[error("rollback: a tree of {new} leaves after one of {old}")]
    Rollback { old: u64, new: u64 },
    #[error("out of range: {0}")]
    Range(String),
    #[error("tree: {0}")]
    Tree(tlog_tiles::Error),
    #[error("invalid tile path {0:?}")]
    TilePath(String),
    #[error("entry: {0}")]
    Entry(String),
    #[error("the logged entry is a {0}, not a release")]
    NotARelease(&'static str),
    #[error("the logged release names release key {logged}, but the enclave attested {attested}")]
    ReleaseKeyMismatch { logged: String, attested: String },
    #[error("witness state: {0}")]
    WitnessState(String),
}
