//! The sealed-model format (DESIGN.md §5, docs/sealed-format.md): a versioned CBOR header with
//! optional slots (a publisher's signature bundle, the owner's guard manifest) and a
//! STREAM-encrypted body of AES-256-GCM chunks, the header's hash as associated data of every
//! chunk. The model identity is the hash of a manifest of shard digests (`identity`), so sealing
//! and opening run a worker per core. Opening authenticates each chunk, the chunk order, the end
//! of the stream and the identity, and returns the plaintext only in a zeroize-on-drop buffer
//! (`Plaintext`). Version 1 blobs still open.
#![forbid(unsafe_code)]

pub mod error;
pub mod header;
pub mod identity;
pub mod keyfile;
pub mod plaintext;
pub mod source;
pub mod stream;
pub mod workers;

pub use error::SealError;
pub use header::{Format, Header};
pub use identity::ModelIdentity;
pub use keyfile::KeyFile;
pub use plaintext::Plaintext;
pub use source::{FileRange, Source};
pub use stream::{AwsLcGcm, ChunkCipher, DataKey, Opened, Output, RustCryptoGcm, SealParams, open, seal};
